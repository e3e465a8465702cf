"""The Python API: install the guard, apply a policy temporarily, ask for a decision.

In a process the operator guards from start-up (``sockguard run``, the ``PYTHONPATH`` activation, or the native
layer's preloaded policy) the configuration it started with is the operator's, not the application's:
:func:`install`, :func:`uninstall` and :func:`guarded` would let any code the process runs (a dependency
included) switch the guard off or widen it, native layer and all. They refuse, with a ConfigError that says how
to allow it, unless that configuration sets ``allow_runtime_changes = true``. In a process nothing guarded at
start-up (a test suite, a program that guards itself) they work as always."""

from __future__ import annotations

from contextlib import contextmanager

from sockguard import guard
from sockguard.config import Settings
from sockguard.errors import ConfigError, RuleError
from sockguard.policy import Decision
from sockguard.values import parse_mode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

    from sockguard.active import State


def _settings(
    allow: Iterable[str] | None,
    deny: Iterable[str] | None,
    mode: str | None,
    allow_loopback: bool | None,
    allow_unix: bool | None,
    log: str | None,
    from_environment: bool,
    log_special: bool | None = None,
    allow_raw: bool | None = None,
) -> Settings:
    settings = guard.environment_settings() if from_environment else Settings()
    try:
        settings.extend(allow or (), deny or ())
    except RuleError as exc:
        raise ConfigError(f"sockguard: {exc}") from None
    if mode is not None:
        settings.mode = parse_mode(mode, "arguments", "mode")
    if allow_loopback is not None:
        settings.allow_loopback = allow_loopback
    if allow_unix is not None:
        settings.allow_unix = allow_unix
    if allow_raw is not None:
        settings.allow_raw = allow_raw
    if log is not None:
        settings.log = log
    if log_special is not None:
        settings.log_special = log_special
    return settings


def _change_allowed(call: str) -> None:
    """Raise ConfigError when the operator's start-up configuration does not let :func:`install`,
    :func:`uninstall` or :func:`guarded` (``call``) replace it."""
    from sockguard import _hook

    if _hook.activated_at_startup:
        load = guard.environment_settings  # the source fixed at activation
    elif _native_policy_in_force():
        load = _native_start_up_settings
    else:
        return
    try:
        allowed = load().allow_runtime_changes
    except (ValueError, OSError) as exc:  # a broken or unreadable start-up configuration: it blocks all, and stays
        raise ConfigError(f"sockguard: {call} refused: the start-up configuration cannot be read ({exc})") from None
    if not allowed:
        raise ConfigError(
            f"sockguard: {call} refused: this process is guarded by the configuration it started with (sockguard run, "
            "the PYTHONPATH activation or the native layer's policy), which does not allow run-time changes; the "
            "policy in force is unchanged. To let application code replace it, set allow_runtime_changes = true in "
            "that configuration (SOCKGUARD_ALLOW_RUNTIME_CHANGES=1 before the process starts)"
        )


def _native_start_up_settings() -> Settings:
    """The settings a process guarded only by the native layer started with: its initial ``SOCKGUARD_*`` variables
    (and the files they name), never ``os.environ`` as the program has changed it, nor a file in a working
    directory it may have moved to."""
    from sockguard.config import settings_from_source
    from sockguard.source import initial_environment, take

    return settings_from_source(take(initial_environment(), "/nonexistent"))


def _native_policy_in_force() -> bool:
    """Whether this process's native layer enforces a policy it was started with (``sockguard run`` with a Python
    started ``-I``/``-S``, or ``LD_PRELOAD`` with ``SOCKGUARD_NATIVE_POLICY``): a run-time change would replace it."""
    import os

    if "LD_PRELOAD" not in os.environ:
        return False
    from sockguard.native.bridge import interposing

    return interposing()


def _state(settings: Settings) -> State:
    try:
        return guard.state_from_settings(settings)
    except RuleError as exc:
        raise ConfigError(f"sockguard: {exc}") from None


def install(
    allow: Iterable[str] | None = None,
    deny: Iterable[str] | None = None,
    *,
    mode: str | None = None,
    allow_loopback: bool | None = None,
    allow_unix: bool | None = None,
    log: str | None = None,
    log_special: bool | None = None,
    from_environment: bool = True,
    allow_raw: bool | None = None,
) -> None:
    """Guard this process. By default the configuration file and environment
    apply and ``allow``/``deny`` extend them; ``from_environment=False`` uses
    only the arguments. ``log_special``: ``log`` may be a FIFO or a device (written without blocking).
    Raises ConfigError on a bad rule (nothing changes), and in a process guarded from start-up whose configuration
    does not set ``allow_runtime_changes`` (see the module docstring)."""
    _change_allowed("sockguard.install()")
    settings = _settings(allow, deny, mode, allow_loopback, allow_unix, log, from_environment, log_special, allow_raw)
    guard.install(_state(settings))


def reopen_log() -> None:
    """Reopen the decision log's path at its next line: call it from your own SIGHUP handler after a log
    rotation if you want the switch at once (sockguard notices a moved or deleted log within a second anyway,
    and installs no signal handler of its own)."""
    guard.current().sinks.reopen_log()


def uninstall() -> None:
    """Stop enforcing (mode off). The audit hook stays, as a no-op. Refused (ConfigError) in a process guarded from
    start-up whose configuration does not set ``allow_runtime_changes`` (see the module docstring)."""
    _change_allowed("sockguard.uninstall()")
    guard.install(guard.off())


@contextmanager
def guarded(
    allow: Iterable[str] | None = None,
    deny: Iterable[str] | None = None,
    *,
    mode: str = "enforce",
    allow_loopback: bool | None = None,
    allow_unix: bool | None = None,
    log: str | None = None,
    log_special: bool | None = None,
    from_environment: bool = False,
    allow_raw: bool | None = None,
) -> Iterator[State]:
    """Apply a policy for the duration of a ``with`` block, process-wide
    (all threads), then restore what was in force before. Refused (ConfigError) in a process guarded from start-up
    whose configuration does not set ``allow_runtime_changes`` (see the module docstring)."""
    _change_allowed("sockguard.guarded()")
    settings = _settings(allow, deny, mode, allow_loopback, allow_unix, log, from_environment, log_special, allow_raw)
    state = _state(settings)
    with guard.applied(state):
        yield state


def status() -> dict[str, Any]:
    state = guard.current()
    return {
        "mode": state.mode,
        "allow": [r.text for r in state.policy.allow],
        "deny": [r.text for r in state.policy.deny],
        "allow_loopback": state.policy.allow_loopback,
        "allow_unix": state.policy.allow_unix,
        "allow_raw": state.policy.allow_raw,
        "error": state.error,
        "source": getattr(state.settings, "source", None),
    }


def check(host: str, port: int | None = None) -> Decision:
    """The decision for a destination, without DNS and without connecting."""
    state = guard.current()
    if state.error is not None:
        return Decision(False, "config-error", None, state.error)
    return state.policy.check_name(host, port)


def check_url(url: str) -> Decision:
    """The decision for a URL, read the way urllib, requests and httpx read it (they disagree on backslashes,
    userinfo, percent-escapes, IDNA 2003 vs 2008, ports): allowed only if every (host, port) a client would
    hand to the socket is allowed (sockguard.urls). Scheme default port when the URL has none."""
    from sockguard.urls import decide

    state = guard.current()
    if state.error is not None:
        return Decision(False, "config-error", None, state.error)
    return decide(state.policy, url).decision
