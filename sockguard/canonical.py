"""Canonical forms of what a caller hands the socket layer: addresses, ports, numeric hosts.

The guard decides on exactly what the kernel will receive. A caller's address can be a ``tuple`` subclass (a
namedtuple endpoint), a ``bytes`` host, an ``IntEnum`` or ``__index__`` port, or an object that answers differently
each time it is asked; the C layer reads such objects its own way (the tuple's own storage, the bytes buffer, a
``str`` subclass through its own ``encode``, one ``__index__`` call). So every path that hands an address to C first
turns it into :func:`c_address`'s plain tuple of exact built-in types, decides on that tuple and passes *that* tuple
on: the decision and the kernel see the same value. What cannot be turned into one is refused before C sees it, with
C's own exception where C would refuse it too.

The audit hook runs *after* C has read the address (``socket.connect`` is raised once the sockaddr is built), so it
cannot canonicalise; :func:`audited_address` says what C used, where that can still be known, and marks what cannot
(a ``str`` subclass host, a mutable ``bytearray``, an ``__index__`` port) so the hook decides on the safe side.

Memoised where every connection asks (an IP literal in a URL is looked up per connection); the memos are keyed on
exact ``str`` values only, never on a caller's object (whose ``__hash__``/``__eq__`` could be forged).
"""

from __future__ import annotations

import _socket
import operator

from sockguard.addresses import format_address, parse_address
from sockguard.errors import InvalidHost
from sockguard.rules import UNKNOWN_PORT, normalize_host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

AF_INET = _socket.AF_INET
AF_INET6 = _socket.AF_INET6
_index = operator.index
_MEMO_MAX = 4096
_FAMILY_NAMES = {AF_INET: "AF_INET", AF_INET6: "AF_INET6"}


# -- ports ------------------------------------------------------------------------------------------------------


def port_number(port: Any) -> int | None:
    """The port of a *lookup* (``getaddrinfo``'s second argument) as an int, or None when it is not a number (a
    service name such as ``"https"``, absent, 0 (no particular port: a bind, ``getaddrinfo(host, 0)``), or
    unknown). Lookups are decided leniently on their port (the connect is decided again with the real one), so None
    here means "not given". Exact types are read through the base class, never through a subclass's methods. Also
    what events and errors show as the port."""
    cls = port.__class__
    if cls is int:
        return port if port > 0 else None
    if issubclass(cls, int):
        return _index(port) or None  # an int subclass: its own value (operator.index never calls its __index__)
    if issubclass(cls, str):
        text = str.__str__(port)
    elif issubclass(cls, (bytes, bytearray)):
        text = memoryview(port).tobytes().decode("latin-1")
    else:
        return None
    return (int(text) or None) if 0 < len(text) <= 5 and text.isascii() and text.isdigit() else None


def connect_port(port: Any) -> int:
    """The port of a *connect or send* as an int: an ``int`` (or subclass) by its value, anything else
    :data:`~sockguard.rules.UNKNOWN_PORT` (its value cannot be known without calling it again)."""
    cls = port.__class__
    if cls is int:
        return port
    if issubclass(cls, int):
        return _index(port)
    return UNKNOWN_PORT


# -- addresses, as C reads them ---------------------------------------------------------------------------------


def c_host(host: Any) -> str:
    """The text the C layer hands the resolver for ``host`` (CPython's ``idna_converter``), as an exact ``str``.

    ``str``: ASCII as is, anything else through the ``idna`` codec (a subclass by its own characters, never its
    methods: C would call the subclass's ``encode``). ``bytes``/``bytearray``: the buffer, copied. Raises TypeError
    with C's messages where C refuses the host; InvalidHost for non-ASCII bytes, which C would send to the resolver
    raw and which no rule can name."""
    cls = host.__class__
    if cls is str:
        text = host
    elif issubclass(cls, str):
        text = str.__str__(host)  # the characters themselves: a copy, no method of the subclass runs
    elif issubclass(cls, (bytes, bytearray)):
        raw = memoryview(host).tobytes()  # the buffer C reads (a bytearray may change later: this is a snapshot)
        if b"\0" in raw:
            raise TypeError("host name must not contain null character")
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidHost(f"non-ASCII bytes in host {raw!r}") from None
    else:
        raise TypeError(f"str, bytes or bytearray expected, not {type(host).__name__}")
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise TypeError("encoding of hostname failed") from None
    if "\0" in text:
        raise TypeError("host name must not contain null character")
    return text


def c_address(address: Any, family: int, operation: str) -> tuple[Any, ...]:
    """``address`` exactly as C reads it for an AF_INET/AF_INET6 socket, as a plain ``tuple`` of exact built-in types:
    ``(host, port)`` or, for AF_INET6, up to ``(host, port, flowinfo, scope_id)`` (same length as given).

    Mirrors CPython's ``getsockaddrarg``: the tuple's own items (never a subclass's ``__getitem__``), the host as
    :func:`c_host`, the port through ``__index__`` once with C's range check, flowinfo and scope_id masked to 32 bits
    as C's ``I`` format does, flowinfo then checked against 20 bits. Raises C's TypeError/OverflowError (the same
    messages) for what C refuses, InvalidHost for a host no rule can name."""
    name = _FAMILY_NAMES[family]
    if not issubclass(address.__class__, tuple):
        raise TypeError(f"{operation}(): {name} address must be tuple, not {type(address).__name__}")
    items = tuple.__getitem__(address, slice(None))  # the tuple's own storage, as PyArg_ParseTuple reads it
    if family == AF_INET:
        if len(items) != 2:
            raise TypeError("AF_INET address must be a pair (host, port)")
    elif not 2 <= len(items) <= 4:
        raise TypeError("AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])")
    host = c_host(items[0])
    port = _index(items[1])
    if not 0 <= port <= 0xFFFF:
        raise OverflowError(f"{operation}(): port must be 0-65535.")
    if len(items) == 2:
        return (host, port)
    flowinfo = _index(items[2]) & 0xFFFFFFFF
    if flowinfo > 0xFFFFF:
        raise OverflowError(f"{operation}(): flowinfo must be 0-1048575.")
    if len(items) == 3:
        return (host, port, flowinfo)
    return (host, port, flowinfo, _index(items[3]) & 0xFFFFFFFF)


def audited_address(address: Any) -> tuple[str | None, int]:
    """``(host, port)`` that C used for an address the audit hook is shown *after* C read it: the host text, or
    None when what C resolved cannot be known now (a ``str`` subclass, which C encodes through its own methods; a
    ``bytearray``, which may have changed since; non-ASCII bytes); the port, or
    :data:`~sockguard.rules.UNKNOWN_PORT` when C called ``__index__`` itself (a second call need not agree)."""
    if not issubclass(address.__class__, tuple):
        return None, UNKNOWN_PORT
    items = tuple.__getitem__(address, slice(None))
    if len(items) < 2:
        return None, UNKNOWN_PORT
    host = items[0]
    cls = host.__class__
    text: str | None = None
    if cls is str:
        text = host
    elif issubclass(cls, bytes):  # immutable, and C reads its buffer, not a method
        try:
            text = bytes.decode(host, "ascii")
        except UnicodeDecodeError:
            text = None
    return text, connect_port(items[1])


# -- numeric hosts ----------------------------------------------------------------------------------------------

#: exact host strings that are already canonical IP literals (the wrappers' fast path: C never resolves them)
numeric_hosts: set[str] = set()
_canonicals: dict[str, str | None] = {}


def remember_numeric(host: str) -> None:
    if len(numeric_hosts) >= _MEMO_MAX:
        numeric_hosts.clear()
    numeric_hosts.add(host)


def canonical_numeric(text: str) -> str | None:
    """The canonical spelling of the IP literal ``text`` (an exact ``str`` from :func:`c_host`): ``127.1`` ->
    ``127.0.0.1``, an IPv6 zone kept as written; None when ``text`` is not one the C library takes without DNS (a
    name, or something no resolver should see). Memoised."""
    found = _canonicals.get(text, False)
    if found is False:
        found = _numeric_uncached(text)
        if len(_canonicals) >= _MEMO_MAX:
            _canonicals.clear()
        _canonicals[text] = found
    return found  # type: ignore[return-value]


def _numeric_uncached(text: str) -> str | None:
    try:
        addr = parse_address(normalize_host(text))
    except InvalidHost:
        return None
    if addr is None:
        return None
    if "%" in text:  # the zone names an interface: C resolves it with if_nametoindex, never DNS
        return text
    return format_address(addr)


def canonical_host(host: Any) -> Any:
    """``host`` (as given to ``getaddrinfo``/``gethostbyname``) with a numeric address in its canonical spelling;
    anything else unchanged. Exact ``str`` hosts only are memoised."""
    try:
        text = c_host(host)
    except (TypeError, InvalidHost):
        return host
    found = canonical_numeric(text)
    return host if found is None else found


def forget() -> None:
    """Empty the memos (tests)."""
    numeric_hosts.clear()
    _canonicals.clear()
