"""Post-import patches for clients that resolve or connect outside the ``socket`` module.

The socket wrappers and the audit hook see every lookup that goes through ``socket``/``_socket`` and every
connect/send of a Python socket. Some libraries resolve elsewhere, so a blocked name's DNS query would leave
even though the later connect is refused, and an allowed name's answers would never be remembered (its
connect then fails as a raw IP):

* c-ares through ``pycares`` (``aiodns``, and so aiohttp's default ``AsyncResolver`` whenever aiodns is
  installed): queries are sent from C. Names (and the channel's nameservers) are checked before the call
  into C; aiohttp's answers are admitted like ``socket.getaddrinfo``'s.
* gevent: ``patch_all()`` replaces ``socket.socket`` and ``getaddrinfo`` after the guard wrapped them, and
  its ares resolver never calls ``_socket``. gevent's resolver classes (every lookup goes through
  ``get_hub().resolver``) and its socket class are wrapped.
* dnspython used directly: its queries are plain UDP/TCP to the nameserver, so the audit hook checks only the
  nameserver address; the *question name* is checked here before the message is sent, and A/AAAA answers of
  ``Resolver.resolve`` are admitted.
* uvloop: libuv resolves and connects in C. ``Loop.getaddrinfo`` is checked and admitted, and
  ``create_connection`` / ``create_datagram_endpoint(remote_addr=...)`` connect a Python socket first.
* psycopg 3: it resolves in Python, but libpq connects in C; each connection attempt's address is decided
  before libpq gets it.

What stays uncovered (libcurl, gRPC core, uvloop's unconnected datagram ``sendto``) is in docs/coverage.md.

``sockguard.guard`` (when a policy is put in force) registers a
post-import hook for each name in ``guard.INTEGRATIONS``, so a patch applies whenever its library is imported,
before or after the guard. This module loads only then, never at start-up. The wrappers are plain functions,
not wrapt proxies: they sit on lookup and connect paths, where a wrapt FunctionWrapper costs about 3x more.
"""

from __future__ import annotations

import _socket
import functools
import operator
import os
import sys

from sockguard import lowlevel
from sockguard.errors import EgressBlocked
from sockguard.rules import split_host_port

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MARK = "__sockguard__"


def patch(module: Any) -> None:
    """Patch one just-imported library (a post-import hook registered for every name in
    ``guard.INTEGRATIONS``). A patch that fails (an unknown version of the library) must not break the
    application's import: it is reported on stderr, and that library's calls outside the socket module stay
    unchecked (the audit hook still decides every Python-level connect and send)."""
    function = PATCHES.get(module.__name__)
    unchecked = "lookups and connects it makes outside Python's socket module are NOT checked"
    try:
        if function is None:
            from sockguard.http import hooks  # HTTP clients and ssl (sockguard/http/)

            function = hooks.PATCHES.get(module.__name__)
            unchecked = "its Host headers, SNI names and proxy targets are NOT checked, nor its requests logged"
            if function is None:
                return
        function(module)
    except (AttributeError, TypeError, ValueError, LookupError, ImportError) as exc:  # the shapes a patch meets
        # (anything else, e.g. an exception a signal handler raised during the import, is the application's)
        sys.stderr.write(f"sockguard: warning: could not guard {module.__name__} ({exc!r}); {unchecked}\n")


def _wrap(owner: Any, attr: str, make: Callable[[Any], Any]) -> None:
    """Replace ``owner.attr`` with ``make(original)`` once (a second import or reload finds it marked)."""
    # A class's own attribute (to see a staticmethod), else an inherited one (uvloop.Loop's Cython base).
    original = owner.__dict__.get(attr) if isinstance(owner, type) else None
    original = original if original is not None else getattr(owner, attr, None)
    if original is None or getattr(original, MARK, False):
        return
    if isinstance(original, staticmethod):  # gevent's blocking resolver: staticmethod(_socket.getaddrinfo)
        function = original.__func__
        wrapper = make(lambda _self, *args, **kwargs: function(*args, **kwargs))
    else:
        wrapper = make(original)
    functools.update_wrapper(wrapper, getattr(original, "__func__", original))
    setattr(wrapper, MARK, True)
    setattr(owner, attr, wrapper)


# -- nameservers the socket layer cannot see (c-ares) ----------------------------------------

_system: tuple[tuple[int, int, float], frozenset[str]] = ((0, 0, 0.0), frozenset())


def _system_nameservers() -> frozenset[str]:
    """The nameservers in /etc/resolv.conf: the ones the C library (and c-ares by default) uses."""
    global _system
    try:
        stat = os.stat("/etc/resolv.conf")
    except OSError:
        return frozenset()
    key = (stat.st_dev, stat.st_ino, stat.st_mtime)
    if _system[0] != key:
        found = set()
        try:
            with open("/etc/resolv.conf") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 2 and parts[0] == "nameserver":
                        found.add(parts[1].partition("%")[0].lower())
        except OSError:
            pass
        _system = (key, frozenset(found))
    return _system[1]


def _split_server(text: str) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:53``, ``[2001:db8::1]:53``, ``2001:db8::1``, ``dns://host:port``."""
    text = text.strip()
    if "://" in text:
        text = text.split("://", 1)[1].rstrip("/")
    try:
        host, port = split_host_port(text)
    except ValueError:
        host, port = text, None
    return host.partition("%")[0].lower(), int(port) if port and port.isdigit() else 53


def check_nameserver(server: str | bytes) -> None:
    """A query that C code (c-ares) sends to ``server``. Trusted like the C library's own queries when it is
    a resolv.conf nameserver; in pinned mode (docs/resolver.md) only the pinned servers are, since nothing
    else may hear the app's lookups. Any other nameserver is a destination like any other (an IP rule)."""
    if not lowlevel.enforcing():
        return
    host, port = _split_server(server.decode() if isinstance(server, bytes) else server)
    pinned = lowlevel.pinned_nameservers()
    if pinned is not None:
        if (host, port) in {(h.lower(), p) for h, p in pinned}:
            return
    elif host in _system_nameservers():
        return
    lowlevel.check_send(host, port, "dns")


# -- c-ares: pycares (aiodns, aiohttp's AsyncResolver) ------------------------------------------


def _patch_pycares(module: Any) -> None:
    channel = getattr(module, "Channel", None)
    if channel is None:
        return

    def checked(original: Any) -> Any:
        searches = original.__name__ in ("getaddrinfo", "search", "gethostbyname")

        def lookup(self: Any, name: Any, *args: Any, **kwargs: Any) -> Any:
            allowed = lowlevel.check_lookup(name)
            if allowed is not None:
                for server in _channel_servers(self):
                    check_nameserver(server)
                if searches:  # c-ares would apply the search list: hand it only an allowed, absolute name
                    query = lowlevel.first_query(name, allowed)
                    name = query.encode() if isinstance(name, bytes) else query
            return original(self, name, *args, **kwargs)

        return lookup

    def reverse(original: Any) -> Any:
        def lookup(self: Any, address: Any, *args: Any, **kwargs: Any) -> Any:
            lowlevel.check_reverse(address)
            return original(self, address, *args, **kwargs)

        return lookup

    def nameinfo(original: Any) -> Any:
        def lookup(self: Any, address: Any, flags: Any, *args: Any, **kwargs: Any) -> Any:
            if not operator.index(flags) & _socket.NI_NUMERICHOST:
                lowlevel.check_reverse(tuple.__getitem__(address, 0) if isinstance(address, tuple) else address)
            return original(self, address, flags, *args, **kwargs)

        return lookup

    for attr in ("getaddrinfo", "query", "search", "gethostbyname"):  # gethostbyname: pycares < 5
        if attr in channel.__dict__:
            _wrap(channel, attr, checked)
    if "gethostbyaddr" in channel.__dict__:
        _wrap(channel, "gethostbyaddr", reverse)
    if "getnameinfo" in channel.__dict__:
        _wrap(channel, "getnameinfo", nameinfo)


def _channel_servers(channel: Any) -> list[str]:
    try:
        return list(channel.servers)
    except RuntimeError:  # a closed channel ("Channel is destroyed"): c-ares refuses the query itself
        return []


def _patch_aiohttp_resolver(module: Any) -> None:
    """aiohttp's AsyncResolver: answers admitted like socket.getaddrinfo's (the name is checked by pycares'
    patch, and here again in case its aiodns does not use pycares' Channel)."""
    resolver = getattr(module, "AsyncResolver", None)
    if resolver is None:
        return

    def admitted(original: Any) -> Any:
        async def resolve(self: Any, host: str, *args: Any, **kwargs: Any) -> Any:
            port = args[0] if args else kwargs.get("port", 0)
            name = lowlevel.check_lookup(host, port)
            results = await original(self, host, *args, **kwargs)
            if name is None:
                return results
            keep = set(lowlevel.admit_answers(name, port, [r["host"] for r in results]))
            return [r for r in results if r["host"] in keep]

        return resolve

    _wrap(resolver, "resolve", admitted)


# -- gevent -------------------------------------------------------------------------------------


def _checked_resolver_methods(cls: Any) -> None:
    """getaddrinfo / gethostbyname[_ex] / gethostbyaddr of one gevent resolver class."""

    # Each lookup is decided, then handed to the resolver only as allowed absolute names (its search list would
    # otherwise add names no rule decided), and its answers are admitted.
    def getaddrinfo(original: Any) -> Any:
        def wrapper(self: Any, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            name = lowlevel.check_lookup(host, port) if host is not None else None
            if name is None:
                return original(self, host, port, *args, **kwargs)
            family = args[0] if args else kwargs.get("family", 0)
            name, infos = lowlevel.resolve_allowed(
                host, name, port, family, lambda query: original(self, query, port, *args, **kwargs)
            )
            return lowlevel.admit_addrinfo(name, port, infos)

        return wrapper

    def gethostbyname(original: Any) -> Any:
        def wrapper(self: Any, host: Any, *args: Any, **kwargs: Any) -> Any:
            name = lowlevel.check_lookup(host)
            if name is None:
                return original(self, host, *args, **kwargs)
            name, ip = lowlevel.resolve_allowed(
                host, name, None, _socket.AF_INET, lambda query: original(self, query, *args, **kwargs)
            )
            return lowlevel.admit_answers(name, None, [ip])[0]

        return wrapper

    def gethostbyname_ex(original: Any) -> Any:
        def wrapper(self: Any, host: Any, *args: Any, **kwargs: Any) -> Any:
            name = lowlevel.check_lookup(host)
            if name is None:
                return original(self, host, *args, **kwargs)
            name, (hostname, aliases, ips) = lowlevel.resolve_allowed(
                host, name, None, _socket.AF_INET, lambda query: original(self, query, *args, **kwargs)
            )
            return hostname, aliases, lowlevel.admit_answers(name, None, ips)

        return wrapper

    def gethostbyaddr(original: Any) -> Any:
        def wrapper(self: Any, host: Any, *args: Any, **kwargs: Any) -> Any:
            # A name is resolved forwards first (through the checked getaddrinfo above), then its address is
            # looked up; an address is a reverse (PTR) lookup, decided like socket.gethostbyaddr's.
            if lowlevel.check_lookup(host) is not None:
                host = self.getaddrinfo(host, None)[0][4][0]
            lowlevel.check_reverse(host)
            return original(self, host, *args, **kwargs)

        return wrapper

    def getnameinfo(original: Any) -> Any:
        def wrapper(self: Any, sockaddr: Any, flags: Any, *args: Any, **kwargs: Any) -> Any:
            flags = operator.index(flags)
            if not flags & _socket.NI_NUMERICHOST and isinstance(sockaddr, tuple) and sockaddr:
                lowlevel.check_reverse(tuple.__getitem__(sockaddr, 0))
            return original(self, sockaddr, flags, *args, **kwargs)

        return wrapper

    for attr, make in (
        ("getaddrinfo", getaddrinfo),
        ("gethostbyname", gethostbyname),
        ("gethostbyname_ex", gethostbyname_ex),
        ("gethostbyaddr", gethostbyaddr),
        ("getnameinfo", getnameinfo),
    ):
        if attr in cls.__dict__:
            _wrap(cls, attr, make)


def _patch_gevent_resolvers(module: Any) -> None:
    """gevent.resolver (AbstractResolver: ares, dnspython), .thread and .blocking: every gevent lookup goes
    through ``get_hub().resolver``, whatever monkey-patching did to the socket module."""
    for attr in ("AbstractResolver", "Resolver"):
        cls = getattr(module, attr, None)
        if isinstance(cls, type) and cls.__module__ == module.__name__:
            _checked_resolver_methods(cls)


def _patch_gevent_ares(module: Any) -> None:
    """gevent's ares resolver sends from C: its servers (GEVENTARES_SERVERS, else resolv.conf's) are checked."""
    cls = getattr(module, "Resolver", None)
    if cls is None:
        return

    def checked(original: Any) -> Any:
        def wrapper(self: Any, host_bytes: Any, *args: Any, **kwargs: Any) -> Any:
            servers: Any = (getattr(self, "params", None) or {}).get("servers") or sorted(_system_nameservers())
            if isinstance(servers, bytes):
                servers = servers.decode()
            if isinstance(servers, str):
                servers = servers.split(",")
            for server in servers:
                check_nameserver(server)
            return original(self, host_bytes, *args, **kwargs)

        return wrapper

    for attr in ("_getaddrinfo", "_gethostbyname_ex"):
        if attr in cls.__dict__:
            _wrap(cls, attr, checked)


def _patch_gevent_socket(module: Any) -> None:
    """gevent's socket class (what ``patch_all`` installs as ``socket.socket``): hostname tuples in
    connect/sendto/sendmsg resolved through the (guarded) gevent resolver before C could resolve them."""
    cls = getattr(module, "socket", None)
    if not isinstance(cls, type):
        return

    def resolve(host: Any, port: Any, family: int = 0, *args: Any) -> Any:
        return sys.modules["gevent._socketcommon"].getaddrinfo(host, port, family, *args)

    lowlevel.guard_socket_class(cls, resolve)


# -- uvloop: libuv resolves and connects in C ---------------------------------------------------------


def _patch_asyncio(module: Any) -> None:
    """asyncio resolves in its default executor, where the only frames are the thread pool's. Decide the name
    on the loop thread first, where the awaiting application code is on the stack, so the error and the log
    name the real caller; the socket wrapper in the executor then resolves and admits the answers as usual."""

    def getaddrinfo(original: Any) -> Any:
        async def wrapper(self: Any, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host is not None:
                lowlevel.check_lookup(host, port, log_allowed=False)
            return await original(self, host, port, *args, **kwargs)

        return wrapper

    _wrap(module.BaseEventLoop, "getaddrinfo", getaddrinfo)


def _patch_uvloop(module: Any) -> None:
    """uvloop.Loop (a Python subclass of the Cython loop): lookups checked and admitted; TCP connections and
    connected UDP endpoints made on a Python socket (connected through ``sock_connect``/``connect``, so the
    socket wrappers and the audit hook decide) and then handed to libuv. An *unconnected* datagram endpoint's
    ``sendto`` stays in libuv: not covered (docs/coverage.md)."""
    cls = getattr(module, "Loop", None)
    if not isinstance(cls, type) or cls.__module__ != module.__name__:
        return

    def getaddrinfo(original: Any) -> Any:
        async def wrapper(self: Any, host: Any, port: Any, **kwargs: Any) -> Any:
            name = lowlevel.check_lookup(host, port) if host is not None else None
            if name is None:
                return await original(self, host, port, **kwargs)
            # libuv calls the C library's getaddrinfo, which would apply the search list: an allowed absolute name
            query = lowlevel.first_query(host, name, port, kwargs.get("family", 0))
            infos = await original(self, query, port, **kwargs)
            return lowlevel.admit_addrinfo(query.rstrip(".") or name, port, infos)

        return wrapper

    def create_connection(original: Any) -> Any:
        async def wrapper(self: Any, protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any) -> Any:
            if kwargs.get("sock") is not None or host is None:
                return await original(self, protocol_factory, host, port, **kwargs)
            options = {k: kwargs.pop(k, 0) for k in ("family", "proto", "flags")}
            local_addr = kwargs.pop("local_addr", None)
            kwargs.pop("happy_eyeballs_delay", None)
            kwargs.pop("interleave", None)
            sock = await _uv_connected_socket(self, host, port, local_addr, stream=True, **options)
            if kwargs.get("ssl") and kwargs.get("server_hostname") is None:
                kwargs["server_hostname"] = host
            try:
                return await original(self, protocol_factory, sock=sock, **kwargs)
            except BaseException:
                sock.close()
                raise

        return wrapper

    def create_datagram_endpoint(original: Any) -> Any:
        async def wrapper(
            self: Any, protocol_factory: Any, local_addr: Any = None, remote_addr: Any = None, **kwargs: Any
        ):
            if kwargs.get("sock") is not None or remote_addr is None:
                return await original(self, protocol_factory, local_addr, remote_addr, **kwargs)
            options = {k: kwargs.pop(k, 0) for k in ("family", "proto", "flags")}
            kwargs.pop("reuse_address", None)
            reuse_port = kwargs.pop("reuse_port", None)
            broadcast = kwargs.pop("allow_broadcast", None)
            sock = await _uv_connected_socket(
                self,
                remote_addr[0],
                remote_addr[1],
                local_addr,
                stream=False,
                reuse_port=reuse_port,
                broadcast=broadcast,
                **options,
            )
            try:
                return await original(self, protocol_factory, sock=sock, **kwargs)
            except BaseException:
                sock.close()
                raise

        return wrapper

    _wrap(cls, "getaddrinfo", getaddrinfo)
    _wrap(cls, "create_connection", create_connection)
    _wrap(cls, "create_datagram_endpoint", create_datagram_endpoint)


async def _uv_connected_socket(
    loop: Any,
    host: Any,
    port: Any,
    local_addr: Any,
    *,
    stream: bool,
    family: int = 0,
    proto: int = 0,
    flags: int = 0,
    reuse_port: Any = None,
    broadcast: Any = None,
) -> Any:
    """A non-blocking Python socket connected to the first address of ``host`` that accepts, each attempt
    decided by the guard (a block is final: no other address is tried around it)."""
    import socket

    kind = socket.SOCK_STREAM if stream else socket.SOCK_DGRAM
    infos = await loop.getaddrinfo(host, port, family=family, type=kind, proto=proto, flags=flags)
    if not infos:
        raise OSError(f"getaddrinfo({host!r}) returned an empty list")
    errors: list[OSError] = []
    try:
        for info_family, info_type, info_proto, _, address in infos:
            sock = socket.socket(info_family, info_type, info_proto)
            try:
                sock.setblocking(False)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if broadcast:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                if local_addr is not None:
                    sock.bind(local_addr)
                if stream:
                    await loop.sock_connect(sock, address)
                else:
                    sock.connect(address)
                return sock
            except EgressBlocked:
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                errors.append(exc)
            except BaseException:
                sock.close()
                raise
        if len(errors) == 1:
            raise errors[0]
        raise OSError(f"Multiple exceptions: {', '.join(str(e) for e in errors)}")
    finally:
        errors.clear()  # each failure's traceback holds this frame: no cycle through it (sockguard/refusal.py)


# -- libpq (psycopg 3): psycopg resolves in Python, libpq connects in C -------------------------------


def _patch_psycopg(module: Any) -> None:
    """psycopg.connection / psycopg.connection_async: every connection attempt is decided before libpq gets
    it (host names before DNS, ``hostaddr`` as a connect), and a block surfaces as psycopg's own
    OperationalError with the EgressBlocked as its cause."""

    def checked(original: Any) -> Any:
        if _is_coroutine_function(original):

            async def async_attempts(params: Any, *args: Any, **kwargs: Any) -> Any:
                _check_pg_hosts(params)
                return _check_pg_attempts(await original(params, *args, **kwargs))

            return async_attempts

        def attempts(params: Any, *args: Any, **kwargs: Any) -> Any:
            _check_pg_hosts(params)
            return _check_pg_attempts(original(params, *args, **kwargs))

        return attempts

    for attr in ("conninfo_attempts", "conninfo_attempts_async"):
        if hasattr(module, attr):
            _wrap(module, attr, checked)


def _pg_param(params: Any, name: str) -> str | None:
    try:
        from psycopg._conninfo_utils import get_param  # also reads the PG* environment variables

        return get_param(params, name)
    except ImportError:
        value = params.get(name)
        return None if value is None else str(value)


def _pg_refused(blocked: list[EgressBlocked]) -> Exception:
    import psycopg

    error = psycopg.OperationalError(f"connection refused by sockguard: {blocked[0]}")
    error.__cause__ = blocked[0]
    return error


def _check_pg_hosts(params: Any) -> None:
    """Names are checked before psycopg resolves them: if every host is blocked, nothing is looked up."""
    hosts = [h.strip() for h in (_pg_param(params, "host") or "").split(",")]
    if not hosts or _pg_param(params, "hostaddr"):
        return
    blocked: list[EgressBlocked] = []
    try:
        for host in hosts:
            if not host or host.startswith(("/", "@")) or host[1:2] == ":":
                return  # a Unix socket among them: decided per attempt
            try:
                lowlevel.check_lookup(host)
            except EgressBlocked as exc:
                blocked.append(exc)
            else:
                return
        if blocked:
            raise _pg_refused(blocked)
    finally:
        blocked.clear()  # each refusal's traceback holds this frame: no cycle through it (sockguard/refusal.py)


def _check_pg_attempts(attempts: list[Any]) -> list[Any]:
    """Attempts whose address the policy refuses are dropped; none left raises."""
    kept: list[Any] = []
    blocked: list[EgressBlocked] = []
    try:
        for attempt in attempts:
            host = _pg_param(attempt, "host") or ""
            address = _pg_param(attempt, "hostaddr")
            port = int(_pg_param(attempt, "port") or 5432)
            try:
                if address:
                    lowlevel.check_connect(address, port)
                elif not host or host.startswith(("/", "@")) or host[1:2] == ":":
                    lowlevel.check_unix(host)
                else:  # libpq resolves it itself: at least the name is decided before its DNS query
                    lowlevel.check_lookup(host, port)
            except EgressBlocked as exc:
                blocked.append(exc)
                continue
            kept.append(attempt)
        if not kept and blocked:
            raise _pg_refused(blocked)
        return kept
    finally:
        blocked.clear()  # each refusal's traceback holds this frame: no cycle through it (sockguard/refusal.py)


# -- dnspython used directly ---------------------------------------------------------------------

_QUERY_FUNCTIONS = ("udp", "tcp", "tls", "https", "quic", "udp_with_fallback", "xfr", "inbound_xfr")
_SEND_FUNCTIONS = ("send_udp", "send_tcp")


def check_dns_message(message: Any) -> None:
    """Every question name of a DNS message (a ``dns.message.Message`` or its wire form) is decided like a
    lookup before dnspython sends it; an address asked back in a PTR question is decided as a reverse lookup.
    A wire that does not parse is left to the address check on the socket."""
    import dns.exception
    import dns.message

    if isinstance(message, (bytes, bytearray, memoryview)):
        try:
            message = dns.message.from_wire(bytes(message), question_only=True)
        except (dns.exception.DNSException, ValueError):  # not a DNS message: the socket's address check decides
            return
    for rrset in getattr(message, "question", ()):
        _check_qname(rrset.name, rrset.rdtype)


def _check_qname(name: Any, rdtype: int) -> None:
    import dns.exception
    import dns.rdatatype
    import dns.reversename

    if rdtype == dns.rdatatype.PTR:
        try:
            address = dns.reversename.to_address(name)
        except (dns.exception.DNSException, ValueError):  # not a reverse name: a forward lookup, checked below
            address = None
        if address is not None:
            lowlevel.check_reverse(address)
            return
    lowlevel.check_lookup(name.to_text(omit_final_dot=True))


def _patch_dns_query(module: Any) -> None:
    """dns.query / dns.asyncquery: the message is the first argument of every query and send function."""

    def checked(original: Any) -> Any:
        if _is_coroutine_function(original):

            async def async_query(q: Any, *args: Any, **kwargs: Any) -> Any:
                check_dns_message(q)
                return await original(q, *args, **kwargs)

            return async_query

        def query(q: Any, *args: Any, **kwargs: Any) -> Any:
            check_dns_message(q)
            return original(q, *args, **kwargs)

        return query

    def checked_send(original: Any) -> Any:
        # send_udp(sock, what, destination, ...) / send_tcp(sock, what, ...): the message is second.
        if _is_coroutine_function(original):

            async def async_send(sock: Any, what: Any, *args: Any, **kwargs: Any) -> Any:
                check_dns_message(what)
                return await original(sock, what, *args, **kwargs)

            return async_send

        def send(sock: Any, what: Any, *args: Any, **kwargs: Any) -> Any:
            check_dns_message(what)
            return original(sock, what, *args, **kwargs)

        return send

    for attr in _QUERY_FUNCTIONS:
        if hasattr(module, attr):
            _wrap(module, attr, checked)
    for attr in _SEND_FUNCTIONS:
        if hasattr(module, attr):
            _wrap(module, attr, checked_send)


def _admit_answer(answer: Any) -> None:
    """A/AAAA answers of an allowed name are remembered, so connecting to them is allowed."""
    import dns.rdatatype

    if answer is None or answer.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA) or answer.rrset is None:
        return
    name = lowlevel.check_lookup(answer.qname.to_text(omit_final_dot=True))
    if name is not None:
        lowlevel.admit_answers(name, None, [rdata.address for rdata in answer.rrset])


def _patch_dns_resolver(module: Any) -> None:
    cls = getattr(module, "Resolver", None)
    if cls is None or "resolve" not in cls.__dict__:
        return

    def admitted(original: Any) -> Any:
        if _is_coroutine_function(original):

            async def async_resolve(self: Any, *args: Any, **kwargs: Any) -> Any:
                answer = await original(self, *args, **kwargs)
                _admit_answer(answer)
                return answer

            return async_resolve

        def resolve(self: Any, *args: Any, **kwargs: Any) -> Any:
            answer = original(self, *args, **kwargs)
            _admit_answer(answer)
            return answer

        return resolve

    _wrap(cls, "resolve", admitted)


def _is_coroutine_function(function: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(function)


#: module name -> its patch; the names are ``guard.INTEGRATIONS`` (the post-import hooks), in the same order
PATCHES: dict[str, Callable[[Any], None]] = {
    "asyncio.base_events": _patch_asyncio,
    "pycares": _patch_pycares,
    "aiohttp.resolver": _patch_aiohttp_resolver,
    "gevent.resolver": _patch_gevent_resolvers,
    "gevent.resolver.thread": _patch_gevent_resolvers,
    "gevent.resolver.blocking": _patch_gevent_resolvers,
    "gevent.resolver.ares": _patch_gevent_ares,
    "gevent._socket3": _patch_gevent_socket,
    "uvloop": _patch_uvloop,
    "psycopg.connection": _patch_psycopg,
    "psycopg.connection_async": _patch_psycopg,
    "dns.query": _patch_dns_query,
    "dns.asyncquery": _patch_dns_query,
    "dns.resolver": _patch_dns_resolver,
    "dns.asyncresolver": _patch_dns_resolver,
}
