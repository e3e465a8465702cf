"""pytest plugin: one sockguard allowlist over the whole test run.

Inactive unless enabled: ``--sockguard`` (or ``--sockguard-mode``), ini ``sockguard = true``,
``[tool.sockguard.pytest] enable = true``, a pytest-socket option, or a sockguard / pytest-socket marker or
fixture on a test. Then collection, fixture set-up and teardown of every scope, the tests themselves and the
Python processes they start run under an explicit policy built with the runtime engine. Every blocked attempt is
recorded (even when the code under test swallows the exception): the test's report names the destination, the
call site and the rule to add, and the session ends with a summary (optionally a JSON file).

The policy in force is a stack of scopes (session, test phase, higher-scope fixture set-up/teardown, ...); the
top one is installed with ``guard.install`` and mirrored into ``SOCKGUARD_*`` for child processes. See
docs/pytest-plugin.md.
"""

from __future__ import annotations

import atexit
import dataclasses
import fnmatch
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

__all__ = ["Blocked", "Controller", "Rules", "SockguardWarning"]

MODES = ("enforce", "monitor", "off")
SWALLOWED = ("fail", "warn")
_MARK_KEYS = frozenset(("allow", "deny", "mode", "allow_loopback", "allow_unix"))
_TABLE_KEYS = frozenset(("enable", "mode", "allow", "deny", "allow_loopback", "allow_unix", "report", "swallowed"))
_ENV_KEYS = (
    "PYTHONPATH",
    "SOCKGUARD_CONFIG",
    "SOCKGUARD_MODE",
    "SOCKGUARD_ALLOW",
    "SOCKGUARD_DENY",
    "SOCKGUARD_ALLOW_LOOPBACK",
    "SOCKGUARD_ALLOW_UNIX",
    "SOCKGUARD_LOG",
    "SOCKGUARD_RESOLVER",
)
_MAX_RECORDS = 10000
_active_configs = 0  # pytest configs alive in this process (pytester runs nest them)


class SockguardWarning(pytest.PytestWarning):
    """A blocked attempt was swallowed by the code under test (``--sockguard-swallowed=warn``)."""


class _BadInput(ValueError):
    """A rule, marker or option value sockguard cannot use; the message names it."""


# --- policies -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rules:
    """One policy for a stretch of the run. Hashable: compiled guard states are cached per Rules."""

    mode: str = "enforce"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    allow_loopback: bool = True
    allow_unix: bool = True

    def refined(
        self,
        *,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        mode: str | None = None,
        allow_loopback: bool | None = None,
        allow_unix: bool | None = None,
    ) -> Rules:
        """These rules plus more allow/deny rules, with the scalars that are given replaced."""
        return Rules(
            self.mode if mode is None else mode,
            self.allow + tuple(r for r in dict.fromkeys(allow) if r not in self.allow),
            self.deny + tuple(r for r in dict.fromkeys(deny) if r not in self.deny),
            self.allow_loopback if allow_loopback is None else allow_loopback,
            self.allow_unix if allow_unix is None else allow_unix,
        )

    def settings(self) -> Any:
        from sockguard.config import Settings

        return Settings(
            mode=self.mode,
            allow=list(self.allow),
            deny=list(self.deny),
            allow_loopback=self.allow_loopback,
            allow_unix=self.allow_unix,
            source="pytest plugin",
        )

    def describe(self) -> str:
        if self.mode == "off":
            return "off"
        return (
            f"{self.mode}; allow: {', '.join(self.allow) or '-'}; deny: {', '.join(self.deny) or '-'}; "
            f"loopback {'allowed' if self.allow_loopback else 'blocked'}; "
            f"AF_UNIX {'allowed' if self.allow_unix else 'blocked'}"
        )


DEFAULT = Rules()
OFF = Rules(mode="off")


def _rule_list(value: object, where: str) -> tuple[str, ...]:
    """Rules from a string (comma/space separated) or a list of strings, each parsed now."""
    from sockguard.rules import RuleError, parse_rule, split_rules

    if isinstance(value, str):
        items = split_rules(value)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = [part for v in value for part in split_rules(v)]
    else:
        raise _BadInput(f"sockguard: {where} must be a rule string or a list of rule strings, got {value!r}")
    for item in items:
        try:
            parse_rule(item)
        except RuleError as exc:
            raise _BadInput(f"sockguard: {where}: {exc}") from None
    return tuple(items)


def _mode(value: object, where: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in MODES:
        raise _BadInput(f"sockguard: {where} must be one of {', '.join(MODES)}, got {value!r}")
    return value.strip().lower()


def _flag(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise _BadInput(f"sockguard: {where} must be true or false, got {value!r}")


def _swallowed(value: object, where: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in SWALLOWED:
        raise _BadInput(f"sockguard: {where} must be one of {', '.join(SWALLOWED)}, got {value!r}")
    return value.strip().lower()


def _apply_marker(rules: Rules, mark: pytest.Mark, where: str) -> Rules:
    unknown = sorted(set(mark.kwargs) - _MARK_KEYS)
    if unknown:
        raise _BadInput(
            f"sockguard: {where}: @pytest.mark.sockguard got unknown argument {unknown[0]!r} "
            f"(known: {', '.join(sorted(_MARK_KEYS))})"
        )
    what = f"{where}: @pytest.mark.sockguard"
    allow = _rule_list(list(mark.args), f"{what} positional rules") if mark.args else ()
    if "allow" in mark.kwargs:
        allow += _rule_list(mark.kwargs["allow"], f"{what}(allow=...)")
    deny = _rule_list(mark.kwargs["deny"], f"{what}(deny=...)") if "deny" in mark.kwargs else ()
    mode = _mode(mark.kwargs["mode"], f"{what}(mode=...)") if "mode" in mark.kwargs else None
    flags = {
        key: _flag(mark.kwargs[key], f"{what}({key}=...)")
        for key in ("allow_loopback", "allow_unix")
        if key in mark.kwargs
    }
    return rules.refined(allow=allow, deny=deny, mode=mode, **flags)


# --- options ----------------------------------------------------------------------------------


@dataclasses.dataclass
class _Native:
    """sockguard's own settings, merged from [tool.sockguard.pytest] < ini < command line."""

    enabled: bool = False
    mode: str | None = None
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    allow_loopback: bool | None = None
    allow_unix: bool | None = None
    report: str | None = None
    swallowed: str | None = None


@dataclasses.dataclass
class _Compat:
    """pytest-socket's options, when sockguard is the one handling them."""

    disable: bool = False
    force_enable: bool = False
    allow_hosts: str | None = None
    allow_unix_socket: bool = False

    def used(self) -> list[str]:
        flags = ["--disable-socket"] if self.disable else []
        flags += ["--force-enable-socket"] if self.force_enable else []
        flags += [f"--allow-hosts={self.allow_hosts}"] if self.allow_hosts is not None else []
        flags += ["--allow-unix-socket"] if self.allow_unix_socket else []
        return flags


def _pytest_socket_present(pluginmanager: pytest.PytestPluginManager) -> bool:
    """Whether pytest-socket will own its option, marker and fixture names in this run."""
    if pluginmanager.is_blocked("socket") or pluginmanager.is_blocked("pytest_socket"):
        return False
    if pluginmanager.has_plugin("socket") or pluginmanager.has_plugin("pytest_socket"):
        return True
    import importlib.util

    try:
        return importlib.util.find_spec("pytest_socket") is not None
    except (ImportError, ValueError):
        return False


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    group = parser.getgroup("sockguard", "sockguard (egress allowlist for the test run)")
    group.addoption("--sockguard", action="store_true", default=False, help="Guard the run with sockguard.")
    group.addoption(
        "--sockguard-allow",
        action="append",
        default=[],
        metavar="RULE",
        help="Allow a destination (runtime rule syntax: host, *.domain, host:port, IP, CIDR). Repeatable.",
    )
    group.addoption("--sockguard-deny", action="append", default=[], metavar="RULE", help="Deny a destination.")
    group.addoption(
        "--sockguard-mode", choices=MODES, default=None, help="enforce (default), monitor (report only) or off."
    )
    group.addoption(
        "--sockguard-no-loopback", action="store_true", default=False, help="Block loopback (allowed by default)."
    )
    group.addoption("--sockguard-no-unix", action="store_true", default=False, help="Block AF_UNIX sockets.")
    group.addoption("--sockguard-report", metavar="PATH", default=None, help="Write a JSON report of blocked attempts.")
    group.addoption(
        "--sockguard-swallowed",
        choices=SWALLOWED,
        default=None,
        help="A block the code under test swallowed: fail the test (default with --sockguard) or warn.",
    )
    parser.addini("sockguard", "Enable sockguard for the run.", type="bool", default=None)
    parser.addini("sockguard_allow", "sockguard allow rules, one per line.", type="linelist", default=[])
    parser.addini("sockguard_deny", "sockguard deny rules, one per line.", type="linelist", default=[])
    parser.addini("sockguard_mode", "sockguard mode: enforce, monitor or off.", default=None)
    parser.addini("sockguard_allow_loopback", "Allow loopback (default true).", type="bool", default=None)
    parser.addini("sockguard_allow_unix", "Allow AF_UNIX sockets (default true).", type="bool", default=None)
    parser.addini("sockguard_report", "Path of a JSON report of blocked attempts.", default=None)
    parser.addini("sockguard_swallowed", "fail or warn when a block was swallowed.", default=None)
    if _pytest_socket_present(pluginmanager):
        return
    socket_group = parser.getgroup("socket")
    socket_group.addoption(
        "--disable-socket", action="store_true", default=False, help="Block all network access (sockguard)."
    )
    socket_group.addoption(
        "--force-enable-socket",
        action="store_true",
        default=False,
        help="Allow all network access, overriding every other option and marker (sockguard).",
    )
    socket_group.addoption(
        "--allow-hosts",
        metavar="ALLOWED_HOSTS_CSV",
        default=None,
        help="Allow only these hosts, IPs or CIDR ranges (sockguard; any sockguard rule works).",
    )
    socket_group.addoption(
        "--allow-unix-socket",
        action="store_true",
        default=False,
        help="Allow AF_UNIX sockets under --disable-socket / --allow-hosts (sockguard).",
    )


def _read_table(config: pytest.Config) -> tuple[str, str, dict[str, Any]]:
    """``[tool.sockguard.pytest]`` (or ``[pytest]`` in sockguard.toml): where, its directory, the table."""
    from sockguard.config import config_path, find_config_file
    from sockguard.errors import ConfigError

    try:
        found = find_config_file(os.environ, str(config.rootpath))
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    if found is None or found[1].get("pytest") is None:
        return "", "", {}
    source, table = found
    path = config_path(source) or source
    where = f"{path} [tool.sockguard.pytest]" if source.endswith("[tool.sockguard]") else f"{path} [pytest]"
    section = table["pytest"]
    if not isinstance(section, dict):
        raise pytest.UsageError(f"sockguard: {where} must be a table")
    unknown = sorted(set(section) - _TABLE_KEYS)
    if unknown:
        raise pytest.UsageError(
            f"sockguard: {where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_TABLE_KEYS))})"
        )
    return where, os.path.dirname(os.path.abspath(path)), section


def _ini(config: pytest.Config, name: str) -> Any:
    try:
        return config.getini(name)
    except (ValueError, pytest.UsageError) as exc:
        raise _BadInput(f"sockguard: ini option {name}: {exc}") from None


def _native_options(config: pytest.Config) -> _Native:
    native = _Native()
    source, base, table = _read_table(config)
    if "enable" in table:
        native.enabled = _flag(table["enable"], f"{source} enable")
    if "mode" in table:
        native.mode = _mode(table["mode"], f"{source} mode")
    native.allow = _rule_list(table.get("allow", []), f"{source} allow")
    native.deny = _rule_list(table.get("deny", []), f"{source} deny")
    for key in ("allow_loopback", "allow_unix"):
        if key in table:
            setattr(native, key, _flag(table[key], f"{source} {key}"))
    if "report" in table:
        if not isinstance(table["report"], str):
            raise _BadInput(f"sockguard: {source} report must be a file path string")
        native.report = os.path.join(base, table["report"])
    if "swallowed" in table:
        native.swallowed = _swallowed(table["swallowed"], f"{source} swallowed")

    if _ini(config, "sockguard") is not None:
        native.enabled = bool(_ini(config, "sockguard"))
    if _ini(config, "sockguard_mode"):
        native.mode = _mode(_ini(config, "sockguard_mode"), "ini option sockguard_mode")
    native.allow += _rule_list(_ini(config, "sockguard_allow"), "ini option sockguard_allow")
    native.deny += _rule_list(_ini(config, "sockguard_deny"), "ini option sockguard_deny")
    for key in ("allow_loopback", "allow_unix"):
        value = _ini(config, f"sockguard_{key}")
        if value is not None:
            setattr(native, key, bool(value))
    if _ini(config, "sockguard_report"):
        native.report = os.path.join(str(config.rootpath), _ini(config, "sockguard_report"))
    if _ini(config, "sockguard_swallowed"):
        native.swallowed = _swallowed(_ini(config, "sockguard_swallowed"), "ini option sockguard_swallowed")

    if config.getoption("sockguard"):
        native.enabled = True
    if config.getoption("sockguard_mode"):
        native.mode = config.getoption("sockguard_mode")
        native.enabled = True
    native.allow += _rule_list(config.getoption("sockguard_allow"), "--sockguard-allow")
    native.deny += _rule_list(config.getoption("sockguard_deny"), "--sockguard-deny")
    if config.getoption("sockguard_no_loopback"):
        native.allow_loopback = False
    if config.getoption("sockguard_no_unix"):
        native.allow_unix = False
    if config.getoption("sockguard_report"):
        native.report = os.path.join(str(config.invocation_params.dir), config.getoption("sockguard_report"))
    if config.getoption("sockguard_swallowed"):
        native.swallowed = config.getoption("sockguard_swallowed")
    return native


# --- what the plugin records ---------------------------------------------------------------------


@dataclasses.dataclass
class Blocked:
    """One blocked (or, in monitor mode, would-block) attempt, and where in the run it happened."""

    nodeid: str  # the test (or collector) it is charged to; "" for the session
    when: str  # "setup" | "call" | "teardown" | "collect" | "session"
    where: str  # e.g. "call", "setup of fixture 'db' (session scope)"
    operation: str  # "connect" | "send" | "resolve"
    protocol: str
    host: str | None
    port: int | None
    address: str | None
    decision: str  # "block" | "would-block"
    reason: str
    rule: str | None
    explanation: str
    caller: str | None
    suggestion: str | None
    pid: int
    child: bool = False
    expected: bool = False
    count: int = 1
    checked: int = 0  # times a pytest.raises in the test caught it (or an exception chained from it)

    @property
    def destination(self) -> str:
        host = self.host if self.host is not None else self.address
        if host is None:
            return "?"
        text = f"[{host}]" if ":" in host and self.port is not None else host
        text = f"{text}:{self.port}" if self.port is not None else text
        if self.address and self.host and self.address != self.host:
            text += f" ({self.address})"
        return text

    @property
    def action(self) -> str:
        verb = {"connect": "connection to", "send": "datagram to", "resolve": "DNS lookup of"}
        return f"{verb.get(self.operation, self.operation)} {self.destination}"

    def advice(self) -> str:
        if self.reason == "denied":
            return f"it matches the deny rule {self.rule!r}; remove or narrow that rule to allow it"
        if self.reason == "unix-socket":
            return (
                "AF_UNIX is blocked here: drop --sockguard-no-unix / sockguard_allow_unix = false "
                "(pytest-socket style: --allow-unix-socket)"
            )
        if self.reason == "config-error":
            return "fix the sockguard configuration"
        if not self.suggestion:
            return "no allow rule can permit it"
        rule = self.suggestion
        return (
            f"to allow it, add the rule {rule!r}: --sockguard-allow={rule}, a line in the sockguard_allow ini "
            f"option, or @pytest.mark.sockguard(allow=[{rule!r}])"
        )

    def describe(self) -> str:
        head = "would block" if self.decision == "would-block" else "blocked"
        times = f" ({self.count} times)" if self.count > 1 else ""
        child = f" in child process {self.pid}" if self.child else ""
        return (
            f"{head} {self.action} ({self.protocol}){times}{child}: {self.explanation}\n"
            f"    during {self.where}, called from {self.caller or 'unknown code'}\n"
            f"    {self.advice()}"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _explain(reason: str, rule: str | None, detail: str | None) -> str:
    from sockguard.policy import Decision

    return Decision(False, reason, rule, detail).explain()


# --- the policy stack -----------------------------------------------------------------------------------


class _Scope:
    """One stretch of the run with its own policy; ``changes`` come from the ``sockguard`` fixture."""

    __slots__ = ("changes", "nodeid", "rules", "static", "swallowed", "when", "where")

    def __init__(self, rules: Rules, nodeid: str, when: str, where: str) -> None:
        self.rules = rules
        self.nodeid = nodeid
        self.when = when
        self.where = where
        self.changes: list[Callable[[Rules], Rules]] = []
        self.static: tuple[str, ...] = ()  # fixture names the test requested up front
        self.swallowed = "fail"

    def effective(self) -> Rules:
        rules = self.rules
        for change in self.changes:
            rules = change(rules)
        return rules


_ITEM_SCOPE = pytest.StashKey["_Scope | None"]()
_PLUGIN = pytest.StashKey["_Plugin"]()


class _Plugin:
    """Per-config state and hooks (registered from pytest_configure, so pytester runs stay separate)."""

    def __init__(self, config: pytest.Config, native: _Native, compat: _Compat | None, socket_present: bool) -> None:
        self.config = config
        self.native = native
        self.compat = compat
        self.socket_present = socket_present
        self.worker = hasattr(config, "workerinput")
        self.controller = not self.worker and getattr(config.option, "dist", "no") != "no"
        self.runs_tests = not self.controller
        self.force_off = compat is not None and compat.force_enable
        # (before _session_rules: --allow-hosts with a name resolves it through this cache; issue 13's crash)
        self._resolved_hosts: dict[str, tuple[str, ...]] = {}
        self.session_rules = None if self.force_off else self._session_rules()
        self.stack: list[_Scope] = []
        self.records: list[Blocked] = []
        self._index: dict[tuple[Any, ...], Blocked] = {}
        self.by_node: dict[str, list[Blocked]] = {}
        self.expecting: list[list[Blocked]] = []
        self._states: dict[Rules, Any] = {}
        self._installed: Any = None
        self._previous: Any = None
        self._saved_env: dict[str, str | None] | None = None
        self._tmpdir: str | None = None
        self._child_log: str | None = None
        self._child_offset = 0
        self._collecting: tuple[str, str, str] | None = None
        self._session_scope: _Scope | None = None
        self._env: dict[Rules, dict[str, str]] = {}
        self._env_current: dict[str, str] | None = None
        self._watching = False
        self._pythonpath: str | None = None

    # -- policies --

    def _session_rules(self) -> Rules | None:
        compat, native = self.compat, self.native
        base: Rules | None = None
        if compat is not None and compat.allow_hosts is not None:
            base = self._compat_rules(self._allow_hosts(compat.allow_hosts, "--allow-hosts"), None)
        elif compat is not None and compat.disable:
            base = self._compat_rules((), None)
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

    def _compat_rules(self, allow: tuple[str, ...], session: Rules | None) -> Rules:
        """pytest-socket's semantics: only ``allow`` (nothing under disable), no implicit loopback, AF_UNIX
        only with --allow-unix-socket. The session's mode and deny rules still apply."""
        mode = session.mode if session is not None and session.mode != "off" else "enforce"
        unix = self.compat is not None and self.compat.allow_unix_socket
        return Rules(mode, allow, session.deny if session is not None else (), False, unix)

    def _allow_hosts(self, value: object, where: str) -> tuple[str, ...]:
        """pytest-socket's allow_hosts as sockguard rules: each entry (IP, CIDR, name or any sockguard rule),
        plus the addresses a plain name resolves to (pytest-socket allows those too), plus ``localhost`` when
        a loopback address is listed (it resolves from /etc/hosts, never through DNS)."""
        from sockguard.addresses import is_loopback, parse_address

        if isinstance(value, str):
            entries = [e.strip() for e in value.split(",")]
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            entries = [e.strip() for e in value]
        else:
            raise _BadInput(f"sockguard: {where} must be a list of hosts or a comma-separated string, got {value!r}")
        entries = [e for e in entries if e]
        allow = list(_rule_list(entries, where))
        for entry in entries:
            address = parse_address(entry.strip("[]"))
            if address is not None:
                if is_loopback(address) and "localhost" not in allow:
                    allow.append("localhost")
            elif "/" not in entry and ":" not in entry and not entry.startswith("*."):
                allow.extend(ip for ip in self._resolve(entry) if ip not in allow)
        return tuple(allow)

    def _resolve(self, name: str) -> tuple[str, ...]:
        """The addresses of an allow_hosts name, resolved once per session like pytest-socket does."""
        found = self._resolved_hosts.get(name)
        if found is None:
            import socket

            from sockguard import guard

            try:
                with guard.applied(guard.off()):
                    infos = socket.getaddrinfo(name, None)
                found = tuple(dict.fromkeys(str(info[4][0]).partition("%")[0] for info in infos))
            except OSError:
                found = ()
            self._resolved_hosts[name] = found
        return found

    def rules_for(self, node: Any, names: tuple[str, ...]) -> Rules | None:
        """The policy for a test (or a fixture's scope node) requesting ``names``; None when sockguard leaves
        it alone. Precedence: --force-enable-socket > enable_socket / socket_enabled > disable_socket /
        socket_disabled > allow_hosts marker > session; then @pytest.mark.sockguard, module to function."""
        if self.force_off:
            return None
        rules = self.session_rules
        where = node.nodeid or "the session"
        if self.compat is not None:
            if node.get_closest_marker("enable_socket") is not None or "socket_enabled" in names:
                rules = OFF
            elif node.get_closest_marker("disable_socket") is not None or "socket_disabled" in names:
                rules = self._compat_rules((), self.session_rules)
            elif (mark := node.get_closest_marker("allow_hosts")) is not None:
                if not mark.args:
                    raise _BadInput(f"sockguard: {where}: @pytest.mark.allow_hosts needs a list of hosts")
                allow = self._allow_hosts(mark.args[0], f"{where}: @pytest.mark.allow_hosts")
                rules = self._compat_rules(allow, self.session_rules)
        marks = list(node.iter_markers("sockguard"))
        if marks or "sockguard" in names:
            rules = DEFAULT if rules is None else rules
            for mark in reversed(marks):  # farthest (module) first, so the closest wins
                rules = _apply_marker(rules, mark, where)
        return rules

    def _swallowed_for(self, node: Any, names: tuple[str, ...]) -> str:
        if self.native.swallowed is not None:
            return self.native.swallowed
        native = self.native.enabled or "sockguard" in names or node.get_closest_marker("sockguard") is not None
        return "fail" if native else "warn"

    # -- installing --

    def _state(self, rules: Rules) -> Any:
        state = self._states.get(rules)
        if state is None:
            from sockguard import guard

            settings = rules.settings()
            # Under pytest: no breaker (tests refuse and retry connections on purpose) and the system
            # resolver (docs/pytest-plugin.md); everything else is the runtime's own State.
            settings.breaker = {"enabled": False}
            holder: list[Any] = []

            def observe(event: dict[str, Any]) -> None:
                # Only decisions that refused something: alerts, resolver errors and
                # unguarded-child warnings are reported by the guard itself.
                if event.get("event") == "decision" and event.get("decision") in ("block", "would-block"):
                    self.record(event, holder[0] if holder else None)

            state = guard.state_from_settings(settings, observer=observe)
            holder.append(state)
            self._states[rules] = state
        return state

    def push(self, scope: _Scope) -> None:
        if not self._watching:
            self._watching = True
            _watch_pytest_raises(self, True)
        self.stack.append(scope)
        self._apply()

    def pop(self, scope: _Scope) -> None:
        self._read_children()
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is scope:
                del self.stack[i]
                break
        self._apply()

    def _apply(self) -> None:
        from sockguard import guard

        if not self.stack:
            if self._installed is not None:
                self._restore_env()
                guard.restore(self._previous)
                self._installed = self._previous = None
            return
        rules = self.stack[-1].effective()
        state = self._state(rules)
        if state is not self._installed:
            previous = guard.install(state)
            if self._installed is None:
                self._previous = previous
            self._installed = state
        self._set_env(rules)

    def current_rules(self) -> Rules | None:
        return self.stack[-1].effective() if self.stack else None

    # -- child processes --

    def _set_env(self, rules: Rules) -> None:
        from sockguard.paths import sitecustomize_dir

        if self._saved_env is None:
            self._saved_env = {key: os.environ.get(key) for key in _ENV_KEYS}
            os.environ.pop("SOCKGUARD_RESOLVER", None)  # children use the system resolver, like this process
            if self._tmpdir is None:
                self._tmpdir = tempfile.mkdtemp(prefix="sockguard-pytest-")
                self._child_log = os.path.join(self._tmpdir, "children.jsonl")
                with open(os.path.join(self._tmpdir, "empty.toml"), "w"):
                    pass
            try:
                site = sitecustomize_dir()
            except FileNotFoundError as exc:
                warnings.warn(SockguardWarning(f"{exc}: child processes are NOT guarded"), stacklevel=1)
            else:
                rest = [p for p in (self._saved_env["PYTHONPATH"] or "").split(os.pathsep) if p and p != site]
                self._pythonpath = os.pathsep.join([site, *rest])
        values = self._env.get(rules)
        if values is None:
            assert self._tmpdir is not None and self._child_log is not None
            values = self._env[rules] = rules.settings().to_env()
            values["SOCKGUARD_CONFIG"] = os.path.join(self._tmpdir, "empty.toml")
            values["SOCKGUARD_LOG"] = self._child_log
            if self._pythonpath is not None:
                values["PYTHONPATH"] = self._pythonpath
        if values is self._env_current:
            return
        self._env_current = values
        for key, value in values.items():
            if os.environ.get(key) != value:
                os.environ[key] = value

    def _restore_env(self) -> None:
        self._env_current = None
        if self._saved_env is None:
            return
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            elif os.environ.get(key) != value:
                os.environ[key] = value
        self._saved_env = None

    def _read_children(self) -> None:
        """Charge the blocks child processes logged since the last read to the scope now ending."""
        path = self._child_log
        if path is None:
            return
        try:
            if os.path.getsize(path) <= self._child_offset:
                return
            with open(path, "rb") as f:
                f.seek(self._child_offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self._child_offset += end
        for line in data[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("decision") in ("block", "would-block"):
                self.record(event, self._installed, child=True)

    # -- recording --

    def _context(self) -> tuple[str, str, str]:
        if self._collecting is not None:
            return self._collecting
        if self.stack:
            top = self.stack[-1]
            return top.nodeid, top.when, top.where
        return "", "session", "session"

    def record(self, event: dict[str, Any], state: Any, *, child: bool = False) -> None:
        op, address = event.get("op"), event.get("address")
        if op == "resolve" and address is not None:
            return  # an answer dropped from a lookup, not an attempt (the lookup raises if none is left)
        nodeid, when, where = self._context()
        expected = bool(self.expecting)
        key: tuple[Any, ...] = (nodeid, when, where, op, event.get("host"), event.get("port"), address)
        key += (event.get("decision"), event.get("caller"), child, expected)
        found = self._index.get(key)
        if found is not None:
            found.count += 1
            return
        if len(self.records) >= _MAX_RECORDS:
            return
        record = Blocked(
            nodeid=nodeid,
            when=when,
            where=where,
            operation=str(op),
            protocol=str(event.get("proto")),
            host=event.get("host"),
            port=event.get("port"),
            address=address,
            decision=str(event.get("decision")),
            reason=str(event.get("reason")),
            rule=event.get("rule"),
            explanation=_explain(str(event.get("reason")), event.get("rule"), event.get("detail")),
            caller=event.get("caller"),
            suggestion=_suggest(state, event),
            pid=int(event.get("pid") or os.getpid()),
            child=child,
            expected=expected,
        )
        self._index[key] = record
        self.records.append(record)
        self.by_node.setdefault(nodeid, []).append(record)
        for found_list in self.expecting:
            found_list.append(record)

    def caught(self, exc: BaseException) -> None:
        """``pytest.raises`` in the test caught ``exc``: the blocks in its cause/context chain were expected."""
        from sockguard.errors import EgressBlocked

        nodeid, when, _ = self._context()
        seen: set[int] = set()
        todo: list[BaseException | None] = [exc]
        while todo:
            current = todo.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            if isinstance(current, EgressBlocked):
                for record in self.by_node.get(nodeid, ()):
                    if (
                        record.when == when
                        and record.checked < record.count
                        and (
                            record.operation,
                            record.host,
                            record.port,
                            record.address,
                        )
                        == (current.operation, current.host, current.port, current.address)
                    ):
                        record.checked += 1
                        break
            todo += [current.__cause__, current.__context__, *getattr(current, "exceptions", ())]

    # -- hooks: session --

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        lines = []
        if self.force_off:
            lines.append("sockguard: off (--force-enable-socket)")
        elif self.session_rules is not None:
            used = self.compat.used() if self.compat is not None else []
            extra = f"; pytest-socket options: {' '.join(used)}" if used else ""
            lines.append(f"sockguard: {self.session_rules.describe()}{extra}")
        if self.socket_present and (self.native.enabled or _socket_options_used(config)):
            lines.append(
                "sockguard: pytest-socket is installed, so --disable-socket, --allow-hosts, --allow-unix-socket, "
                "--force-enable-socket and its markers and fixtures stay with it (-p no:socket hands them to sockguard)"
            )
        return lines

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.runs_tests and self.session_rules is not None:
            self._session_scope = _Scope(self.session_rules, "", "session", "session")
            self.push(self._session_scope)

    @pytest.hookimpl(wrapper=True, trylast=True)  # innermost: before xdist's worker sends its workeroutput
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Iterator[None]:
        try:
            return (yield)
        finally:
            self._read_children()
            if self._session_scope is not None:
                self.pop(self._session_scope)
            if self.worker:
                session.config.workeroutput["sockguard"] = [r.to_dict() for r in self.records]  # type: ignore[attr-defined]
            elif self.native.report:
                self._write_report(self.native.report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        for data in getattr(node, "workeroutput", {}).get("sockguard", ()):
            record = Blocked(**data)
            self.records.append(record)
            self.by_node.setdefault(record.nodeid, []).append(record)

    def unconfigure(self) -> None:
        """Undo everything, even after an interrupted session; keep the session policy for atexit code."""
        while self.stack:
            self.pop(self.stack[-1])
        if self._watching:
            self._watching = False
            _watch_pytest_raises(self, False)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = self._child_log = None
        if _active_configs == 0 and self.runs_tests and self.session_rules is not None:
            rules = self.session_rules
            if rules.mode != "off":
                atexit.register(_guard_at_exit, rules)

    # -- hooks: collection --

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Iterator[Any]:
        if not self.stack:
            return (yield)
        saved = self._collecting
        self._collecting = (collector.nodeid, "collect", f"collection of {collector.nodeid or 'the session'}")
        try:
            report = yield
        finally:
            self._read_children()
            self._collecting = saved
        records = [r for r in self.by_node.get(collector.nodeid, ()) if r.when == "collect"]
        if records:
            self._annotate(report, records, self._swallowed_for(collector, ()), None)
        return report

    # -- hooks: tests --

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        if self.runs_tests and not self.force_off:
            self.by_node.pop(item.nodeid, None)  # a re-run starts afresh (the summary keeps every record)
            names = tuple(getattr(item, "fixturenames", ()))
            try:
                rules = self.rules_for(item, names)
            except _BadInput as exc:
                pytest.fail(str(exc), pytrace=False)
            scope = None
            if rules is not None:
                scope = _Scope(rules, item.nodeid, "setup", "setup")
                scope.static = names
                scope.swallowed = self._swallowed_for(item, names)
            item.stash[_ITEM_SCOPE] = scope
        return (yield from self._phase(item, "setup"))

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._phase(item, "call"))

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
        return (yield from self._phase(item, "teardown"))

    def _phase(self, item: pytest.Item, when: str) -> Iterator[None]:
        scope = item.stash.get(_ITEM_SCOPE, None)
        if scope is not None:
            scope.when = scope.where = when
            self.push(scope)
        try:
            return (yield)
        finally:
            scope = item.stash.get(_ITEM_SCOPE, None)
            if scope is not None and scope in self.stack:
                self.pop(scope)

    def requested(self, request: pytest.FixtureRequest, name: str) -> None:
        """A pytest-socket fixture was requested at run time (getfixturevalue): recompute the test's policy."""
        item = request.node
        if not isinstance(item, pytest.Item) or self.force_off:
            return
        scope = item.stash.get(_ITEM_SCOPE, None)
        static = scope.static if scope is not None else tuple(getattr(item, "fixturenames", ()))
        if name in static:
            return  # already part of the test's policy
        rules = self.rules_for(item, (*static, name))
        if rules is None:
            return
        if scope is None:
            scope = _Scope(rules, item.nodeid, "setup", "setup")
            scope.swallowed = self._swallowed_for(item, static)
            item.stash[_ITEM_SCOPE] = scope
        scope.static, scope.rules = (*static, name), rules
        if scope in self.stack:
            self._apply()
        else:
            self.push(scope)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
        report = yield
        records = [r for r in self.by_node.get(item.nodeid, ()) if r.when == call.when]
        if records:
            scope = item.stash.get(_ITEM_SCOPE, None)
            self._annotate(report, records, scope.swallowed if scope is not None else "fail", item)
        return report

    def _annotate(self, report: Any, records: list[Blocked], swallowed: str, item: pytest.Item | None) -> None:
        """Add the blocked attempts to the report; fail a passing test when the code under test swallowed a
        block. A block the test caught with ``pytest.raises`` (even wrapped in a client's own exception), one
        inside ``sockguard.expect_blocked()``, and an attempt made directly by test code (a probe in
        conftest.py) are the test's own business."""
        text = "\n".join(r.describe() for r in records)
        failing = [
            r
            for r in records
            if r.decision == "block" and not r.expected and r.count > r.checked and not self._by_test_code(r, item)
        ]
        label = report.nodeid or "the session"
        if report.passed and failing and not hasattr(report, "wasxfail"):
            subject = "collection" if report.when == "collect" else "the test"
            head = (
                f"sockguard blocked {len(failing)} attempt(s) during {report.when} of {label}, and the code under "
                f"test swallowed the exception: {subject} passed without seeing it."
            )
            if swallowed == "fail":
                report.outcome = "failed"
                report.longrepr = (
                    f"{head}\n{text}\nIf the test means to exercise a blocked path, wrap it in "
                    "`with sockguard.expect_blocked():` (the sockguard fixture) or run with --sockguard-swallowed=warn."
                )
                return
            if item is not None:
                try:
                    item.warn(SockguardWarning(f"{head}\n{text}"))
                except Warning:  # warnings are errors in this run
                    report.outcome = "failed"
                    report.longrepr = f"{head}\n{text}"
                    return
        report.sections.append(("sockguard", text))

    def _by_test_code(self, record: Blocked, item: pytest.Item | None) -> bool:
        """Whether the blocked call was made by the test module, a conftest.py or another test file (or by a
        child process: its block shows in its exit status and output, like any other failure of it)."""
        if record.child:
            return True
        module = (record.caller or "").partition(":")[0]
        if item is None or not module:
            return False
        if module == getattr(getattr(item, "module", None), "__name__", None):
            return True
        path = getattr(sys.modules.get(module), "__file__", None) or ""
        name = os.path.basename(path)
        return name == "conftest.py" or any(fnmatch.fnmatch(name, p) for p in self.config.getini("python_files"))

    # -- hooks: fixtures of higher scopes --

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Iterator[Any]:
        """Fixtures above function scope run under their scope's policy, never the policy of whichever test
        happens to set them up first; their teardown too (finalizers bracket it)."""
        if fixturedef.scope == "function" or not self.runs_tests or self.force_off:
            return (yield)
        node = request.node
        try:
            rules = self.rules_for(node, ())
        except _BadInput as exc:
            pytest.fail(str(exc), pytrace=False)
        if rules is None:
            if not self.stack:
                return (yield)
            rules = OFF
        label = f"fixture {fixturedef.argname!r} ({fixturedef.scope} scope)"
        teardown: list[_Scope] = []

        def begin_teardown() -> None:
            if not self.stack and rules.mode == "off":
                return
            nodeid, when, _ = self._context()
            scope = _Scope(rules, nodeid, when, f"teardown of {label}")
            teardown.append(scope)
            self.push(scope)

        def end_teardown() -> None:
            if teardown:
                self.pop(teardown.pop())

        fixturedef.addfinalizer(end_teardown)
        nodeid, when, _ = self._context()
        scope = _Scope(rules, nodeid or node.nodeid, when, f"setup of {label}")
        self.push(scope)
        try:
            return (yield)
        finally:
            self.pop(scope)
            fixturedef.addfinalizer(begin_teardown)

    # -- hooks: reporting --

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        groups = _group(self.records)
        if not groups:
            return
        tr = terminalreporter
        tr.write_sep("=", "sockguard: blocked destinations")
        for group in groups:
            first = group[0]
            attempts = sum(r.count for r in group)
            head = "WOULD BLOCK" if first.decision == "would-block" else "BLOCKED"
            tr.write_line(f"{head} {first.action} ({first.explanation}); {attempts} attempt(s)")
            tr.write_line(f"    {first.advice()}")
            for record in group[:20]:
                who = record.nodeid or "(session)"
                extra = f" [child process {record.pid}]" if record.child else ""
                extra += " [expected]" if record.expected else ""
                tr.write_line(f"    - {who} ({record.where}) from {record.caller or 'unknown code'}{extra}")
            if len(group) > 20:
                tr.write_line(f"    ... and {len(group) - 20} more")
        if self.native.report:
            tr.write_line(f"sockguard: JSON report written to {self.native.report}")

    def _write_report(self, path: str) -> None:
        data = {
            "sockguard_pytest_report": 1,
            "session": self.session_rules.describe() if self.session_rules else None,
            "attempts": sum(r.count for r in self.records),
            "destinations": [
                {
                    "destination": group[0].destination,
                    "operation": group[0].operation,
                    "host": group[0].host,
                    "port": group[0].port,
                    "decision": group[0].decision,
                    "reason": group[0].reason,
                    "explanation": group[0].explanation,
                    "suggestion": group[0].suggestion,
                    "attempts": sum(r.count for r in group),
                    "tests": [r.to_dict() for r in group],
                }
                for group in _group(self.records)
            ],
        }
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(data, f, indent=2)


def _group(records: list[Blocked]) -> list[list[Blocked]]:
    """Records by destination, blocks before would-blocks."""
    groups: dict[tuple[Any, ...], list[Blocked]] = {}
    for record in records:
        key = (record.decision, record.operation, record.host or record.address, record.port)
        groups.setdefault(key, []).append(record)
    return sorted(groups.values(), key=lambda g: (g[0].decision != "block", g[0].destination))


def _suggest(state: Any, event: dict[str, Any]) -> str | None:
    """The rule that would allow the destination, as the guard's own messages suggest it."""
    if state is None:
        return None
    try:
        from sockguard.policy import Decision
        from sockguard.refusal import suggestion

        decision = Decision(False, event.get("reason") or "", event.get("rule"), event.get("detail"))
        return suggestion(state, decision, event.get("host"), event.get("port"), event.get("address"))
    except Exception:
        return None


_watchers: list[_Plugin] = []
_original_fill_unfilled: Any = None


def _watch_pytest_raises(plugin: _Plugin, on: bool) -> None:
    """Tell the innermost guarding plugin what ``pytest.raises`` caught (every pytest.raises/RaisesGroup
    success goes through ``ExceptionInfo.fill_unfilled``). Patched only while a run is being guarded."""
    global _original_fill_unfilled
    if on:
        _watchers.append(plugin)
    elif plugin in _watchers:
        _watchers.remove(plugin)
    if _watchers and _original_fill_unfilled is None:
        original = _original_fill_unfilled = pytest.ExceptionInfo.fill_unfilled

        def fill_unfilled(self: pytest.ExceptionInfo[Any], exc_info: Any) -> None:
            original(self, exc_info)
            if _watchers:
                _watchers[-1].caught(exc_info[1])

        pytest.ExceptionInfo.fill_unfilled = fill_unfilled  # type: ignore[method-assign]
    elif not _watchers and _original_fill_unfilled is not None:
        pytest.ExceptionInfo.fill_unfilled = _original_fill_unfilled  # type: ignore[method-assign]
        _original_fill_unfilled = None


def _guard_at_exit(rules: Rules) -> None:
    """After the last session: atexit handlers (telemetry flushes) stay under the session policy."""
    from sockguard import guard

    settings = rules.settings()
    settings.breaker = {"enabled": False}
    guard.install(guard.state_from_settings(settings))


def _socket_options_used(config: pytest.Config) -> bool:
    return any(config.getoption(name, None) for name in ("disable_socket", "force_enable_socket", "allow_hosts"))


# --- module-level hooks and fixtures ---------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    global _active_configs
    config.addinivalue_line(
        "markers",
        "sockguard(*allow, allow=[], deny=[], mode=None, allow_loopback=None, allow_unix=None): "
        "sockguard policy for this test, on top of the session's",
    )
    socket_present = _pytest_socket_present(config.pluginmanager)
    compat = None
    if not socket_present:
        config.addinivalue_line("markers", "disable_socket(): block all network access for this test (sockguard)")
        config.addinivalue_line("markers", "enable_socket(): allow all network access for this test (sockguard)")
        config.addinivalue_line("markers", "allow_hosts([hosts]): allow only these hosts for this test (sockguard)")
        compat = _Compat(
            disable=bool(config.getoption("disable_socket", False)),
            force_enable=bool(config.getoption("force_enable_socket", False)),
            allow_hosts=config.getoption("allow_hosts", None),
            allow_unix_socket=bool(config.getoption("allow_unix_socket", False)),
        )
    try:
        native = _native_options(config)
        plugin = _Plugin(config, native, compat, socket_present)
    except _BadInput as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_PLUGIN] = plugin
    config.pluginmanager.register(plugin, "sockguard-session")
    if compat is not None:
        config.pluginmanager.register(_SocketFixtures(), "sockguard-socket-fixtures")
    _active_configs += 1


def pytest_unconfigure(config: pytest.Config) -> None:
    global _active_configs
    plugin = config.stash.get(_PLUGIN, None)
    if plugin is None:
        return
    _active_configs -= 1
    plugin.unconfigure()
    del config.stash[_PLUGIN]


class _SocketFixtures:
    """pytest-socket's fixtures, registered only when pytest-socket is not there to provide them."""

    @pytest.fixture
    def socket_disabled(self, request: pytest.FixtureRequest) -> Iterator[None]:
        """Block all network access for this test (pytest-socket compatible)."""
        request.config.stash[_PLUGIN].requested(request, "socket_disabled")
        yield

    @pytest.fixture
    def socket_enabled(self, request: pytest.FixtureRequest) -> Iterator[None]:
        """Allow all network access for this test (pytest-socket compatible)."""
        request.config.stash[_PLUGIN].requested(request, "socket_enabled")
        yield


class _Change:
    """A change to the policy in force, from the ``sockguard`` fixture; ``with`` ends it early."""

    def __init__(self, plugin: _Plugin, scope: _Scope | None, change: Callable[[Rules], Rules]) -> None:
        self._plugin, self._scope, self._change = plugin, scope, change
        if scope is not None:
            scope.changes.append(change)
            plugin._apply()

    def undo(self) -> None:
        if self._scope is not None and self._change in self._scope.changes:
            self._scope.changes.remove(self._change)
            self._plugin._apply()

    def __enter__(self) -> _Change:
        return self

    def __exit__(self, *exc: object) -> None:
        self.undo()


class _ExpectBlocked:
    def __init__(self, plugin: _Plugin) -> None:
        self._plugin = plugin
        self.blocked: list[Blocked] = []

    def __enter__(self) -> list[Blocked]:
        self._plugin.expecting.append(self.blocked)
        return self.blocked

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self._plugin._read_children()
        self._plugin.expecting.remove(self.blocked)
        if exc_type is None and not self.blocked:
            raise AssertionError("sockguard.expect_blocked(): nothing was blocked inside the block")


class Controller:
    """The ``sockguard`` fixture: relax or tighten the policy in force from a test or fixture.

    Each call applies at once, for the rest of the current test (or fixture set-up), and returns a handle
    whose ``with`` block (or ``undo()``) ends it early."""

    def __init__(self, plugin: _Plugin) -> None:
        self._plugin = plugin

    def _scope(self) -> _Scope | None:
        if self._plugin.force_off:
            return None  # --force-enable-socket: everything stays allowed
        if not self._plugin.stack:
            raise RuntimeError("sockguard is not guarding this part of the run (use the fixture from a test)")
        return self._plugin.stack[-1]

    def allow(self, *rules: str) -> _Change:
        return self.policy(allow=rules)

    def deny(self, *rules: str) -> _Change:
        return self.policy(deny=rules)

    def policy(
        self,
        *,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        mode: str | None = None,
        allow_loopback: bool | None = None,
        allow_unix: bool | None = None,
    ) -> _Change:
        try:
            allow_rules = _rule_list(list(allow), "the sockguard fixture's allow")
            deny_rules = _rule_list(list(deny), "the sockguard fixture's deny")
            mode = None if mode is None else _mode(mode, "the sockguard fixture's mode")
        except _BadInput as exc:
            raise ValueError(str(exc)) from None

        def change(rules: Rules) -> Rules:
            return rules.refined(
                allow=allow_rules, deny=deny_rules, mode=mode, allow_loopback=allow_loopback, allow_unix=allow_unix
            )

        return _Change(self._plugin, self._scope(), change)

    def expect_blocked(self) -> _ExpectBlocked:
        """``with sockguard.expect_blocked() as blocked:`` -- the code inside must be blocked at least once
        (swallowed or not); those blocks do not fail the test."""
        return _ExpectBlocked(self._plugin)

    @property
    def rules(self) -> Rules | None:
        """The policy in force now (None: sockguard is not guarding)."""
        return self._plugin.current_rules()

    @property
    def blocked(self) -> list[Blocked]:
        """Every attempt blocked so far in the current test (all phases, child processes included)."""
        self._plugin._read_children()
        nodeid = self._plugin._context()[0]
        return list(self._plugin.by_node.get(nodeid, ()))


@pytest.fixture(scope="session")
def sockguard(pytestconfig: pytest.Config) -> Controller:
    """Relax or tighten sockguard's policy inside a test: ``sockguard.allow("api.test:443")``,
    ``with sockguard.deny(...)``, ``sockguard.policy(mode="monitor")``, ``sockguard.expect_blocked()``.
    Requesting it guards the test even when the run is not guarded."""
    return Controller(pytestconfig.stash[_PLUGIN])
