"""The policy stack: the scope on top is the policy in force, in this process and in the children it starts.

The run is a nest of stretches with their own policy (the session, a test's set-up, call and teardown, a
higher-scope fixture's set-up and teardown); each is a :class:`~sockguard.pytest_plugin.scopes._Scope` pushed when
it begins and popped when it ends. Whenever the top changes, its rules are put in force: one guard State per Rules,
compiled once and installed with ``guard.install`` (the runtime's own engine, no breaker), mirrored into the
environment for child processes, and pytest-socket's refusal of socket creation switched on or off. The stack also
knows where in the run a block happens (:meth:`PolicyStack.context`), so every refusal is recorded against it.
"""

from __future__ import annotations

from typing import Any

from sockguard.pytest_plugin.children import ChildProcesses
from sockguard.pytest_plugin.compat import ENABLE_HINT, refuse_creation, translator
from sockguard.pytest_plugin.raises import _watch_pytest_raises
from sockguard.pytest_plugin.recorder import Recorder
from sockguard.pytest_plugin.scopes import Rules, _Scope


class PolicyStack:
    """The scopes of one pytest config, and the guard State of the top one."""

    def __init__(self, recorder: Recorder, children: ChildProcesses) -> None:
        self.recorder = recorder
        self.children = children
        self.scopes: list[_Scope] = []
        self.collecting: tuple[str, str, str] | None = None  # (node id, "collect", where) during a collection
        self._states: dict[Rules, Any] = {}
        self.installed: Any = None
        self._previous: Any = None
        self._watching = False

    # -- where in the run --

    def context(self) -> tuple[str, str, str]:
        """``(node id, phase, where)`` of the part of the run in progress (``""`` and "session" outside tests)."""
        if self.collecting is not None:
            return self.collecting
        if self.scopes:
            top = self.scopes[-1]
            return top.nodeid, top.when, top.where
        return "", "session", "session"

    def current_rules(self) -> Rules | None:
        return self.scopes[-1].effective() if self.scopes else None

    def _compat_in_force(self) -> bool:
        rules = self.current_rules()
        return rules is not None and (rules.block_create or rules.hosts_shown is not None)

    # -- recording, charged to the part of the run in progress --

    def record(self, event: dict[str, Any], state: Any, *, child: bool = False) -> None:
        self.recorder.record(event, state, self.context(), compat=self._compat_in_force(), child=child)

    def caught(self, exc: BaseException) -> None:
        """``pytest.raises`` caught ``exc`` (sockguard/pytest_plugin/raises.py)."""
        nodeid, when, _ = self.context()
        self.recorder.caught(exc, nodeid, when)

    def read_children(self) -> None:
        """Charge the blocks child processes logged since the last read to the scope now ending."""
        for event in self.children.new_blocks():
            self.record(event, self.installed, child=True)

    # -- putting the top in force --

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
        self.scopes.append(scope)
        self.apply()

    def pop(self, scope: _Scope) -> None:
        self.read_children()
        for i in range(len(self.scopes) - 1, -1, -1):
            if self.scopes[i] is scope:
                del self.scopes[i]
                break
        self.apply()

    def apply(self) -> None:
        """Put the top scope's effective rules in force (after a push, a pop, or a change to a scope's rules)."""
        from sockguard import guard

        if not self.scopes:
            refuse_creation(None)
            if self.installed is not None:
                self.children.restore()
                guard.restore(self._previous)
                self.installed = self._previous = None
            return
        top = self.scopes[-1]
        rules = top.effective()
        # Socket creation is refused where pytest-socket refuses it: a test's own set-up and call. A fixture of a
        # higher scope (a server it starts) is judged by its scope's policy at connect time only.
        creating = rules.block_create and rules.mode == "enforce" and top.where in ("setup", "call")
        refuse_creation((rules.allow_unix, self._creation_refused) if creating else None)
        state = self._state(rules)
        if state is not self.installed:
            previous = guard.install(state)
            if self.installed is None:
                self._previous = previous
            self.installed = state
        self.children.mirror(rules)

    def _creation_refused(self, what: str, operation: str) -> str:
        """Record a socket creation (or lookup) refused while sockets are disabled; sockguard's explanation."""
        from sockguard.caller import find_caller

        caller = find_caller(3)
        nodeid, _, where = self.context()
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

    def unwind(self) -> None:
        """Pop every scope left (an interrupted session) and stop watching ``pytest.raises``."""
        while self.scopes:
            self.pop(self.scopes[-1])
        if self._watching:
            self._watching = False
            _watch_pytest_raises(self, False)
