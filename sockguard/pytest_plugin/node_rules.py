"""Which policy the session, a test or a higher-scope fixture runs under, from the options and markers.

Kept apart from the stack that puts a policy in force (sockguard/pytest_plugin/stack.py): this is the decision of
*what* applies to a node, read from its markers and fixtures in pytest-socket's order and then sockguard's own,
with no side effect but the once-per-session resolution of ``allow_hosts`` names.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sockguard.pytest_plugin.compat import allowed, creation_allowed, disabled, parse_hosts
from sockguard.pytest_plugin.options import _apply_marker, _BadInput, _Compat, _Native
from sockguard.pytest_plugin.scopes import DEFAULT, OFF, Rules


def _compat_base(session: Rules | None) -> Rules | None:
    """The session's policy without its pytest-socket parts (a test's own markers replace those)."""
    return None if session is None else dataclasses.replace(session, block_create=False, hosts_shown=None)


class NodeRules:
    """The session's policy and each node's, for one pytest config."""

    def __init__(self, native: _Native, compat: _Compat | None) -> None:
        self.native = native
        self.compat = compat
        self.force_off = compat is not None and compat.force_enable
        # (before session(): --allow-hosts with a name resolves it through this cache; issue 13's crash)
        self._resolved_hosts: dict[str, tuple[str, ...]] = {}
        self.session = None if self.force_off else self._session()

    def _session(self) -> Rules | None:
        compat, native = self.compat, self.native
        base: Rules | None = None
        if compat is not None:
            unix = compat.allow_unix_socket
            base = allowed(None, self.hosts(compat.allow_hosts) if compat.allow_hosts else None, unix)
            if compat.disable and not compat.allow_hosts:
                base = disabled(base, unix)
        if native.enabled and base is None:
            base = DEFAULT
        if base is None:
            return None
        return base.refined(
            allow=native.allow,
            deny=native.deny,
            mode=native.mode,
            allow_loopback=native.allow_loopback,
            allow_unix=native.allow_unix,
        )

    def hosts(self, value: object) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """A pytest-socket host list, parsed as pytest-socket parses it (names resolved once per session)."""
        return parse_hosts(value, self._resolve)

    def _resolve(self, name: str) -> tuple[str, ...]:
        """The addresses of an allow_hosts name, resolved once per session like pytest-socket does."""
        found = self._resolved_hosts.get(name)
        if found is None:
            import socket

            from sockguard import guard

            try:
                with guard.applied(guard.off()), creation_allowed():
                    infos = socket.getaddrinfo(name, None)
                found = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
            except OSError:
                found = ()
            self._resolved_hosts[name] = found
        return found

    def for_node(self, node: Any, names: tuple[str, ...]) -> Rules | None:
        """The policy for a test (or a fixture's scope node) requesting ``names``; None when sockguard leaves
        it alone. pytest-socket's order: --force-enable-socket, enable_socket / socket_enabled, then
        disable_socket / socket_disabled, then the allow_hosts marker over --allow-hosts, then --disable-socket
        when no host list is given (the fixtures' bodies apply again when they run: see
        sockguard/pytest_plugin/socket_changes.py); then @pytest.mark.sockguard, module to function."""
        rules = self.session
        where = node.nodeid or "the session"
        compat = self.compat
        if compat is not None:
            unix = compat.allow_unix_socket
            if self.force_off or node.get_closest_marker("enable_socket") is not None or "socket_enabled" in names:
                rules = None if self.force_off else OFF
            elif node.get_closest_marker("disable_socket") is not None or "socket_disabled" in names:
                rules = disabled(_compat_base(self.session), unix)
            elif (mark := node.get_closest_marker("allow_hosts")) is not None:
                if not mark.args:
                    raise _BadInput(f"sockguard: {where}: @pytest.mark.allow_hosts needs a list of hosts")
                hosts = mark.args[0]
                parsed = self.hosts(hosts)  # None: not a list or a string, which pytest-socket ignores
                rules = OFF if parsed is None else allowed(_compat_base(self.session), parsed, unix)
                if compat.disable and not hosts:
                    rules = disabled(rules, unix)
        elif self.force_off:
            return None
        marks = list(node.iter_markers("sockguard"))
        if marks or "sockguard" in names:
            rules = DEFAULT if rules is None else rules
            for mark in reversed(marks):  # farthest (module) first, so the closest wins
                rules = _apply_marker(rules, mark, where)
        return rules

    def swallowed_for(self, node: Any, names: tuple[str, ...]) -> str:
        """What a block the code under test swallowed does to a passing test: "fail" where sockguard itself was
        asked for (option, marker, fixture), "warn" under pytest-socket's options alone (as pytest-socket would)."""
        if self.native.swallowed is not None:
            return self.native.swallowed
        native = self.native.enabled or "sockguard" in names or node.get_closest_marker("sockguard") is not None
        return "fail" if native else "warn"
