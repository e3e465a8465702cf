"""The aiohttp client: one request is ``connector.connect(req)`` (from the pool or new), ``req.send(conn)`` and
``resp.start(conn)``; a redirect is the same three again in ``ClientSession._request``'s loop.

* ``BaseConnector.connect``: through a proxy (``req.proxy``) the target is decided before the connection to the
  proxy is made; the request event begins here, so a hop refused at connect time still has one.
* ``ClientRequest.send``: a Host header naming another host than the URL is decided before the head is written.
* ``ClientResponse.start``: the status; the event ends.

Each wrapper is a plain function that decides and returns aiohttp's own coroutine when the request is not
observed; only an observed request pays for an ``async`` wrapper.
"""

from __future__ import annotations

from sockguard import active
from sockguard.http.checks import check_host, check_target
from sockguard.http.events import DEFAULT_PORTS, REDIRECT_STATUSES, begin, end, wanted
from sockguard.http.patching import patch_method

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from sockguard.http.events import Request

KEY = "_sockguard_request"


def patch_connector(module: Any) -> None:
    patch_method(module.BaseConnector, "connect", _connect)


def patch_reqrep(module: Any) -> None:
    patch_method(module.ClientRequest, "send", _send)
    patch_method(module.ClientResponse, "start", _start)


def _stash(owner: Any, record: Request) -> bool:
    """Carry the record on aiohttp's request / response object (False if it cannot hold one: no event then)."""
    try:
        owner.__dict__[KEY] = record
    except AttributeError:
        return False
    return True


def _unstash(owner: Any) -> Request | None:
    try:
        return owner.__dict__.pop(KEY, None)
    except AttributeError:
        return None


def _connect(original: Any) -> Any:
    def connect(self: Any, req: Any, *args: Any, **kwargs: Any) -> Any:
        state = active.in_force or active.current()
        if state.mode == "off":
            return original(self, req, *args, **kwargs)
        url = req.url
        scheme = url.scheme
        level = wanted(state)
        record = None
        if level:
            proxy = req.proxy
            via = f"{proxy.host}:{proxy.port}" if proxy is not None else None
            target = url.raw_path_qs if hasattr(url, "raw_path_qs") else url.raw_path
            record = begin(state, level, "aiohttp", req.method, scheme, url.host or "", url.port, target, via)
            if not _stash(req, record):
                record = None
        try:
            if req.proxy is not None:
                check_target(state, url.raw_host or "", url.port or DEFAULT_PORTS.get(scheme), scheme,
                             tunnel=req.is_ssl())  # fmt: skip
        except BaseException as exc:
            if record is not None:
                end(record, error=exc)
            raise
        if record is None:
            return original(self, req, *args, **kwargs)
        return _observed_connect(original(self, req, *args, **kwargs), record)

    return connect


async def _observed_connect(connecting: Any, record: Request) -> Any:
    try:
        return await connecting
    except BaseException as exc:
        end(record, error=exc)
        raise


def _send(original: Any) -> Any:
    def send(self: Any, conn: Any) -> Any:
        record = _unstash(self)
        if self.method == "CONNECT":  # aiohttp's own tunnel request: decided in connect
            return original(self, conn)
        state = active.in_force or active.current()
        if state.mode != "off":
            hosts = self.headers.getall("Host", ())
            if hosts:
                url = self.url
                try:
                    for host in hosts:
                        check_host(state, host, url.raw_host or "", url.port, url.scheme)
                except BaseException as exc:
                    if record is not None:
                        end(record, error=exc)
                    raise
        if record is None:
            return original(self, conn)
        return _observed_send(original(self, conn), record)

    return send


async def _observed_send(sending: Any, record: Request) -> Any:
    try:
        response = await sending
    except BaseException as exc:
        end(record, error=exc)
        raise
    _stash(response, record)
    return response


def _start(original: Any) -> Any:
    def start(self: Any, connection: Any) -> Any:
        record = _unstash(self)
        if record is None:
            return original(self, connection)
        transport = getattr(connection, "transport", None)
        peer = transport.get_extra_info("peername") if transport is not None else None
        if isinstance(peer, tuple) and len(peer) >= 2:
            record.peer = (peer[0], peer[1])
        return _observed_start(original(self, connection), self, record)

    return start


async def _observed_start(starting: Any, response: Any, record: Request) -> Any:
    try:
        result = await starting
    except BaseException as exc:
        end(record, error=exc)
        raise
    status = response.status
    end(record, status, location=response.headers.get("Location") if status in REDIRECT_STATUSES else None)
    return result
