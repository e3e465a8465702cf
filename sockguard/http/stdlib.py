"""``http.client``: the HTTP layer of urllib.request, xmlrpc, and of urllib3 (so requests) underneath.

``HTTPConnection.endheaders`` is where a request leaves: the request line and headers are in ``self._buffer``
and nothing has been written yet (for a new connection, not even the connect). There the Host headers and an
absolute-form target are decided, and the request event begins. ``getresponse`` ends it with the status.
``connect`` decides a CONNECT target (``set_tunnel``) before the connection to the proxy is made -- unless the
target or the tunnel's headers are ones the client itself refuses (a current http.client, and urllib3's copy of
its ``_tunnel``, raise ValueError for control characters before writing the CONNECT line): then the client's own
error must be what the application sees, so the target is decided in ``_tunnel``, on the write of the CONNECT
line, if the client gets that far.
"""

from __future__ import annotations

import re

from sockguard import active
from sockguard.http import events
from sockguard.http.checks import authority, check_host, check_target, same_host
from sockguard.http.events import REDIRECT_STATUSES, end, fixed_fields, follow_redirect, redirected, start, wanted
from sockguard.http.patching import patch_method

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from sockguard.active import State
    from sockguard.http.events import Request

KEY = "_sockguard_request"


def patch(module: Any) -> None:
    cls = module.HTTPConnection
    cls._sockguard_request = None  # the request in flight on a connection (a class default: one attribute read)
    cls._sockguard_clean = None  # (host, tunnel host, header lines) of the last head found clean
    cls._sockguard_fixed = None  # (request line, what else the event's fixed fields come from, those fields)
    cls._sockguard_tunnel_undecided = False  # a CONNECT target left to the write of the CONNECT line
    cls._sockguard_peer = None  # (socket, its (address, port)): one getpeername per socket
    patch_method(cls, "endheaders", _endheaders)
    patch_method(cls, "getresponse", _getresponse)
    patch_method(cls, "connect", _connect)
    patch_method(cls, "_tunnel", tunnel_hook)


def scheme_of(conn: Any) -> str:
    return "https" if getattr(conn, "default_port", 80) == 443 else "http"


def peer_of(conn: Any) -> tuple[str, int] | None:
    """(address, port) of the connection's socket; one getpeername per socket (keep-alive reuses it)."""
    sock = conn.sock
    if sock is None:
        return None
    cached = conn._sockguard_peer
    if cached is not None and cached[0] is sock:
        return cached[1]
    try:
        name = sock.getpeername()
    except (OSError, AttributeError, TypeError, ValueError):
        return None
    peer = (name[0], name[1]) if isinstance(name, tuple) and len(name) >= 2 else None
    conn._sockguard_peer = (sock, peer)
    return peer


def _own(conn: Any) -> tuple[str, int | None]:
    """The host (and port) the connection was made for: the CONNECT target through a tunnel."""
    tunnel = conn._tunnel_host
    if tunnel:
        return tunnel, conn._tunnel_port
    return conn.host, conn.port


def _check_head(state: State, conn: Any, buffer: list[Any]) -> None:
    """Every Host header in the buffered head, and a target that is not origin-form, before anything is sent.
    A connection remembers the last head whose Host headers all named its own host (``_sockguard_clean``): the
    endheaders hook does not call this for the next request with the same headers (keep-alive, one client)."""
    first = buffer[0]
    space = first.find(b" ")
    own: Any = None
    if first[space + 1 : space + 2] != b"/":
        own = _check_request_line(state, conn, first)
    decided = own is not None
    for line in buffer:  # (the request line too: a method spelt "Host:" is decided as what it would name)
        if line[:1] in b"Hh" and line[1:4].lower() == b"ost":
            # http.client accepts "Host :" (a name with trailing blanks), which lenient servers read as Host
            name, _, value = line.partition(b":")
            if name.rstrip().lower() == b"host":
                if own is None:
                    own = _own(conn)
                decided = check_host(state, value, own[0], own[1], scheme_of(conn)) or decided
    if not decided:
        conn._sockguard_clean = (conn.host, conn._tunnel_host, buffer[1:])


def _check_request_line(state: State, conn: Any, first: Any) -> tuple[str, int | None] | None:
    """An absolute-form target (``GET http://host/`` to a proxy) or an authority-form one (``CONNECT host:443``)
    names the host the request is for: decided unless it is the connection's own. Returns that host (the one a
    Host header may name without being decided again)."""
    parts = bytes(first).split(b" ")
    if len(parts) < 2 or parts[1] == b"*":
        return None
    method, target = parts[0], parts[1].decode("latin-1")
    own_host, _own_port = _own(conn)
    if method == b"CONNECT":
        named, named_port = authority(target)
        if not same_host(named, own_host):
            check_target(state, named, named_port, scheme_of(conn), tunnel=True)
        return named, named_port
    scheme, port, host = split_url(target)
    if host is None:  # neither origin- nor absolute-form ("GET evil.test:80"): whatever it names is decided
        host, port = authority(target)
        scheme = scheme_of(conn)
    if not same_host(host, own_host):
        check_target(state, host, port, scheme, tunnel=False)
    return host, port


def split_url(target: str) -> tuple[str, int | None, str | None]:
    """(scheme, port, host) of an absolute URL; host None if ``target`` is not one. A URL whose authority does
    not parse gives the whole authority as the host (refused as an invalid host, never passed)."""
    if "://" not in target:
        return "http", None, None
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(target)
    except ValueError:  # "http://[::1" and the like
        return target.partition("://")[0].lower() or "http", None, target
    scheme = parts.scheme.lower() or "http"
    try:
        port = parts.port
        host = parts.hostname
    except ValueError:
        return scheme, None, parts.netloc
    if not host:
        return scheme, None, parts.netloc or target
    return scheme, port if port is not None else (443 if scheme in ("https", "wss") else 80), host


_request_lines: dict[Any, tuple[str, str]] = {}


def _begin(state: State, level: int, conn: Any, first: Any) -> Request:
    """The request event of the head in ``conn._buffer`` (``first`` its request line) begins. Its fixed fields are
    kept on the connection (``_sockguard_fixed``: what they were made from, and they) for the next request with the
    same request line to the same place."""
    memo = conn._sockguard_fixed
    key = (first, state, conn.host, conn._tunnel_host, conn.port, conn._tunnel_port, conn.default_port)
    if memo is not None and memo[0] == key:
        record = events.new_request(state, level, memo[1], 2)  # (the caller search from the endheaders hook on)
        if redirected[0]:
            follow_redirect(record)
        return record
    fixed = _fixed(state, conn, first)
    if first.__class__ is bytes:
        conn._sockguard_fixed = (key, fixed)
    return start(state, level, fixed)


def _fixed(state: State, conn: Any, first: Any) -> tuple[Any, ...]:
    parsed = _request_lines.get(first)
    if parsed is None:
        method, _, rest = bytes(first).decode("latin-1").partition(" ")
        parsed = (method, rest.rpartition(" ")[0] or rest)
        if first.__class__ is bytes:
            if len(_request_lines) >= 1024:
                _request_lines.clear()
            _request_lines[first] = parsed
    method, target = parsed
    scheme = scheme_of(conn)
    proxy = None
    host, port = _own(conn)
    if conn._tunnel_host:
        proxy = f"{conn.host}:{conn.port}"
    elif target[:1] != "/":
        url_scheme, url_port, url_host = split_url(target)
        if url_host is not None:
            scheme, host, port = url_scheme, url_host, url_port
            if not same_host(url_host, conn.host):
                proxy = f"{conn.host}:{conn.port}"
    return fixed_fields(state, "http.client", method, scheme, host, port, target, proxy)


def _endheaders(original: Any) -> Any:
    def endheaders(self: Any, message_body: Any = None, *, encode_chunked: bool = False) -> Any:
        state = active.in_force or active.current()
        if state.mode == "off":
            return original(self, message_body, encode_chunked=encode_chunked)
        try:
            buffer = self._buffer
            if buffer:
                record = self._sockguard_request
                if record is None:
                    level = wanted(state)
                    if level:
                        self._sockguard_request = _begin(state, level, self, buffer[0])
                elif not record.outer:  # a request whose response was never read: this one replaces it
                    level = wanted(state)
                    self._sockguard_request = _begin(state, level, self, buffer[0]) if level else None
                clean = self._sockguard_clean
                if (
                    clean is None
                    or clean[2] != buffer[1:]
                    or clean[0] is not self.host
                    or clean[1] is not self._tunnel_host
                    or buffer[0].partition(b" ")[2][:1] != b"/"  # not origin-form: the target names a host
                ):
                    _check_head(state, self, buffer)
            if encode_chunked:
                return original(self, message_body, encode_chunked=True)
            return original(self, message_body)  # (a positional call: cheaper, and this runs per request)
        except BaseException as exc:
            record = self._sockguard_request
            if record is not None and not record.outer:
                self._sockguard_request = None
                end(record, error=exc)
            raise

    return endheaders


def _getresponse(original: Any) -> Any:
    def getresponse(self: Any) -> Any:
        record = self._sockguard_request
        if record is None:
            return original(self)
        peer = self._sockguard_peer  # (peer_of's memo, inline: keep-alive reuses the socket)
        record.peer = peer[1] if peer is not None and peer[0] is self.sock else peer_of(self)  # now: a response
        # that closes the connection drops the socket
        if record.outer:
            return original(self)
        self._sockguard_request = None
        try:
            response = original(self)
        except BaseException as exc:
            end(record, error=exc)
            raise
        status = response.status
        end(record, status, location=response.getheader("location") if status in REDIRECT_STATUSES else None)
        return response

    return getresponse


def check_tunnel(conn: Any) -> None:
    """A connection about to be made through a proxy tunnel (``set_tunnel``): its CONNECT target is decided
    before the connection to the proxy is made, or, when the client may refuse the tunnel itself, when the
    CONNECT line is written (:func:`tunnel_hook`)."""
    tunnel = getattr(conn, "_tunnel_host", None)
    if tunnel:
        state = active.in_force or active.current()
        if state.mode != "off":
            if _client_may_refuse(conn):
                conn._sockguard_tunnel_undecided = True
                return
            conn._sockguard_tunnel_undecided = False
            check_target(state, tunnel, conn._tunnel_port, scheme_of(conn), tunnel=True)


# What http.client's _tunnel refuses with ValueError before it writes a byte (CPython 3.11.16+, 3.12.14+, 3.13;
# urllib3 2.8 carries the same checks for older interpreters): control characters or a space in the host, a
# header name or value that could split the CONNECT request.
_BAD_TUNNEL_HOST = re.compile("[\x00-\x20\x7f]").search
_LEGAL_HEADER_NAME = re.compile(rb"[^:\s][^:\r\n]*").fullmatch
_ILLEGAL_HEADER_VALUE = re.compile(rb"\n(?![ \t])|\r(?![ \t\n])").search


def _client_may_refuse(conn: Any) -> bool:
    """Whether the tunnel's host or headers are ones a current client refuses on its own. Only decides *when*
    the target is decided (deferring is always safe: the CONNECT line cannot be written undecided), so anything
    unusual counts."""
    host = conn._tunnel_host
    if not isinstance(host, str) or _BAD_TUNNEL_HOST(host):
        return True
    headers = getattr(conn, "_tunnel_headers", None)
    if headers:
        try:
            for name, value in headers.items():
                if not _LEGAL_HEADER_NAME(name.encode("latin-1")) or _ILLEGAL_HEADER_VALUE(value.encode("latin-1")):
                    return True
        except (AttributeError, TypeError, UnicodeError):  # not str: the client's own encode raises too
            return True
    return False


def tunnel_hook(original: Any) -> Any:
    """``_tunnel`` of a connection whose CONNECT target was left undecided (:func:`check_tunnel`): the client
    validates the tunnel and raises its own error; if it writes the CONNECT line instead, the target is decided
    first (refused: nothing is written)."""

    def _tunnel(self: Any) -> Any:
        if not self._sockguard_tunnel_undecided:
            return original(self)
        send = self.send

        def send_decided(data: Any) -> Any:
            del self.send  # the first write is the CONNECT line: decided once
            self._sockguard_tunnel_undecided = False
            state = active.in_force or active.current()
            if state.mode != "off":
                check_target(state, self._tunnel_host, self._tunnel_port, scheme_of(self), tunnel=True)
            return send(data)

        self.send = send_decided
        try:
            return original(self)
        finally:
            self.__dict__.pop("send", None)
            self._sockguard_tunnel_undecided = False

    return _tunnel


def _connect(original: Any) -> Any:
    def connect(self: Any) -> Any:
        check_tunnel(self)
        return original(self)

    return connect
