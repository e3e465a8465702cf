"""The ``sockguard`` fixture's controller, and pytest-socket's fixtures when sockguard provides them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import pytest

from sockguard.pytest_plugin.options import _BadInput, _mode, _rule_list
from sockguard.pytest_plugin.records import Blocked
from sockguard.pytest_plugin.scopes import Rules, _Scope
from sockguard.pytest_plugin.session import _PLUGIN, _Plugin


class _SocketFixtures:
    """pytest-socket's fixtures, registered only when pytest-socket is not there to provide them. Their bodies
    act when they run, as pytest-socket's do (after the markers: a fixture beats a marker)."""

    @pytest.fixture
    def socket_disabled(self, request: pytest.FixtureRequest) -> Iterator[None]:
        """Block all network access for this test (pytest-socket compatible)."""
        plugin = request.config.stash[_PLUGIN]
        unix = plugin.compat is not None and plugin.compat.allow_unix_socket
        plugin.socket_functions[0](unix)
        yield

    @pytest.fixture
    def socket_enabled(self, request: pytest.FixtureRequest) -> Iterator[None]:
        """Allow all network access for this test (pytest-socket compatible)."""
        request.config.stash[_PLUGIN].socket_functions[1]()
        yield


class _Change:
    """A change to the policy in force, from the ``sockguard`` fixture; ``with`` ends it early."""

    def __init__(self, plugin: _Plugin, scope: _Scope | None, change: Callable[[Rules], Rules]) -> None:
        self._plugin, self._scope, self._change = plugin, scope, change
        if scope is not None:
            scope.changes.append(change)
            plugin.stack.apply()

    def undo(self) -> None:
        if self._scope is not None and self._change in self._scope.changes:
            self._scope.changes.remove(self._change)
            self._plugin.stack.apply()

    def __enter__(self) -> _Change:
        return self

    def __exit__(self, *exc: object) -> None:
        self.undo()


class _ExpectBlocked:
    def __init__(self, plugin: _Plugin) -> None:
        self._plugin = plugin
        self.blocked: list[Blocked] = []

    def __enter__(self) -> list[Blocked]:
        self._plugin.recorder.expecting.append(self.blocked)
        return self.blocked

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self._plugin.stack.read_children()
        self._plugin.recorder.expecting.remove(self.blocked)
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
        if not self._plugin.stack.scopes:
            raise RuntimeError("sockguard is not guarding this part of the run (use the fixture from a test)")
        return self._plugin.stack.scopes[-1]

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
        return self._plugin.stack.current_rules()

    @property
    def blocked(self) -> list[Blocked]:
        """Every attempt blocked so far in the current test (all phases, child processes included)."""
        self._plugin.stack.read_children()
        nodeid = self._plugin.stack.context()[0]
        return list(self._plugin.recorder.by_node.get(nodeid, ()))
