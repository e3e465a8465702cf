"""Loading and switching the policy in force.

Builds :class:`~sockguard.active.State` objects from settings (the one constructor, :func:`state_from_settings`,
used by the runtime, the API and the pytest plugin alike) and puts one in force: the audit-hook handlers
(sockguard.floor) into sockguard._hook's table, and post-import hooks that put the socket-module wrappers
(sockguard.wrappers) onto ``socket`` and adapt the libraries of ``_hook.INTEGRATIONS``. A process activated at start-up
(sitecustomize, ``sockguard run``) loads its configuration here at the first socket event.
"""

from __future__ import annotations

import _thread
import os
import sys
from contextlib import contextmanager

from sockguard import _hook, active
from sockguard.active import State
from sockguard.errors import ConfigError
from sockguard.floor import HANDLERS
from sockguard.policy import Policy
from sockguard.sinks import Sinks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from sockguard.config import Settings

__all__ = ["State", "applied", "current", "fail_closed", "install", "load", "restore", "state_from_settings"]

current = active.current
_load_lock = _thread.allocate_lock()


def load() -> State:
    """The State in force, loading the configuration (file + environment) if there is none yet."""
    with _load_lock:
        state = active.in_force
        if state is None:
            state = _load_from_environment()
            _activate(state)
    return state


def _load_from_environment() -> State:
    try:
        from sockguard.config import load_settings

        return state_from_settings(load_settings())
    except ConfigError as exc:
        return fail_closed(str(exc))
    except Exception as exc:  # never let a loader bug turn enforcement off
        return fail_closed(f"unexpected error loading the configuration: {exc!r}")


def state_from_settings(settings: Settings, *, observer: Callable[[dict[str, Any]], None] | None = None) -> State:
    """The one constructor of a State from :class:`~sockguard.config.Settings` (runtime, API and pytest plugin
    alike). ``observer`` is called with every event this State emits (the pytest plugin records blocks so)."""
    sinks = Sinks(settings.log, observer)
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
    return State(policy, settings.mode, sinks, settings=settings, breaker=breaker, resolver=resolver)


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
    active.in_force = state
    if state.mode == "off":
        _hook.set_handlers({})
    else:
        _hook.set_handlers(HANDLERS)
        _hook.install_audit_hook()
        _hook.watch_imports()


def install(state: State) -> State | None:
    """Put ``state`` in force process-wide; returns the previous one."""
    with _load_lock:
        previous = active.in_force
        _activate(state)
    _sync_native(state)
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


@contextmanager
def applied(state: State) -> Iterator[State]:
    """Put ``state`` in force for a ``with`` block, then restore what was there before."""
    previous = install(state)
    try:
        yield state
    finally:
        restore(previous)


def _after_fork_in_child() -> None:
    global _load_lock
    _load_lock = _thread.allocate_lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
