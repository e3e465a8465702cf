"""Pinned resolver: sockguard answers lookups itself, from the configured nameservers only (docs/resolver.md).

With ``resolver = ["127.0.0.53", ...]`` the socket-module wrappers (``guard.patch_socket_module``) never hand a
name to the C library: they call :meth:`Resolver.getaddrinfo` (or ``gethostbyname``/``_ex``), which asks only
these servers with dnspython's message codec, over its own UDP (TCP on truncation) exchange. Answers come back
in the C functions' shapes and then go through the usual answer checks (``guard._resolve_results``).

Kept import-light: this module loads with the configuration; ``dns.*`` is imported at the first query.
"""

from __future__ import annotations

import _socket
import _thread
import os
import time
from collections import namedtuple

from sockguard.addresses import format_address, parse_ipv4_strict, parse_ipv6
from sockguard.errors import InvalidHost, ResolverFailure
from sockguard.resolver_settings import DEFAULTS, format_nameserver, parse_nameserver
from sockguard.rules import normalize_host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

_MAX_CHAIN = 16  # CNAME links followed, across queries

AF_INET = _socket.AF_INET
AF_INET6 = _socket.AF_INET6
_A, _AAAA, _CNAME, _SOA = 1, 28, 5, 6  # rdtype numbers (no dns import needed to name them)
_TYPE_NAMES = {_A: "A", _AAAA: "AAAA"}
EAI_NODATA = getattr(_socket, "EAI_NODATA", _socket.EAI_NONAME)


# --- the exemption for our own queries -------------------------------------------------

_local = _thread._local()  # .endpoint: the (server, port) this thread's resolver is sending to right now


# --- the resolver ----------------------------------------------------------------------


#: status "ok", "nxdomain" or "nodata"; canonical name; aliases; addresses; ttl (seconds this may be cached);
#: the server that answered.
_Answer = namedtuple("_Answer", "status canonical aliases addresses ttl server")


_cache_lock = _thread.allocate_lock()


def _after_fork_in_child() -> None:
    global _cache_lock
    _cache_lock = _thread.allocate_lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _dns() -> Any:
    """dnspython's message codec, imported at the first query (~50 ms), never at start-up."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.rcode

    return dns


class Resolver:
    """Answers forward lookups from ``servers`` only, with a TTL-bounded cache. Thread-safe."""

    def __init__(
        self,
        servers: Iterable[str | tuple[str, int]],
        *,
        timeout: float = DEFAULTS["timeout"],
        attempts: int = DEFAULTS["attempts"],
        max_ttl: float = DEFAULTS["max_ttl"],
        negative_ttl: float = DEFAULTS["negative_ttl"],
        cache_size: int = DEFAULTS["cache_size"],
        clock: Callable[[], float] = time.monotonic,
        sinks: Any = None,
        mode: str = "enforce",
    ) -> None:
        self.servers = tuple(parse_nameserver(s) if isinstance(s, str) else (s[0], int(s[1])) for s in servers)
        if not self.servers:
            raise ValueError("a pinned resolver needs at least one nameserver")
        self.timeout = float(timeout)
        self.attempts = int(attempts)
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self.cache_size = cache_size
        self.clock = clock
        self.sinks = sinks
        self.mode = mode
        self._endpoints = frozenset(self.servers)
        self._cache: dict[tuple[str, int], tuple[float, _Answer]] = {}
        self._infos: dict[tuple[Any, ...], tuple[float, tuple[Any, ...]]] = {}  # getaddrinfo results, same expiry

    @classmethod
    def from_settings(cls, settings: Any, sinks: Any = None) -> Resolver:
        options = {**DEFAULTS, **getattr(settings, "resolver_options", {})}
        return cls(settings.resolver, **options, sinks=sinks, mode=settings.mode)

    def describe(self) -> str:
        return ", ".join(format_nameserver(s) for s in self.servers)

    def owns(self, host: Any, port: Any) -> bool:
        """True for the send/connect this thread's resolver is making to a pinned server right now."""
        endpoint = getattr(_local, "endpoint", None)
        return endpoint is not None and endpoint == (host, port) and endpoint in self._endpoints

    # -- the socket-module API ------------------------------------------------------

    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0):
        """``socket.getaddrinfo`` for a host *name*, answered by the pinned servers (same tuples, same errors)."""
        if host.__class__ is not str:
            host = _name(host)
        key = (host, port, family, type, proto, flags)
        hit = self._infos.get(key)
        if hit is not None and hit[0] > self.clock():
            return list(hit[1])  # the hot path: one dict lookup
        name = _name(host)
        if flags & _socket.AI_NUMERICHOST:
            raise _socket.gaierror(_socket.EAI_NONAME, "Name or service not known")
        if family not in (0, AF_INET, AF_INET6):
            raise _socket.gaierror(_socket.EAI_FAMILY, "ai_family not supported")
        numeric_flags = (flags | _socket.AI_NUMERICHOST) & ~(_socket.AI_CANONNAME | _socket.AI_ADDRCONFIG)
        if isinstance(port, (str, bytes)) and not port.isdigit():  # a bad service name fails before any query
            _socket.getaddrinfo("0.0.0.0", port, AF_INET, type, proto, numeric_flags & ~_socket.AI_V4MAPPED)
        now = self.clock()
        canonical, _aliases, addresses, ttl = self._addresses(name, family, flags)
        infos: list[Any] = []
        for ip in addresses:
            ip_family = AF_INET6 if ":" in ip else AF_INET
            infos.extend(_socket.getaddrinfo(ip, port, ip_family, type, proto, numeric_flags))
        import socket

        shaped = [(_enum(socket.AddressFamily, i[0]), _enum(socket.SocketKind, i[1]), i[2], "", i[4]) for i in infos]
        if shaped and flags & _socket.AI_CANONNAME:
            first = shaped[0]
            shaped[0] = (first[0], first[1], first[2], canonical, first[4])
        if ttl > 0 and self.cache_size > 0:
            with _cache_lock:
                while len(self._infos) >= self.cache_size:
                    self._infos.pop(next(iter(self._infos)))
                self._infos[key] = (now + ttl, tuple(shaped))
        return shaped

    def gethostbyname(self, host: Any) -> str:
        return self._addresses(_name(host), AF_INET, 0)[2][0]

    def gethostbyname_ex(self, host: Any) -> tuple[str, list[str], list[str]]:
        canonical, aliases, addresses, _ttl = self._addresses(_name(host), AF_INET, 0)
        return canonical, list(aliases), list(addresses)

    # -- lookups ----------------------------------------------------------------------

    def _addresses(self, name: str, family: int, flags: int) -> tuple[str, tuple[str, ...], list[str], float]:
        """(canonical name, aliases, addresses, seconds this holds) for the family; raises gaierror like
        getaddrinfo."""
        if name == "localhost" or name.endswith(".localhost"):  # RFC 6761 6.3: never sent to DNS
            local = {AF_INET: ["127.0.0.1"], AF_INET6: ["::1"]}.get(family, ["127.0.0.1", "::1"])
            return name, (), local, float(self.max_ttl)
        if family == AF_INET:
            types = [_A]
        elif family == AF_INET6:
            types = [_AAAA]
            if flags & _socket.AI_V4MAPPED:
                types.append(_A)
        else:
            types = [_A, _AAAA]
        found: list[str] = []
        answers: list[_Answer] = []
        failure: str | None = None  # (its text: the exception itself would hold this frame, which would hold it)
        for rdtype in types:
            if rdtype == _A and family == AF_INET6 and found and not flags & _socket.AI_ALL:
                break  # AI_V4MAPPED: IPv4 only when there is no IPv6 answer
            try:
                answer = self._lookup(name, rdtype)
            except ResolverFailure as exc:
                failure = str(exc)
                break  # the servers did not answer one type: do not wait for them again for the other
            answers.append(answer)
            if answer.status == "nxdomain":
                break  # the name does not exist, whatever the type
            for ip in answer.addresses:
                ip = f"::ffff:{ip}" if family == AF_INET6 and rdtype == _A else ip
                if ip not in found:
                    found.append(ip)
        if found:
            ok = next(a for a in answers if a.status == "ok")
            return ok.canonical, ok.aliases, found, min(a.ttl for a in answers)
        if failure is not None:
            raise _socket.gaierror(_socket.EAI_AGAIN, f"Temporary failure in name resolution: {failure}")
        if any(a.status == "nxdomain" for a in answers):
            server = answers[-1].server
            raise _socket.gaierror(
                _socket.EAI_NONAME, f"Name or service not known: {name!r} does not exist (NXDOMAIN from {server})"
            )
        wanted = "/".join(_TYPE_NAMES[t] for t in types)
        raise _socket.gaierror(
            EAI_NODATA, f"No address associated with hostname: {name!r} has no {wanted} record ({answers[0].server})"
        )

    def _lookup(self, name: str, rdtype: int) -> _Answer:
        """One (name, type), from the cache or the servers; CNAME chains are followed (bounded)."""
        aliases: list[str] = []
        ttl = float(self.max_ttl)
        current = name
        for _ in range(_MAX_CHAIN):
            answer = self._cached(current, rdtype)
            ttl = min(ttl, answer.ttl)
            aliases.extend(a for a in answer.aliases if a not in aliases)
            if answer.status != "chase":
                return answer._replace(aliases=tuple(aliases), ttl=ttl)
            if answer.canonical in aliases or answer.canonical == name:
                break
            current = answer.canonical
        raise ResolverFailure(f"the CNAME chain from {name!r} loops or is longer than {_MAX_CHAIN} links")

    def _cached(self, name: str, rdtype: int) -> _Answer:
        key = (name, rdtype)
        entry = self._cache.get(key)
        now = self.clock()
        if entry is not None and entry[0] > now:
            return entry[1]._replace(ttl=entry[0] - now)  # what is left of the TTL, never more
        answer = self._query(name, rdtype)
        if answer.ttl > 0 and self.cache_size > 0:
            with _cache_lock:
                while len(self._cache) >= self.cache_size:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = (now + answer.ttl, answer)
        return answer

    def _query(self, name: str, rdtype: int) -> _Answer:
        """Ask the servers in order, ``attempts`` rounds; the first NOERROR/NXDOMAIN response wins."""
        dns = _dns()
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise _socket.gaierror(_socket.EAI_NONAME, f"Name or service not known: {name!r}: {exc}") from None
        problems: dict[str, int] = {}
        for _ in range(self.attempts):
            for server in self.servers:
                query = dns.message.make_query(qname, rdtype)
                try:
                    response = self._exchange(dns, query, server)
                except TimeoutError:
                    problem = f"{format_nameserver(server)} timed out after {self.timeout:g} s"
                except (OSError, dns.exception.DNSException) as exc:
                    problem = f"{format_nameserver(server)}: {exc.__class__.__name__}: {exc}"
                else:
                    rcode = response.rcode()
                    if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                        return self._parse(dns, response, qname, rdtype, format_nameserver(server))
                    problem = f"{format_nameserver(server)} answered {dns.rcode.to_text(rcode)}"
                problems[problem] = problems.get(problem, 0) + 1
        detail = "; ".join(f"{p} (x{n})" if n > 1 else p for p, n in problems.items())
        message = (
            f"sockguard's pinned resolver got no answer for {name!r} ({_TYPE_NAMES.get(rdtype, rdtype)}) "
            f"from {self.describe()}: {detail}. It never falls back to the system resolver"
        )
        self._report(name, message)
        raise ResolverFailure(message)

    def _parse(self, dns: Any, response: Any, qname: Any, rdtype: int, server: str) -> _Answer:
        owner, aliases = qname, []
        ttl = float(self.max_ttl)
        for _ in range(_MAX_CHAIN):
            link = response.get_rrset(response.answer, owner, 1, _CNAME)
            if link is None:
                break
            ttl = min(ttl, link.ttl)
            aliases.append(owner.to_text(omit_final_dot=True).lower())
            owner = link[0].target
        canonical = owner.to_text(omit_final_dot=True).lower()
        rrset = response.get_rrset(response.answer, owner, 1, rdtype)
        if rrset is not None and len(rrset):
            addresses = tuple(dict.fromkeys(r.address for r in rrset))
            return _Answer("ok", canonical, tuple(aliases), addresses, min(ttl, rrset.ttl), server)
        if aliases and response.rcode() == dns.rcode.NOERROR:  # the chain leaves the answer: ask for its target
            return _Answer("chase", canonical, tuple(aliases), (), ttl, server)
        negative = float(self.negative_ttl)
        for soa in response.authority:  # RFC 2308: the SOA's TTL and minimum bound negative caching
            if soa.rdtype == _SOA and len(soa):
                negative = min(negative, soa.ttl, soa[0].minimum)
        status = "nxdomain" if response.rcode() == dns.rcode.NXDOMAIN else "nodata"
        return _Answer(status, canonical, tuple(aliases), (), min(ttl, negative), server)

    def _exchange(self, dns: Any, query: Any, server: tuple[str, int]) -> Any:
        """One query over UDP (TCP if truncated). Only a reply from the server to this query is accepted."""
        import socket

        family = AF_INET6 if ":" in server[0] else AF_INET
        wire = query.to_wire()
        deadline = time.monotonic() + self.timeout
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            # Not connect(): a connected UDP socket would be counted by the breaker as a connection.
            _local.endpoint = server
            try:
                sock.sendto(wire, server)
            finally:
                _local.endpoint = None
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                data, peer = sock.recvfrom(65535)
                if (format_address(_parsed(peer[0])), peer[1]) != server:
                    continue  # spoofed or stray datagram
                try:
                    response = dns.message.from_wire(data)
                except dns.exception.DNSException:
                    continue
                if query.is_response(response):
                    break
        if response.flags & dns.flags.TC:
            response = self._exchange_tcp(dns, query, server, wire)
        return response

    def _exchange_tcp(self, dns: Any, query: Any, server: tuple[str, int], wire: bytes) -> Any:
        import socket

        family = AF_INET6 if ":" in server[0] else AF_INET
        deadline = time.monotonic() + self.timeout
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            _local.endpoint = server
            try:
                sock.connect(server)
            finally:
                _local.endpoint = None
            sock.sendall(len(wire).to_bytes(2, "big") + wire)
            size = int.from_bytes(_read(sock, 2, deadline), "big")
            response = dns.message.from_wire(_read(sock, size, deadline))
        if not query.is_response(response):
            raise dns.exception.FormError("TCP reply does not match the query")
        return response

    def _report(self, name: str, message: str) -> None:
        """A resolver failure goes to the decision log / logger too: nothing was allowed, nothing fell back."""
        if self.sinks is None or getattr(_local, "reporting", False):
            return  # (a log handler that itself looks names up must not recurse)
        _local.reporting = True
        try:
            from sockguard.events import emit, find_caller, make_event

            event = make_event(
                operation="resolve",
                protocol="dns",
                host=name,
                port=None,
                address=self.describe(),
                decision="error",
                reason="resolver-failure",
                rule=None,
                mode=self.mode,
                caller=find_caller(3),
                detail=message,
                kind="resolver-error",
            )
            emit(self.sinks, event, f"sockguard: {message}", 30)  # nothing swallowed: sinks do not raise
        finally:
            _local.reporting = False


def _read(sock: Any, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the nameserver closed the TCP connection early")
        data += chunk
    return data


def _parsed(host: str) -> tuple[int, int]:
    if ":" in host:
        return (6, parse_ipv6(host.partition("%")[0]) or 0)
    return (4, parse_ipv4_strict(host) or 0)


def _name(host: Any) -> str:
    try:
        return normalize_host(host)
    except InvalidHost as exc:
        raise _socket.gaierror(_socket.EAI_NONAME, f"Name or service not known: {exc}") from None


def _enum(klass: Any, value: int) -> Any:
    try:
        return klass(value)
    except ValueError:
        return value
