"""Request-level decisions: what a request *names*, decided before a byte of it is sent.

The socket layer decides the address a client connects to. Three things on top of that connection can name
another host, and each is decided here as a destination of its own:

* the ``Host`` header (HTTP/2 ``:authority``): a request on a connection to an allowed address whose Host names
  another host is domain fronting, and the server (a CDN, a reverse proxy) routes it by that name;
* the TLS SNI name: ``server_hostname`` given to ``SSLContext.wrap_socket`` / ``wrap_bio`` must be allowed;
* a proxy's target: the CONNECT target, or the host of an absolute-form request (``GET http://host/``) -- with a
  proxy the socket layer only sees the proxy.

A name is decided by the name rules (nothing is resolved: no DNS leaves for it), an address as a connect to it
would be. A Host equal to the connection's own host is not decided again (its lookup and connect were). Refusals
go through ``sockguard.refusal.refuse`` (logged, EgressBlocked raised; monitor mode logs and lets it go).
"""

from __future__ import annotations

from sockguard import active
from sockguard.canonical import canonical_host
from sockguard.events import record_allowed
from sockguard.refusal import refuse
from sockguard.rules import split_host_port

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from sockguard.active import State

#: Operation names in decision events and EgressBlocked.operation
HOST_HEADER = "host-header"
PROXY_REQUEST = "proxy-request"  # an absolute-form request to a proxy
TUNNEL = "tunnel"  # CONNECT (or SOCKS) through a proxy
SNI = "sni"

_MEMO_MAX = 1024
_authorities: dict[Any, tuple[str, int | None]] = {}


def authority(value: Any) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` (a Host header value, bytes or str) -> (host, port).
    Memoised: the same few values come back on every request. A value that does not parse is returned whole as
    the host, which then fails as an invalid host (never silently passes)."""
    found = _authorities.get(value) if value.__class__ in (bytes, str) else None
    if found is None:
        text = bytes(value).decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)
        text = text.strip()
        try:
            host, port_text = split_host_port(text)
        except ValueError:
            host, port_text = text, None
        port = int(port_text) if port_text and _digits(port_text) and len(port_text) <= 5 else None
        if port_text and port is None:  # "evil.test:x": not a port the guard can reason about
            host = text
        found = (host, port)
        if isinstance(value, (bytes, str)):
            if len(_authorities) >= _MEMO_MAX:
                _authorities.clear()
            _authorities[value] = found
    return found


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also says yes to "²", which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def own_host_with_port_out_of_range(host: str, own_host: Any) -> bool:
    """Whether a Host value that :func:`authority` could not split is the connection's own host with a port of
    digits past 65,535 (``127.0.0.1:123456``: httpx writes the URL's port into Host as it is, and the connect to
    that URL fails on its own, as it would unguarded). Only digits: ``own.test:@evil.test`` names no port, and a
    lenient server may read another host out of it, so it stays decided whole (an invalid host)."""
    try:
        named, port_text = split_host_port(host)
    except ValueError:
        return False
    return port_text is not None and _digits(port_text) and same_host(named, own_host)


def host_text(value: Any) -> str:
    """A host as an exact ``str`` of its own characters or bytes: comparisons then run ``str``'s methods, never a
    subclass's (one whose ``__eq__`` says yes to every name would pass any Host header as the connection's own)."""
    cls = value.__class__
    if cls is str:
        return value  # type: ignore[no-any-return]
    if issubclass(cls, str):
        return str.__str__(value)
    if issubclass(cls, (bytes, bytearray, memoryview)):
        return memoryview(value).tobytes().decode("latin-1")
    return str.__str__(str(value))


def same_host(a: Any, b: Any) -> bool:
    """Whether two host texts name the same host (case and one trailing dot aside)."""
    a, b = host_text(a), host_text(b)
    if a == b:
        return True
    return a.lower().rstrip(".") == b.lower().rstrip(".").strip("[]")


def decide(state: State, host: str, port: int | None, operation: str, protocol: str) -> None:
    """Decide ``host:port`` as a destination named by a request (``operation``): raises EgressBlocked (monitor
    mode: logs would-block and returns)."""
    decision, name = state.lookup(host, port)
    address = None
    if decision.allowed and name is None:  # a numeric host: decided as a connect to it would be
        address = canonical_host(host)
        decision = state.address(address, port)
    if not decision.allowed:
        error = refuse(state, decision, operation, protocol, None if address else host, port, address, depth=2)
        if error is not None:
            raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)
    elif state.sinks.wants_allow():
        record_allowed(state, decision, operation, protocol, name, port, address, 2)


def check_host(state: State, value: Any, own_host: Any, port: int | None, protocol: str) -> bool:
    """A Host header (or ``:authority``) ``value`` on a connection made for ``own_host``: decided when it names
    another host (then True). ``port``: the connection's port, used when the value has none."""
    found = _authorities.get(value) if value.__class__ in (bytes, str) else None
    host, named_port = found if found is not None else authority(value)
    if not host or same_host(host, own_host):
        return False  # no host named (an empty Host), or the connection's own (decided by its lookup and connect)
    if named_port is None and own_host_with_port_out_of_range(host, own_host):
        return False  # the connection's own host, whatever digits follow it (as for any other port it names)
    decide(state, host, named_port if named_port is not None else port, HOST_HEADER, protocol)
    return True


def check_target(state: State, host: Any, port: int | None, scheme: str, *, tunnel: bool) -> None:
    """A request sent through a proxy to ``host:port``: CONNECT / SOCKS (``tunnel``) or absolute-form."""
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("latin-1")
    host = str(host)
    if host.startswith("["):
        host = host[1:-1] if host.endswith("]") else host
    decide(state, host, port, TUNNEL if tunnel else PROXY_REQUEST, scheme)


def plain_hostname(server_hostname: Any) -> Any:
    """``server_hostname`` as an exact ``str`` or ``bytes`` holding the same characters or bytes: ``ssl`` encodes it
    by calling its methods (``.encode("idna")``, ``.decode("ascii")``), which a subclass can make answer another name
    than the one decided. Anything else is returned as it is (the lookup refuses it as an invalid host)."""
    cls = server_hostname.__class__
    if cls is str or cls is bytes:
        return server_hostname
    if issubclass(cls, str):
        return str.__str__(server_hostname)
    if issubclass(cls, (bytes, bytearray, memoryview)):
        return memoryview(server_hostname).tobytes()
    return server_hostname


def check_sni(server_hostname: Any, sock: Any = None) -> Any:
    """The SNI name a TLS client is about to send must be allowed, whatever address the socket is connected to
    (a fronted or SNI-routed server picks the backend by it). Decided before the ClientHello is written. An
    address as ``server_hostname`` is not sent as SNI (Python sends none for an IP) and was decided at connect.
    Returns the exact ``str``/``bytes`` that was decided (:func:`plain_hostname`): the caller hands *that* to ssl."""
    server_hostname = plain_hostname(server_hostname)
    state = active.in_force or active.current()
    if state.mode == "off":
        return server_hostname
    port = address = None
    if sock is not None:
        try:
            peer = sock.getpeername()
            address, port = peer[0], peer[1]
        except (OSError, AttributeError, TypeError, IndexError, ValueError):
            pass  # not connected yet (or not an INET socket): the name is decided for any port
    decision, name = state.lookup(server_hostname, port)
    if decision.allowed:
        if name is not None and state.sinks.wants_allow():
            record_allowed(state, decision, SNI, "tls", name, port, address, 2)
        return server_hostname
    error = refuse(state, decision, SNI, "tls", server_hostname, port, address, depth=2)
    if error is not None:
        raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)
    return server_hostname


def current_state() -> State | None:
    """The State in force, or None when the guard is off (hooks then call straight through)."""
    state = active.in_force or active.current()
    return None if state.mode == "off" else state
