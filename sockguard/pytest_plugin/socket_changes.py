"""pytest-socket's functions and fixture bodies at run time: they change the policy of the test in progress.

``disable_socket()``, ``enable_socket()`` and ``socket_allow_hosts()`` (called by a test, a fixture or a conftest,
and run by the ``socket_disabled``/``socket_enabled`` fixtures' bodies) act when they are called, as pytest-socket's
do: the change holds for the rest of the test in progress, or for the next test when none is (a conftest at import
time). Where pytest-socket enables sockets for a test (option, marker, fixture), it undoes what a conftest's
``pytest_runtest_setup`` did with those functions; :meth:`SocketChanges.settle` does the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sockguard.pytest_plugin.compat import allowed, disabled, enabled
from sockguard.pytest_plugin.node_rules import NodeRules
from sockguard.pytest_plugin.scopes import _ITEM_SCOPE, OFF, Rules, _Scope
from sockguard.pytest_plugin.stack import PolicyStack

_ENABLED = pytest.StashKey[bool]()  # pytest-socket enables sockets for this test (option, marker or fixture)

Change = Callable[[Rules | None], Rules | None]


class SocketChanges:
    """The changes pytest-socket's functions made, per test, and the functions themselves (``functions``: what
    sockguard's ``pytest_socket`` module calls, sockguard/pytest_plugin/socket_api.py)."""

    def __init__(self, stack: PolicyStack, node_rules: NodeRules) -> None:
        self._stack = stack
        self._node_rules = node_rules
        self.running: pytest.Item | None = None  # the test between its set-up and the end of its teardown
        self._pending: list[Change] = []  # calls made before any test
        self._by_node: dict[str, list[Callable[[Rules], Rules]]] = {}
        self.functions = self._functions()

    def _functions(self) -> tuple[Callable[[bool], None], Callable[[], None], Callable[[object, bool], None]]:
        def disable(unix: bool) -> None:
            self.change(self.running, lambda rules: disabled(rules, unix))

        def enable() -> None:
            self.change(self.running, enabled)

        def allow_hosts(hosts: object, unix: bool) -> None:
            parsed = self._node_rules.hosts(hosts)
            self.change(self.running, lambda rules: allowed(rules, parsed, unix))

        return disable, enable, allow_hosts

    def change(self, item: Any, change: Change) -> None:
        """Change the policy of ``item`` (the test in progress) until its end; with no test in progress, of the
        next test."""
        if item is None:
            self._pending.append(change)
            return
        scope = item.stash.get(_ITEM_SCOPE, None)
        if scope is None:
            scope = _Scope(OFF, item.nodeid, "setup", "setup")
            scope.static = tuple(getattr(item, "fixturenames", ()))
            scope.swallowed = self._node_rules.swallowed_for(item, scope.static)
            item.stash[_ITEM_SCOPE] = scope

        def apply(rules: Rules) -> Rules:
            return change(rules) or OFF

        scope.changes.append(apply)
        self._by_node.setdefault(item.nodeid, []).append(apply)
        if scope in self._stack.scopes:
            self._stack.apply()
        elif self.running is item:
            self._stack.push(scope)

    def note_enabled(self, item: pytest.Item) -> None:
        """Whether pytest-socket enables sockets for this test (for :meth:`settle`)."""
        names = tuple(getattr(item, "fixturenames", ()))
        enabled = self._node_rules.force_off or item.get_closest_marker("enable_socket") is not None
        item.stash[_ENABLED] = enabled or "socket_enabled" in names

    def take_pending(self, item: pytest.Item) -> None:
        """The calls made before this test (a conftest at import time) change its policy."""
        pending, self._pending = self._pending, []
        for change in pending:
            self.change(item, change)

    def settle(self, item: pytest.Item) -> None:
        """After every other ``pytest_runtest_setup`` hook (a conftest's), before the fixtures: where pytest-socket
        enables sockets for the test (--force-enable-socket, the marker, the fixture), it undoes what those hooks
        did with its functions; so does sockguard."""
        changes = self._by_node.pop(item.nodeid, [])
        if not item.stash.get(_ENABLED, False) or not changes:
            return
        scope = item.stash.get(_ITEM_SCOPE, None)
        if scope is None:
            return
        scope.changes = [c for c in scope.changes if c not in changes]
        if self._node_rules.force_off and not scope.changes and scope.rules is OFF:
            item.stash[_ITEM_SCOPE] = None
            if scope in self._stack.scopes:
                self._stack.pop(scope)
        elif scope in self._stack.scopes:
            self._stack.apply()
