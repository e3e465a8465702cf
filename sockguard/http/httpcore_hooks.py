"""httpcore (httpx's transport), sync and async: ``ConnectionPool.handle_request`` is one request, connect included.

Before the pool picks or opens a connection: the Host header (HTTP/2 sends it as ``:authority``) is decided when
it names another host than the URL, and through a proxy pool (``HTTPProxy``, ``SOCKSProxy``: they keep
``_proxy_url``) the target is decided as a destination, since the socket layer only sees the proxy. The request
event ends when the response head is back.

The async wrapper is a plain function that decides and then returns the library's own coroutine when no sink
wants the event (no extra coroutine per request); only an observed request gets an ``async`` wrapper.
"""

from __future__ import annotations

from sockguard import active
from sockguard.http import events
from sockguard.http.checks import check_host, check_target
from sockguard.http.events import (
    DEFAULT_PORTS,
    REDIRECT_STATUSES,
    end,
    fixed_fields,
    follow_redirect,
    redirected,
    start,
    wanted,
)
from sockguard.http.patching import patch_method

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from sockguard.active import State
    from sockguard.http.events import Request


def patch_sync(module: Any) -> None:
    patch_method(module.ConnectionPool, "handle_request", _handle_request)


def patch_async(module: Any) -> None:
    patch_method(module.AsyncConnectionPool, "handle_async_request", _handle_async_request)


def _check(state: State, pool: Any, request: Any) -> None:
    url = request.url
    if getattr(pool, "_proxy_url", None) is not None:
        scheme = url.scheme.decode("latin-1")
        tunnel = scheme in ("https", "wss") or "socks" in type(pool).__name__.lower()
        check_target(state, url.host, url.port or DEFAULT_PORTS.get(scheme), scheme, tunnel=tunnel)
    for name, value in request.headers:
        if len(name) == 4 and name.lower() == b"host":  # h11 refuses a second Host; h2 sends the first
            if value != url.host:  # (httpx's own Host header is the URL's host: nothing to decide)
                scheme = url.scheme.decode("latin-1")
                check_host(state, value, url.host, url.port or DEFAULT_PORTS.get(scheme), scheme)
            break


def _begin(state: State, level: int, pool: Any, request: Any) -> Request:
    url = request.url
    proxy = getattr(pool, "_proxy_url", None)
    method, scheme, host, port, target = request.method, url.scheme, url.host, url.port, url.target
    key = None
    if (
        proxy is None
        and method.__class__ is bytes
        and scheme.__class__ is bytes
        and host.__class__ is bytes
        and (target.__class__ is bytes and (port is None or port.__class__ is int))
    ):  # (exact types only: a caller's object never keys the memo)
        key = (method, scheme, host, port, target)
        memo = _fixed[0]
        fixed = memo.get(key) if memo is not None and memo[None] is state else None
        if fixed is not None:
            record = events.new_request(state, level, fixed, 2)  # (the caller search from the hook on)
            if redirected[0]:
                follow_redirect(record)
            return record
    text = scheme.decode("latin-1")
    via = None
    if proxy is not None:
        via = f"{proxy.host.decode('latin-1')}:{proxy.port or DEFAULT_PORTS.get(proxy.scheme.decode('latin-1'))}"
    fixed = fixed_fields(state, "httpcore", method.decode("latin-1"), text, host.decode("latin-1"),
                         port or DEFAULT_PORTS.get(text), target.decode("latin-1"), via)  # fmt: skip
    if key is not None:
        memo = _fixed[0]
        if memo is None or memo[None] is not state or len(memo) >= 1024:
            memo = _fixed[0] = {None: state}  # (a new State, or full: start again; no old State is kept alive)
        memo[key] = fixed
    return start(state, level, fixed)


#: The request event's fixed fields by (method, scheme, host, port, target) as bytes, for one State (under the key
#: None): requests repeat (keep-alive), and these are the same text every time.
_fixed: list[dict[Any, Any] | None] = [None]


def _finish(record: Request, response: Any) -> None:
    stream = response.extensions.get("network_stream")
    if stream is not None:
        try:
            peer = stream.get_extra_info("server_addr")
        except (AttributeError, TypeError, KeyError, OSError):  # a stream class without it, or already closed
            peer = None
        if isinstance(peer, tuple) and len(peer) >= 2:
            record.peer = (peer[0], peer[1])
    status = response.status
    location = None
    if status in REDIRECT_STATUSES:
        location = next((v for k, v in response.headers if k.lower() == b"location"), None)
    end(record, status, location=location)


def _handle_request(original: Any) -> Any:
    def handle_request(self: Any, request: Any) -> Any:
        state = active.in_force or active.current()
        if state.mode == "off":
            return original(self, request)
        level = wanted(state)
        record = _begin(state, level, self, request) if level else None
        try:
            _check(state, self, request)
            response = original(self, request)
        except BaseException as exc:
            if record is not None:
                end(record, error=exc)
            raise
        if record is not None:
            _finish(record, response)
        return response

    return handle_request


def _handle_async_request(original: Any) -> Any:
    def handle_async_request(self: Any, request: Any) -> Any:
        state = active.in_force or active.current()
        if state.mode == "off":
            return original(self, request)
        level = wanted(state)
        if not level:
            _check(state, self, request)
            return original(self, request)
        return _observed(original, state, level, self, request)

    return handle_async_request


async def _observed(original: Any, state: State, level: int, pool: Any, request: Any) -> Any:
    record = _begin(state, level, pool, request)
    try:
        _check(state, pool, request)
        response = await original(pool, request)
    except BaseException as exc:
        end(record, error=exc)
        raise
    _finish(record, response)
    return response
