"""Alerts of the breaker and fan-out detector: their text, their event, and where they are delivered.

An alert names the destination, what happened, the code that retried and the setting to fix (an
environment variable whose value mentions the destination; names only, never values). Delivered outside
the breaker's lock to the sinks (decision log, ``sockguard`` logger at ERROR) and to :func:`on_alert`
callbacks.
"""

from __future__ import annotations

import os
import sys

from sockguard.caller import find_caller, task_caller
from sockguard.events import emit, host_text, make_event, protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from sockguard.breaker import Breaker, _Dest

_callbacks: list[Callable[[dict[str, Any]], Any]] = []


def on_alert(callback: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """Call ``callback(event)`` for every alert (``event["state"]`` is "firing" or "resolved"), e.g. to page
    someone. It runs in the thread that made the attempt: keep it quick, hand slow work to a queue.
    Returns the callback, so it works as a decorator."""
    if not callable(callback):
        raise TypeError(f"sockguard.on_alert needs a callable, got {callback!r}")
    if callback not in _callbacks:
        _callbacks.append(callback)
    return callback


def remove_alert_callback(callback: Callable[[dict[str, Any]], Any]) -> None:
    if callback in _callbacks:
        _callbacks.remove(callback)


def deliver(sinks: Any, alerts: list[tuple[dict[str, Any], str, int]]) -> None:
    """Outside the breaker's lock: a log handler or callback may itself connect (and come back here)."""
    for event, message, level in alerts:
        if sinks is not None:
            emit(sinks, event, message, level)
        for callback in tuple(_callbacks):
            try:
                callback(dict(event))
            except Exception as exc:  # the application's callback: report it, keep enforcing
                try:
                    sys.stderr.write(f"sockguard: alert callback {callback!r} raised {exc!r}\n")
                except (OSError, ValueError):
                    pass


def alert_event(
    breaker: Breaker,
    key: tuple[Any, ...],
    alert: str,
    state: str,
    message: str,
    detail: str | None,
    sock: Any,
    *,
    level: int = 40,
    caller: str | None = None,
) -> tuple[dict[str, Any], str, int]:
    """One alert as an event (``"event": "alert"``), its message and level. ``key`` is (address, port), or
    ("lookup", name, port) for a blocked lookup."""
    host, port = key[-2], key[-1]
    name = breaker._name(host) if len(key) == 2 else _text(host)
    numeric = len(key) == 2 and host.__class__ is str
    event = make_event(
        kind="alert",
        operation="resolve" if len(key) == 3 else "connect",
        protocol=protocol(sock) if sock is not None else ("dns" if len(key) == 3 else "tcp"),
        host=name,
        port=port if port.__class__ is int else None,
        address=host if numeric else None,
        decision="alert",
        reason=alert,
        rule=None,
        mode=breaker.mode,
        caller=caller or find_caller(1),
        detail=detail,
    )
    event["state"] = state
    event["message"] = message
    return event, message, level


def retry_storm(
    breaker: Breaker, key: tuple[Any, Any], dest: _Dest, now: float, operation: str, sock: Any, task: Any = None
) -> tuple[dict[str, Any], str, int]:
    """The alert when ``dest`` trips the breaker: what failed, what happens next, the code, the setting.
    ``task``: the asyncio task whose connect failed, when the failure was read in a loop callback."""
    host = key[-2]
    name = host if operation == "resolve" else breaker._name(host)
    target = breaker._target(key)
    count, span = len(dest.failures), now - dest.failures[0]
    caller = find_caller(1) or (task_caller(task) if task is not None else None) or "unknown code"
    monitor = breaker.mode == "monitor"
    if operation == "resolve":
        what = f"{count} lookups in {span:.0f} s were blocked ({dest.why}); no DNS query was sent"
        then = ""
    elif dest.blocked:
        what = f"{count} attempts in {span:.0f} s were blocked ({dest.why})"
        what += "; the connections went ahead (monitor mode)" if monitor else "; no packet was sent"
        then = ""
    else:
        what = f"{count} connection attempts in {span:.0f} s failed ({dest.why})"
        then = (
            f"; further attempts {'would ' if monitor else ''}fail fast (breaker-open) for {breaker.cooldown:g} s, "
            f"then one probe goes through (the wait doubles after each failed probe, up to "
            f"{breaker.max_cooldown:g} s)"
        )
    settings = settings_naming([_text(host), name])
    source = f"it comes from {_plural(settings)}" if settings else "fix the URL/host setting that code uses"
    if dest.blocked:
        fix = f"Fix the destination: {source}" + ("; fix that setting (or the code)." if settings else ".")
        fix += " Allowlist it only if it is intended."
    else:
        fix = f"Check that the service is up; if the address is wrong, {source}."
    message = (
        f"sockguard ALERT retry storm to {target}: {what}{then}. Retrying code: {caller}. {fix} "
        f"(Alert after [breaker] threshold = {breaker.threshold} in window = {breaker.window:g} s.)"
    )
    event = alert_event(breaker, key, "retry-storm", "firing", message, dest.why, sock, caller=caller)
    event[0].update(count=count, settings=settings, operation=operation)
    return event


def _text(host: Any) -> str:
    return str(host_text(host))


def _plural(names: list[str]) -> str:
    if len(names) == 1:
        return f"the environment variable {names[0]}"
    return "the environment variables " + ", ".join(names)


def settings_naming(texts: list[str | None]) -> list[str]:
    """Environment variables whose value mentions the destination: the setting to fix. Names only,
    never values (they may hold secrets)."""
    import re

    patterns = [re.compile(rf"(?<![\w.-]){re.escape(t)}(?![\w-]|\.\w)", re.IGNORECASE) for t in texts if t]
    if not patterns:
        return []
    found = []
    for var, value in os.environ.items():
        if var.startswith("SOCKGUARD_") or len(value) > 4096:
            continue
        if any(p.search(value) for p in patterns):
            found.append(var)
    return sorted(found)[:3]
