"""The ``request`` event: one per HTTP request, whichever client sent it and whether or not its connection is new.

A client hook calls :func:`wanted` when a request starts; 0 means no sink takes request events and the hook does
nothing more (no stack walk, no clock, no formatting). Otherwise :func:`begin` makes a :class:`Request` record and
:func:`end` turns it into the event when the response head arrives (or the request fails) and sends it through
``sockguard.events.emit``, the one path to the sinks -- or, when the JSON-lines file is the only sink that wants
it, straight to the file as allowed decisions go (``Sinks.write_request``: no event dict, no message text, and a
file write cannot recurse, so emit's re-entrancy guard has nothing to guard).

Redirects: a client that follows a redirect sends the next request from the same thread (or asyncio task), so
when a response is a redirect the URL it points at is kept in a context variable; the next request in that
context to that URL is hop ``n + 1`` with the previous URL. This needs nothing from the client's own redirect
code, so it is the same for urllib, requests, urllib3, httpx and aiohttp (and for code that follows a redirect by
hand).
"""

from __future__ import annotations

import contextvars
import os
import sys
import time

from sockguard import logfile
from sockguard.accelerator import accelerator
from sockguard.active import State
from sockguard.caller import find_caller
from sockguard.events import ALLOWED_LEVEL, REQUEST_FIELDS, _emitting, correlation_id, emit, pid

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

#: (scheme, host, port, path) the last redirect in this context points at, its hop number, and the URL it came from.
_redirect: contextvars.ContextVar[tuple[tuple[str, str, int | None, str], int, str] | None] = contextvars.ContextVar(
    "sockguard_redirect", default=None
)


class Request:
    """One request in flight: what :func:`end` needs to write its event. ``fixed`` holds the fields that repeat for
    every request to one path (``client, method, scheme, host, port, path, proxy``): the JSON-lines sink encodes
    them once."""

    __slots__ = ("caller", "cid", "fixed", "hop", "level", "outer", "peer", "previous", "start", "state", "us")

    def __init__(self, state: State, level: int, fixed: tuple[Any, ...], caller: str | None) -> None:
        self.us = _time_ns() // 1000  # the event's ts, in integer microseconds
        self.start = _perf_counter_ns()
        self.state = state
        self.level = level
        self.fixed = fixed
        self.caller = caller
        self.cid = _correlation_id()
        self.hop = 0
        self.previous: str | None = None
        self.outer = False  # made by an outer layer (urllib3 over http.client): the inner hooks leave it alone
        self.peer: tuple[str, int] | None = None  # (address, port) of the connection that carried it

    @property
    def ts(self) -> float:
        return self.us / 1e6

    @property
    def url(self) -> str:
        return url_text(*self.fixed[2:6])


_time_ns = time.time_ns
_perf_counter_ns = time.perf_counter_ns
_correlation_id = correlation_id.get
_pending_redirect = _redirect.get
#: Whether this process has ever kept a redirect (set before the first ``_redirect.set`` of a URL and never
#: cleared): until then no request reads the context variable (:func:`follow_redirect` is not called).
redirected = _redirected = [False]


def _new_request(state: State, level: int, fixed: tuple[Any, ...], depth: int) -> Request:
    """A :class:`Request` whose caller is ``find_caller(depth)`` as seen from the function that calls this one.
    With the C accelerator this name is ``_accel.request_new``: the same record, made without a Python frame."""
    return Request(state, level, fixed, find_caller(depth + 1))


new_request = _new_request


def wanted(state: State) -> int:
    """The level request events go out at, or 0 when no sink takes them (``http_events = false``, or neither the
    JSON-lines file nor the logger at that level). Asked once per request: a few attribute reads."""
    settings = state.settings
    if settings is None:
        level = ALLOWED_LEVEL
    elif settings.http_events is False:
        return 0
    else:
        level = settings.http_log_level
    if not state.sinks.wants_requests(level) or _emitting.active:
        return 0  # (emitting: a log handler's own request is checked, never logged again)
    return level


def fixed_fields(
    state: State,
    client: str,
    method: str,
    scheme: str,
    host: str,
    port: int | None,
    target: str,
    proxy: str | None = None,
) -> tuple[Any, ...]:
    """The fields of a request event that repeat for every request to one path (``REQUEST_FIXED`` but the
    address and rule): ``target`` is the request target as sent (its query string is dropped unless
    ``log_query = true``). A hook that sends many requests alike may keep this and pass it to :func:`start`."""
    settings = state.settings
    if (settings is not None and settings.log_query) or (target[:1] == "/" and "?" not in target and "#" not in target):
        path = target
    else:
        known = _paths.get(target)
        if known is None:
            path = strip_query(target)
            if target.__class__ is str:
                if len(_paths) >= 1024:
                    _paths.clear()
                _paths[target] = path
        else:
            path = known
    return (client, method, scheme, host, port, path, proxy)


_paths: dict[str, str] = {}


def begin(
    state: State,
    level: int,
    client: str,
    method: str,
    scheme: str,
    host: str,
    port: int | None,
    target: str,
    proxy: str | None = None,
) -> Request:
    """A request is about to be sent: note what, from where, and when. ``target`` is the request target as sent
    (its query string is dropped unless ``log_query = true``)."""
    return start(state, level, fixed_fields(state, client, method, scheme, host, port, target, proxy), 4)


def start(state: State, level: int, fixed: tuple[Any, ...], depth: int = 3) -> Request:
    """:func:`begin` with the fields already made (:func:`fixed_fields`). ``depth``: the caller search starts
    that many frames above this function (the hook's frame at 2 for a hook that calls this directly). A hook on
    a hot path may call ``new_request(..., depth)`` itself and, if ``redirected[0]``, :func:`follow_redirect`."""
    record = new_request(state, level, fixed, depth)
    if _redirected[0]:
        follow_redirect(record)
    return record


def follow_redirect(record: Request) -> None:
    """A request that follows the redirect pending in this context is its next hop (see the module's text)."""
    pending = _pending_redirect()
    if pending is not None:
        _redirect.set(None)
        fixed = record.fixed
        if pending[0] == _key(fixed[2], fixed[3], fixed[4], fixed[5]):
            record.hop, record.previous = pending[1], pending[2]


def end(
    record: Request,
    status: int | None = None,
    error: BaseException | None = None,
    location: Any = None,
) -> None:
    """The response head arrived (``status``) or the request failed (``error``): emit the event. A value it cannot
    describe does not break the request it describes (reported once on stderr); an exception a signal handler
    raises meanwhile is the application's and propagates (issue 18: nothing here may swallow one)."""
    try:
        if error is None and _request_end is not None and _request_end(record, status):
            return  # (the common case, done by the C accelerator: see request_end in native/sg_accel.c)
        elapsed = (_perf_counter_ns() - record.start) // 1000  # microseconds
        state = record.state
        peer = record.peer
        address = rule = None
        if peer is not None:
            address = peer[0]
            last = _last_rule[0]
            if last[0] is state and last[1] is address and peer[1].__class__ is int and last[2] == peer[1]:
                rule = last[3]  # (the same connection's peer as the last request's: keep-alive)
            else:
                rule = _rule(state, address, peer[1])
        sinks = state.sinks
        level = record.level
        if error is None:
            if status in REDIRECT_STATUSES and location:
                _remember_redirect(record, location)
            elif record.hop == 0 and not sinks.beyond_file(level):  # the common case: the JSON-lines file alone
                sinks.write_request_ok(record.us, record.fixed, address, rule, status, elapsed, record.caller,
                                       record.cid)  # fmt: skip
                return
            reason = error_name = None
        else:
            error_name = type(error).__name__
            reason = blocked_reason(error)
            if record.previous is not None:  # a client that retries the hop: the retry is that hop again
                fixed = record.fixed
                _redirected[0] = True
                _redirect.set((_key(fixed[2], fixed[3], fixed[4], fixed[5]), record.hop, record.previous))
        fixed = (*record.fixed, address, rule)
        tail = (status, error_name, reason, elapsed / 1000, record.hop, record.previous, record.caller, record.cid)
        if sinks.beyond_file(level):
            event = dict(zip(REQUEST_FIELDS, ("request", record.ts, pid[0], *fixed, *tail), strict=True))
            emit(sinks, event, message_text(event), level)
        else:  # the JSON-lines file alone: no event dict, no message text (a file write cannot recurse)
            sinks.write_request(record.ts, fixed, tail)
    except (TypeError, ValueError, LookupError, AttributeError) as exc:  # an odd header, URL or peer value
        _failed(exc)


#: (State, address, port, rule) of the last request's peer: keep-alive sends many requests over one connection.
_last_rule: list[tuple[Any, Any, Any, Any]] = [(None, None, None, None)]


def _rule(state: State, address: Any, port: Any) -> str | None:
    """The rule of the decision the connection to (address, port) got (cached per State); None for an odd peer."""
    try:
        rule = state.address(address, port).rule
    except (TypeError, ValueError, LookupError):  # an odd peer: no rule to name
        return None
    if address.__class__ is str and port.__class__ is int:  # (a State's decision for them never changes)
        _last_rule[0] = (state, address, port, rule)
    return rule


_failures: list[str] = []


def _failed(exc: Exception) -> None:
    if not _failures:
        _failures.append(repr(exc))
        try:
            sys.stderr.write(f"sockguard: warning: a request event could not be written ({exc!r}); requests are "
                             "still checked\n")  # fmt: skip
        except (OSError, ValueError):  # stderr closed or broken
            pass


def message_text(event: dict[str, Any]) -> str:
    """The line operators grep: ``sockguard allowed request GET https://api.example/v2/orders -> 203.0.113.7
    200 in 84 ms (called from app.orders:fetch:42)``."""
    url = url_text(event["scheme"], event["host"], event["port"], event["path"])
    blocked = event["reason"] is not None
    text = f"sockguard {'blocked' if blocked else 'allowed'} request {event['method']} {url}"
    if event["redirect_hop"]:
        text += f" (redirect {event['redirect_hop']} from {event['redirected_from']})"
    if event["proxy"]:
        text += f" via proxy {event['proxy']}"
    if event["address"]:
        text += f" -> {event['address']}"
    ms = event["duration_ms"]
    took = f"{ms:.0f}" if ms >= 10 else f"{ms:.1f}"
    if event["status"] is not None:
        text += f" {event['status']} in {took} ms"
    elif blocked:
        text += f": {event['reason']} ({event['error']})"
    else:
        text += f" failed ({event['error']}) after {took} ms"
    return f"{text} (called from {event['caller'] or 'unknown code'})"


def url_text(scheme: str, host: str, port: int | None, path: str) -> str:
    """``scheme://host[:port]path``, the port left out when it is the scheme's default."""
    authority = f"[{host}]" if ":" in host else host
    if port is not None and DEFAULT_PORTS.get(scheme) != port:
        authority = f"{authority}:{port}"
    return f"{scheme}://{authority}{path}"


def strip_query(target: str) -> str:
    """The path of a request target: no query string, no fragment, and for an absolute-form target (through a
    proxy) no scheme, authority or userinfo."""
    if target[:1] != "/":
        _scheme, sep, rest = target.partition("://")
        if sep:
            slash = rest.find("/")
            target = rest[slash:] if slash >= 0 else "/"
    for mark in ("?", "#"):
        cut = target.find(mark)
        if cut >= 0:
            target = target[:cut]
    return target


def blocked_reason(error: BaseException) -> str | None:
    """The reason of the EgressBlocked behind a client's error, if the request was refused by the guard."""
    from sockguard.errors import EgressBlocked

    seen = 0
    stack: list[Any] = [error]
    while stack and seen < 16:
        item = stack.pop()
        if not isinstance(item, BaseException):
            continue
        seen += 1
        if isinstance(item, EgressBlocked):
            return item.reason
        stack += [item.__cause__, item.__context__, getattr(item, "os_error", None), getattr(item, "reason", None)]
        stack += [arg for arg in item.args if isinstance(arg, BaseException)]
    return None


def _key(scheme: str, host: str, port: int | None, path: str) -> tuple[str, str, int | None, str]:
    from urllib.parse import unquote

    scheme = scheme.lower()
    return scheme, host.lower().rstrip("."), port or DEFAULT_PORTS.get(scheme), unquote(path) or "/"


def _remember_redirect(record: Request, location: Any) -> None:
    from urllib.parse import urljoin, urlsplit

    if isinstance(location, (bytes, bytearray)):
        location = bytes(location).decode("latin-1")
    try:
        parts = urlsplit(urljoin(record.url, str(location)))
        port = parts.port
    except ValueError:  # a Location the client will not follow either
        return
    if not parts.hostname:
        return
    target = _key(parts.scheme, parts.hostname, port, strip_query(parts.path or "/"))
    _redirected[0] = True
    _redirect.set((target, record.hop + 1, record.url))


def reset() -> None:
    """Forget a pending redirect in this context (tests)."""
    _redirect.set(None)


_request_end: Any = None
_accel = accelerator()
if _accel is not None:
    from sockguard.sinks import Sinks

    _accel.request_setup(
        Request,
        State,
        correlation_id,
        _last_rule,
        pid,
        vars(logfile),
        os.write,
        Sinks,
        logfile.LogFile,
        globals(),  # (its _time_ns and _perf_counter_ns: a frozen clock in their place is Python's to call)
        _new_request,
    )
    new_request = _accel.request_new
    _request_end = _accel.request_end
