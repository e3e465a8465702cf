"""The per-config plugin object: pytest's hooks, each bracketing its part of the run with a scope of the stack.

One :class:`_Plugin` per pytest config (registered from ``pytest_configure``, so pytester runs nested in a test stay
separate). It wires the pieces together and keeps to the hooks: which rules a node gets is
:mod:`~sockguard.pytest_plugin.node_rules`'s, putting them in force :mod:`~sockguard.pytest_plugin.stack`'s, child
processes :mod:`~sockguard.pytest_plugin.children`'s, recording :mod:`~sockguard.pytest_plugin.recorder`'s,
pytest-socket's functions :mod:`~sockguard.pytest_plugin.socket_changes`'s and what the user reads
:mod:`~sockguard.pytest_plugin.reporting`'s.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator
from typing import Any

import pytest

from sockguard.pytest_plugin.children import ChildProcesses
from sockguard.pytest_plugin.node_rules import NodeRules
from sockguard.pytest_plugin.options import _BadInput, _Compat, _Native, _socket_options_used
from sockguard.pytest_plugin.recorder import Recorder
from sockguard.pytest_plugin.reporting import annotate, terminal_summary, write_report
from sockguard.pytest_plugin.scopes import _ITEM_SCOPE, OFF, Rules, _Scope
from sockguard.pytest_plugin.socket_changes import SocketChanges
from sockguard.pytest_plugin.stack import PolicyStack

_active_configs = 0  # pytest configs alive in this process (pytester runs nest them)

_PLUGIN = pytest.StashKey["_Plugin"]()


class _Plugin:
    """Per-config state and hooks."""

    def __init__(self, config: pytest.Config, native: _Native, compat: _Compat | None, socket_present: bool) -> None:
        self.config = config
        self.native = native
        self.compat = compat
        self.socket_present = socket_present
        self.worker = hasattr(config, "workerinput")
        self.controller = not self.worker and getattr(config.option, "dist", "no") != "no"
        self.runs_tests = not self.controller
        self.node_rules = NodeRules(native, compat)
        self.force_off = self.node_rules.force_off
        self.session_rules = self.node_rules.session
        self.recorder = Recorder()
        self.children = ChildProcesses()
        self.stack = PolicyStack(self.recorder, self.children)
        self.socket_changes = SocketChanges(self.stack, self.node_rules)
        self.socket_functions = self.socket_changes.functions
        self._session_scope: _Scope | None = None

    def settle(self, item: pytest.Item) -> None:
        self.socket_changes.settle(item)

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
            self.stack.push(self._session_scope)

    @pytest.hookimpl(wrapper=True, trylast=True)  # innermost: before xdist's worker sends its workeroutput
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Iterator[None]:
        try:
            return (yield)
        finally:
            self.stack.read_children()
            if self._session_scope is not None:
                self.stack.pop(self._session_scope)
            if self.worker:
                records = [r.to_dict() for r in self.recorder.records]
                session.config.workeroutput["sockguard"] = records  # type: ignore[attr-defined]
            elif self.native.report:
                write_report(self.native.report, self.session_rules, self.recorder.records)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        self.recorder.add_worker_records(getattr(node, "workeroutput", {}).get("sockguard", ()))

    def unconfigure(self) -> None:
        """Undo everything, even after an interrupted session; keep the session policy for atexit code."""
        self.stack.unwind()
        self.children.remove_log()
        if _active_configs == 0 and self.runs_tests and self.session_rules is not None:
            rules = self.session_rules
            if rules.mode != "off":
                atexit.register(_guard_at_exit, rules)

    # -- hooks: collection --

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Iterator[Any]:
        if not self.stack.scopes:
            return (yield)
        saved = self.stack.collecting
        self.stack.collecting = (collector.nodeid, "collect", f"collection of {collector.nodeid or 'the session'}")
        try:
            report = yield
        finally:
            self.stack.read_children()
            self.stack.collecting = saved
        records = [r for r in self.recorder.by_node.get(collector.nodeid, ()) if r.when == "collect"]
        if records:
            swallowed = self.node_rules.swallowed_for(collector, ())
            annotate(report, records, swallowed, None, self.config.getini("python_files"))
        return report

    # -- hooks: tests --

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        if self.runs_tests:
            self.socket_changes.running = item
        if self.runs_tests and not self.force_off:
            self.recorder.by_node.pop(item.nodeid, None)  # a re-run starts afresh (the summary keeps every record)
            names = tuple(getattr(item, "fixturenames", ()))
            try:
                rules = self.node_rules.for_node(item, names)
            except _BadInput as exc:
                pytest.fail(str(exc), pytrace=False)
            scope = None
            if rules is not None:
                scope = _Scope(rules, item.nodeid, "setup", "setup")
                scope.static = names
                scope.swallowed = self.node_rules.swallowed_for(item, names)
            item.stash[_ITEM_SCOPE] = scope
        if self.compat is not None:
            self.socket_changes.note_enabled(item)
        self.socket_changes.take_pending(item)
        return (yield from self._phase(item, "setup"))

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._phase(item, "call"))

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
        try:
            return (yield from self._phase(item, "teardown"))
        finally:
            self.socket_changes.running = None

    def _phase(self, item: pytest.Item, when: str) -> Iterator[None]:
        scope = item.stash.get(_ITEM_SCOPE, None)
        if scope is not None and scope not in self.stack.scopes:
            scope.when = scope.where = when
            self.stack.push(scope)
        try:
            return (yield)
        finally:
            scope = item.stash.get(_ITEM_SCOPE, None)
            if scope is not None and scope in self.stack.scopes:
                self.stack.pop(scope)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
        report = yield
        records = [r for r in self.recorder.by_node.get(item.nodeid, ()) if r.when == call.when]
        if records:
            scope = item.stash.get(_ITEM_SCOPE, None)
            swallowed = scope.swallowed if scope is not None else "fail"
            annotate(report, records, swallowed, item, self.config.getini("python_files"))
        return report

    # -- hooks: fixtures of higher scopes --

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Iterator[Any]:
        """Fixtures above function scope run under their scope's policy, never the policy of whichever test
        happens to set them up first; their teardown too (finalizers bracket it)."""
        if fixturedef.scope == "function" or not self.runs_tests or self.force_off:
            return (yield)
        node = request.node
        try:
            rules = self.node_rules.for_node(node, ())
        except _BadInput as exc:
            pytest.fail(str(exc), pytrace=False)
        if rules is None:
            if not self.stack.scopes:
                return (yield)
            rules = OFF
        label = f"fixture {fixturedef.argname!r} ({fixturedef.scope} scope)"
        teardown: list[_Scope] = []
        stack = self.stack

        def begin_teardown() -> None:
            if not stack.scopes and rules.mode == "off":
                return
            nodeid, when, _ = stack.context()
            scope = _Scope(rules, nodeid, when, f"teardown of {label}")
            teardown.append(scope)
            stack.push(scope)

        def end_teardown() -> None:
            if teardown:
                stack.pop(teardown.pop())

        fixturedef.addfinalizer(end_teardown)
        nodeid, when, _ = stack.context()
        scope = _Scope(rules, nodeid or node.nodeid, when, f"setup of {label}")
        stack.push(scope)
        try:
            return (yield)
        finally:
            stack.pop(scope)
            fixturedef.addfinalizer(begin_teardown)

    # -- hooks: reporting --

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminal_summary(terminalreporter, self.recorder.records, self.native.report)


def _guard_at_exit(rules: Rules) -> None:
    """After the last session: atexit handlers (telemetry flushes) stay under the session policy."""
    from sockguard import guard

    settings = rules.settings()
    settings.breaker = {"enabled": False}
    guard.install(guard.state_from_settings(settings))
