"""Per-config state and hooks: the policy stack, installing its top, child processes, recording, reports.

The policy in force is a stack of scopes (session, test phase, higher-scope fixture set-up/teardown, ...); the
top one is installed with ``guard.install`` and mirrored into ``SOCKGUARD_*`` for child processes.
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
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sockguard.pytest_plugin.compat import (
    ENABLE_HINT,
    allowed,
    creation_allowed,
    disabled,
    enabled,
    parse_hosts,
    refuse_creation,
    translator,
)
from sockguard.pytest_plugin.options import (
    _apply_marker,
    _BadInput,
    _Compat,
    _Native,
    _socket_options_used,
)
from sockguard.pytest_plugin.raises import _watch_pytest_raises
from sockguard.pytest_plugin.records import Blocked, SockguardWarning, _explain, _group, _suggest
from sockguard.pytest_plugin.scopes import DEFAULT, OFF, Rules, _Scope

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


def _compat_base(session: Rules | None) -> Rules | None:
    """The session's policy without its pytest-socket parts (a test's own markers replace those)."""
    return None if session is None else dataclasses.replace(session, block_create=False, hosts_shown=None)


_ITEM_SCOPE = pytest.StashKey["_Scope | None"]()
_ENABLED = pytest.StashKey[bool]()  # pytest-socket enables sockets for this test (option, marker or fixture)
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
        self._running: pytest.Item | None = None  # the test between its set-up and the end of its teardown
        self._pending: list[Callable[[Rules | None], Rules | None]] = []  # pytest-socket calls before any test
        self.socket_functions = self._socket_functions()
        self._socket_changes: dict[str, list[Callable[[Rules], Rules]]] = {}

    # -- policies --

    def _session_rules(self) -> Rules | None:
        compat, native = self.compat, self.native
        base: Rules | None = None
        if compat is not None:
            unix = compat.allow_unix_socket
            base = allowed(None, self._hosts(compat.allow_hosts) if compat.allow_hosts else None, unix)
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

    def _hosts(self, value: object) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
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

    def rules_for(self, node: Any, names: tuple[str, ...]) -> Rules | None:
        """The policy for a test (or a fixture's scope node) requesting ``names``; None when sockguard leaves
        it alone. pytest-socket's order: --force-enable-socket, enable_socket / socket_enabled, then
        disable_socket / socket_disabled, then the allow_hosts marker over --allow-hosts, then --disable-socket
        when no host list is given (the fixtures' bodies apply again when they run: see socket_change); then
        @pytest.mark.sockguard, module to function."""
        rules = self.session_rules
        where = node.nodeid or "the session"
        compat = self.compat
        if compat is not None:
            unix = compat.allow_unix_socket
            if self.force_off or node.get_closest_marker("enable_socket") is not None or "socket_enabled" in names:
                rules = None if self.force_off else OFF
            elif node.get_closest_marker("disable_socket") is not None or "socket_disabled" in names:
                rules = disabled(_compat_base(self.session_rules), unix)
            elif (mark := node.get_closest_marker("allow_hosts")) is not None:
                if not mark.args:
                    raise _BadInput(f"sockguard: {where}: @pytest.mark.allow_hosts needs a list of hosts")
                hosts = mark.args[0]
                parsed = self._hosts(hosts)  # None: not a list or a string, which pytest-socket ignores
                rules = OFF if parsed is None else allowed(_compat_base(self.session_rules), parsed, unix)
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

            state = guard.state_from_settings(settings, observer=observe, translate=translator(rules))
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
            refuse_creation(None)
            if self._installed is not None:
                self._restore_env()
                guard.restore(self._previous)
                self._installed = self._previous = None
            return
        top = self.stack[-1]
        rules = top.effective()
        # Socket creation is refused where pytest-socket refuses it: a test's own set-up and call. A fixture of a
        # higher scope (a server it starts) is judged by its scope's policy at connect time only.
        creating = rules.block_create and rules.mode == "enforce" and top.where in ("setup", "call")
        refuse_creation((rules.allow_unix, self._creation_refused) if creating else None)
        state = self._state(rules)
        if state is not self._installed:
            previous = guard.install(state)
            if self._installed is None:
                self._previous = previous
            self._installed = state
        self._set_env(rules)

    def _creation_refused(self, what: str, operation: str) -> str:
        """Record a socket creation (or lookup) refused while sockets are disabled; sockguard's explanation."""
        from sockguard.caller import find_caller

        caller = find_caller(3)
        nodeid, _, where = self._context()
        self.record(
            {"op": operation, "proto": "tcp" if operation == "socket" else "dns", "host": what, "port": None,
             "address": None, "decision": "block", "reason": "socket-disabled", "rule": None, "caller": caller,
             "explanation": "sockets are disabled here"},
            None,
        )  # fmt: skip
        return (
            f"sockguard blocked {what}: sockets are disabled during {where} of {nodeid or 'the session'} "
            f"(--disable-socket, the disable_socket marker, the socket_disabled fixture or disable_socket()); "
            f"called from {caller or 'unknown code'}. To allow it: {ENABLE_HINT}"
            + ("; --allow-unix-socket allows AF_UNIX." if "AF_UNIX" in what else ".")
        )

    # -- pytest-socket's fixtures and functions --

    def socket_change(self, item: Any, change: Callable[[Rules | None], Rules | None]) -> None:
        """``disable_socket()`` / ``enable_socket()`` / ``socket_allow_hosts()`` (the functions or the fixtures'
        bodies): change the policy of ``item`` (the test in progress) until its end; with no test in progress
        (a conftest at import time), of the next test."""
        if item is None:
            self._pending.append(change)
            return
        scope = item.stash.get(_ITEM_SCOPE, None)
        if scope is None:
            scope = _Scope(OFF, item.nodeid, "setup", "setup")
            scope.static = tuple(getattr(item, "fixturenames", ()))
            scope.swallowed = self._swallowed_for(item, scope.static)
            item.stash[_ITEM_SCOPE] = scope

        def apply(rules: Rules) -> Rules:
            return change(rules) or OFF

        scope.changes.append(apply)
        self._socket_changes.setdefault(item.nodeid, []).append(apply)
        if scope in self.stack:
            self._apply()
        elif self._running is item:
            self.push(scope)

    def settle(self, item: pytest.Item) -> None:
        """After every other ``pytest_runtest_setup`` hook (a conftest's), before the fixtures: where pytest-socket
        enables sockets for the test (--force-enable-socket, the marker, the fixture), it undoes what those hooks
        did with its functions; so does sockguard."""
        changes = self._socket_changes.pop(item.nodeid, [])
        if not item.stash.get(_ENABLED, False) or not changes:
            return
        scope = item.stash.get(_ITEM_SCOPE, None)
        if scope is None:
            return
        scope.changes = [c for c in scope.changes if c not in changes]
        if self.force_off and not scope.changes and scope.rules is OFF:
            item.stash[_ITEM_SCOPE] = None
            if scope in self.stack:
                self.pop(scope)
        elif scope in self.stack:
            self._apply()

    def _socket_functions(self) -> tuple[Callable[[bool], None], Callable[[], None], Callable[[object, bool], None]]:
        def disable(unix: bool) -> None:
            self.socket_change(self._running, lambda rules: disabled(rules, unix))

        def enable() -> None:
            self.socket_change(self._running, enabled)

        def allow_hosts(hosts: object, unix: bool) -> None:
            parsed = self._hosts(hosts)
            self.socket_change(self._running, lambda rules: allowed(rules, parsed, unix))

        return disable, enable, allow_hosts

    def _compat_in_force(self) -> bool:
        rules = self.current_rules()
        return rules is not None and (rules.block_create or rules.hosts_shown is not None)

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
            explanation=event.get("explanation")
            or _explain(str(event.get("reason")), event.get("rule"), event.get("detail")),
            caller=event.get("caller"),
            suggestion=_suggest(state, event),
            pid=int(event.get("pid") or os.getpid()),
            child=child,
            expected=expected,
            compat=self._compat_in_force(),
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
        if self.runs_tests:
            self._running = item
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
        if self.compat is not None:
            names = tuple(getattr(item, "fixturenames", ()))
            enabled = self.force_off or item.get_closest_marker("enable_socket") is not None
            item.stash[_ENABLED] = enabled or "socket_enabled" in names
        pending, self._pending = self._pending, []
        for change in pending:  # pytest-socket functions called before this test (a conftest at import time)
            self.socket_change(item, change)
        return (yield from self._phase(item, "setup"))

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._phase(item, "call"))

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
        try:
            return (yield from self._phase(item, "teardown"))
        finally:
            self._running = None

    def _phase(self, item: pytest.Item, when: str) -> Iterator[None]:
        scope = item.stash.get(_ITEM_SCOPE, None)
        if scope is not None and scope not in self.stack:
            scope.when = scope.where = when
            self.push(scope)
        try:
            return (yield)
        finally:
            scope = item.stash.get(_ITEM_SCOPE, None)
            if scope is not None and scope in self.stack:
                self.pop(scope)

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
            if item is not None and not all(r.compat for r in failing):  # (those warned as pytest-socket does)
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


def _guard_at_exit(rules: Rules) -> None:
    """After the last session: atexit handlers (telemetry flushes) stay under the session policy."""
    from sockguard import guard

    settings = rules.settings()
    settings.breaker = {"enabled": False}
    guard.install(guard.state_from_settings(settings))
