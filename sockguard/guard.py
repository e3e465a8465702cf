"""Loading and switching the policy in force.

Builds :class:`~sockguard.active.State` objects from settings (the one constructor, :func:`state_from_settings`,
used by the runtime, the API and the pytest plugin alike) and puts one in force: the audit-hook handlers
(sockguard.floor) into sockguard._hook's table, and post-import hooks that put the socket-module wrappers
(sockguard.wrappers) onto ``socket`` and adapt the libraries of ``_hook.INTEGRATIONS``. A process activated at start-up
(sitecustomize, ``sockguard run``) loads its configuration here at the first socket event.
"""

from __future__ import annotations

import _thread
import gc
import os
import sys

from sockguard import _hook, active
from sockguard.active import State
from sockguard.console import CONSOLE
from sockguard.errors import ConfigError, EgressBlocked
from sockguard.floor import HANDLERS
from sockguard.policy import CONFIG_UNAVAILABLE, Policy
from sockguard.sinks import Sinks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from sockguard.config import Settings

__all__ = [
    "State",
    "applied",
    "current",
    "environment_settings",
    "fail_closed",
    "install",
    "load",
    "restore",
    "state_from_settings",
]

current = active.current
_load_lock = _thread.allocate_lock()


def load() -> State:
    """The State in force, loading the configuration (file + environment) if there is none yet.

    A broken configuration is put in force like any other (every decision ``config-error``: fail closed). A load
    that fails for any other reason puts nothing in force, so the next socket event loads again (see
    :func:`_not_loaded`). The decision log is opened after the lock is released: nothing that can wait on a disk
    or a FIFO happens while other threads' first socket events wait here. The cyclic garbage collector pauses
    while the configuration is parsed: the load makes no cycles, and with 100,000 rules the collector's repeated
    passes over the growing heap cost a quarter of the load (more, the bigger the policy)."""
    with _load_lock:
        found = active.in_force
        if found is not None:
            return found
        gc_was_on = gc.isenabled()
        try:
            gc.disable()  # (inside the try: an exception right after it still re-enables the collector)
            state = _load_from_environment()
        except BaseException as exc:
            failure: BaseException | None = exc
        else:
            _activate(state)
            failure = None
        finally:
            if gc_was_on:
                gc.enable()
    if failure is not None:  # (said on stderr after the lock is released: stderr can block too)
        try:
            if not _own_failure(failure):
                _interrupted(failure)
                raise failure  # the application's exception (a signal handler's, KeyboardInterrupt), unchanged
            return _not_loaded(failure)
        finally:
            failure = None  # its traceback holds this frame: no cycle through it (sockguard/refusal.py)
    state.sinks.start()
    return state


def environment_settings() -> Settings:
    """The Settings of this process's configuration source: the one fixed at activation (sockguard.source) when the
    guard was activated at start-up, else the environment and working directory now. Raises ConfigError."""
    from sockguard.config import settings_from_source
    from sockguard.source import take

    found = _hook.configuration_source
    if found is None:
        found = take(os.environ, os.getcwd())
    return settings_from_source(found)


def _load_from_environment() -> State:
    """The State for the configuration file and environment; a configuration that cannot be used (ConfigError,
    a rule or value that does not parse) gives the fail-closed State. Anything else propagates to :func:`load`."""
    try:
        return state_from_settings(environment_settings())
    except ValueError as exc:  # ConfigError, RuleError, a value of the wrong shape: the configuration is broken
        return fail_closed(str(exc) if isinstance(exc, ConfigError) else f"sockguard: configuration error: {exc}")


# -- a load that failed for a reason other than the configuration (issue 18) ----------------------------------


def _own_failure(exc: BaseException) -> bool:
    """Whether a load failed because the guard's own resources did (no file descriptor left, no memory, an
    import that could not be read), rather than because of an exception the application raised into it."""
    if isinstance(exc, (MemoryError, ImportError)):
        return True
    return isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, EgressBlocked)


def _interrupted(exc: BaseException) -> None:
    """Say once that a load was interrupted by an exception that is not the guard's (it propagates unchanged)."""
    if isinstance(exc, Exception):  # not for KeyboardInterrupt / SystemExit: the process is on its way out
        CONSOLE.say(
            ("load-interrupted", type(exc)),
            f"sockguard: loading the configuration was interrupted by {exc!r}; it propagates to the application "
            "unchanged and nothing was cached: the next socket use loads the configuration again",
        )


def _not_loaded(exc: BaseException) -> State:
    """This socket event is refused (``config-unavailable``) and nothing is cached: the real handlers are put in
    place with no State in force, so the next socket event comes back to :func:`load` and tries again."""
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    detail = f"{what} while loading it"
    CONSOLE.say(
        ("load-failed", type(exc), getattr(exc, "errno", None)),
        f"sockguard: could not load the configuration ({detail}); this is not a configuration error: the socket "
        "use that needed it is blocked and the next one loads it again",
    )
    _hook.set_handlers(HANDLERS)
    _hook.install_audit_hook()
    return State(Policy(allow_loopback=False), "enforce", Sinks(None), error=detail, error_reason=CONFIG_UNAVAILABLE)


def state_from_settings(
    settings: Settings,
    *,
    observer: Callable[[dict[str, Any]], None] | None = None,
    translate: Callable[[EgressBlocked, Any], EgressBlocked] | None = None,
) -> State:
    """The one constructor of a State from :class:`~sockguard.config.Settings` (runtime, API and pytest plugin
    alike). ``observer`` is called with every event this State emits (the pytest plugin records blocks so).
    ``translate(error, sock)`` turns the exception a refusal would raise into the one to raise (the pytest plugin:
    the same refusal in pytest-socket's classes, the hint naming pytest's options); it decides nothing.
    No I/O: the decision log opens when the State is put in force (``Sinks.start``) or at its first line."""
    sinks = Sinks(settings.log, observer, log_special=settings.log_special)
    policy = settings.build_policy()
    breaker = None
    # On by default (docs/breaker.md): its defaults never trip a healthy service.
    if settings.mode != "off" and settings.breaker.get("enabled", True):
        from sockguard import addrmap
        from sockguard.breaker import Breaker

        breaker = Breaker.from_settings(settings.breaker, sinks=sinks, mode=settings.mode, names=addrmap.names_for)
    resolver = None
    if settings.mode != "off" and settings.resolver:  # pinned mode (docs/resolver.md); dnspython loads at first use
        from sockguard.resolver import Resolver

        resolver = Resolver.from_settings(settings, sinks)
    return State(
        policy, settings.mode, sinks, settings=settings, breaker=breaker, resolver=resolver, translate=translate
    )


def fail_closed(message: str) -> State:
    """A State that blocks everything (``config-error``), for a configuration that cannot be used."""
    try:
        sys.stderr.write(f"{message}\nsockguard: blocking all network traffic until the configuration is fixed\n")
    except (OSError, ValueError):  # stderr closed or broken: still block
        pass
    return State(Policy(allow_loopback=False), "enforce", Sinks(None), error=message)


def off() -> State:
    """A State that enforces nothing (the audit hook stays, as a no-op)."""
    return State(Policy(), "off", Sinks(None))


def _activate(state: State) -> None:
    # The handlers first, then the State: a thread that sees the State in force also finds the real handlers
    # (an exception landing in between leaves nothing in force, and the next event loads again).
    if state.mode == "off":
        _hook.set_handlers({})
    else:
        _hook.set_handlers(HANDLERS)
        _hook.install_audit_hook()
    active.in_force = state
    if state.mode != "off":
        _hook.watch_imports()


def install(state: State) -> State | None:
    """Put ``state`` in force process-wide; returns the previous one. Its decision log opens after the lock."""
    with _load_lock:
        previous = active.in_force
        _activate(state)
    _sync_native(state)
    state.sinks.start()
    return previous


def _sync_native(state: State | None) -> None:
    """The preload library (if this process has it) decides with the same policy (sockguard/native/bridge.py)."""
    if "LD_PRELOAD" in os.environ:
        from sockguard.native.bridge import sync

        sync(state if state is not None else current())


def restore(previous: State | None) -> None:
    """Undo :func:`install`: back to the previous state, or to the start-up
    configuration (sitecustomize), or off."""
    with _load_lock:
        if previous is not None:
            _activate(previous)
        elif _hook.activated_at_startup:
            active.in_force = None  # back to the environment's policy, loaded lazily
            _hook.set_lazy_handlers()
        else:
            _activate(off())
    _sync_native(previous)


class applied:  # (lower case: used like the function it was, ``with guard.applied(state):``)
    """Put ``state`` in force for a ``with`` block, then restore what was there before. A class, not a
    ``contextlib.contextmanager``: contextlib is one more module in every guarded process's first socket use."""

    __slots__ = ("previous", "state")

    def __init__(self, state: State) -> None:
        self.state = state
        self.previous: State | None = None

    def __enter__(self) -> State:
        self.previous = install(self.state)
        return self.state

    def __exit__(self, *exc: object) -> None:
        restore(self.previous)


def _after_fork_in_child() -> None:
    global _load_lock
    _load_lock = _thread.allocate_lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
