"""Events: the shape of decision and request events, the correlation id, and the one path every event takes to
the sinks.

An event is a flat dict (``make_event``); its field order is :data:`DECISION_FIELDS`, which the JSON-lines
sink's fast path relies on (tests/test_events.py fails if a field is added to one and not the other).
:func:`emit` is the only way to a sink, and holds the only re-entrancy guard: a log handler that itself
uses the network is still checked, but its own decisions are not logged again.
"""

from __future__ import annotations

import _socket
import _thread
import os
import time
from _contextvars import ContextVar  # (contextvars.py only re-exports it)

from sockguard.caller import find_caller
from sockguard.canonical import port_number
from sockguard.rules import format_host_port

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from sockguard.policy import Decision

#: Correlation id the application can set (per task / thread via contextvars).
correlation_id: ContextVar[str | None] = ContextVar("sockguard_correlation_id", default=None)

#: The fields of a decision that stay the same for every connection to one destination, in order.
DECISION_FIXED = ("op", "proto", "host", "port", "address", "decision", "reason", "rule", "detail", "mode")
#: Every field of a decision event, in the order make_event writes them.
DECISION_FIELDS = ("event", "ts", "pid", *DECISION_FIXED, "caller", "correlation_id")
#: The fields of an HTTP request event (sockguard/http/events.py) that stay the same for every request to one URL
#: path on one connection, in order; then every field of a request event, in the order it writes them.
REQUEST_FIXED = ("client", "method", "scheme", "host", "port", "path", "proxy", "address", "rule")
#: ... and the ones that are this request's own.
REQUEST_TAIL = ("status", "error", "reason", "duration_ms", "redirect_hop", "redirected_from", "caller",
                "correlation_id")  # fmt: skip
REQUEST_FIELDS = ("event", "ts", "pid", *REQUEST_FIXED, *REQUEST_TAIL)
_FIXED_PARAMS = ("operation", "protocol", "host", "port", "address", "decision", "reason", "rule", "detail", "mode")

#: The logger level of an allowed decision (README "The decision log"): routine, so DEBUG, and only when the
#: ``sockguard`` logger itself is set to DEBUG (sinks.Sinks._logger_wants): an application that logs at any level
#: of its own sees no line per connection (the JSON-lines file still records every one). Blocks log at
#: WARNING (30), alerts at ERROR (40; their "resolved" follow-up at INFO).
ALLOWED_LEVEL = 10  # logging.DEBUG

pid = [os.getpid()]  # getpid() is a system call; forks update it
os.register_at_fork(after_in_child=lambda: pid.__setitem__(0, os.getpid()))


def make_event(
    *,
    operation: str,
    protocol: str,
    host: str | None,
    port: int | None,
    address: str | None,
    decision: str,
    reason: str,
    rule: str | None,
    mode: str,
    caller: str | None,
    detail: str | None = None,
    kind: str = "decision",
) -> dict[str, Any]:
    return {
        "event": kind,
        "ts": time.time_ns() // 1000 / 1e6,  # microseconds; round(time.time(), 6) costs 5x more
        "pid": pid[0],
        "op": operation,
        "proto": protocol,
        "host": host,
        "port": port,
        "address": address,
        "decision": decision,
        "reason": reason,
        "rule": rule,
        "detail": detail,
        "mode": mode,
        "caller": caller,
        "correlation_id": correlation_id.get(),
    }


def decision_event(fixed: tuple[Any, ...], caller: str | None) -> dict[str, Any]:
    """make_event from the per-destination fields in ``DECISION_FIXED`` order."""
    return make_event(**dict(zip(_FIXED_PARAMS, fixed, strict=True)), caller=caller)


_PROTOCOLS = {1: "tcp", 2: "udp", 3: "raw"}
_type_of = _socket.socket.type.__get__  # the C getter: no enum conversion


def protocol(sock: Any) -> str:
    """ "tcp", "udp", "raw" for a socket; "dns" for a lookup (None); a string is passed through (a connect made
    by C code outside the socket module names its protocol itself)."""
    if sock is None:
        return "dns"
    if sock.__class__ is str:
        return sock
    try:
        kind = _type_of(sock) & 0xF
    except (TypeError, AttributeError):  # not a _socket.socket (gevent's Python socket class)
        kind = getattr(sock, "type", 0) & 0xF
    return _PROTOCOLS.get(kind) or str(kind)


def host_text(host: Any) -> str | None:
    """A host as it appears in events and messages (bytes decoded, None kept)."""
    if host is None or host.__class__ is str:
        return host
    if isinstance(host, (bytes, bytearray)):
        return bytes(host).decode("ascii", "replace")
    return str(host)


class _Flag(_thread._local):
    """Per thread: inside :func:`emit`. A class default, so reading it is one attribute read (no getattr default)."""

    active = False


_emitting = _Flag()


def emit(sinks: Any, event: dict[str, Any], message: str, level: int) -> None:
    """Send one event to ``sinks``. The one re-entrancy guard: an event raised while another is being emitted
    on this thread (a logging handler that connects) is dropped, never recursed into."""
    if _emitting.active:
        return
    _emitting.active = True
    try:
        sinks.emit(event, message, level)
    finally:
        _emitting.active = False


def emitting() -> bool:
    """Whether this thread is inside :func:`emit` (a sink's own network use is not logged again)."""
    return _emitting.active


def record_allowed(
    state: Any, decision: Decision, operation: str, sock: Any, host: Any, port: Any, address: str | None, depth: int
) -> None:
    """Log an allowed decision, if a sink wants allow events. ``depth``: where the caller search starts."""
    sinks = state.sinks
    if not sinks.wants_allow() or emitting():
        return
    caller = find_caller(depth + 1)
    text = host_text(host)
    fixed = (operation, protocol(sock), text, port_number(port), address, "allow", decision.reason,
             decision.rule, decision.detail, state.mode)  # fmt: skip
    if sinks.beyond_file(ALLOWED_LEVEL):
        message = f"sockguard allowed {operation} to {format_host_port(text or address, port)}"
        emit(sinks, decision_event(fixed, caller), message, ALLOWED_LEVEL)
    else:  # the JSON-lines file alone: no event dict, no message text, and a file write cannot recurse
        sinks.write_decision(fixed, caller)
