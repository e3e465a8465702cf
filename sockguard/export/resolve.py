"""Name resolution for the address formats: dnspython, A and AAAA, no search list, TTLs kept. Only ever
the nameservers given (``--resolver``, the config's ``resolver``) or resolv.conf's; tests inject a resolver
function instead, or run a DNS server on loopback."""

from __future__ import annotations

from sockguard.addresses import Address, format_address, parse_network
from sockguard.export.plan import Resolution, Resolver


def dns_resolver(servers: list[tuple[Address, int]] | None, timeout: float = 5.0) -> Resolver:
    """Look names up with dnspython (A and AAAA, no search list), keeping the TTL.

    ``servers`` None means the system's resolv.conf nameservers.
    """
    import dns.exception
    import dns.nameserver
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=not servers)
    if servers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(format_address(a), port) for a, port in servers]
    resolver.lifetime = timeout

    def resolve(host: str) -> Resolution:
        found: list[tuple[Address, int]] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = resolver.resolve(host + ".", rdtype, search=False, raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN:
                return Resolution((), "no such name (NXDOMAIN)")
            except dns.exception.DNSException as exc:
                return Resolution((), f"{type(exc).__name__}: {exc}")
            if answer.rrset is None:
                continue
            ttl = int(answer.chaining_result.minimum_ttl)  # the shortest TTL along any CNAME chain
            for record in answer.rrset:
                version, value, _ = parse_network(record.address)
                found.append(((version, value), ttl))
        return Resolution(tuple(found))

    return resolve


def system_nameservers() -> list[tuple[Address, int]]:
    """The nameservers in resolv.conf (read from the file: no query is sent)."""
    import dns.resolver

    try:
        names = dns.resolver.Resolver().nameservers
    except dns.resolver.NoResolverConfiguration:
        return []
    out = []
    for server in names:
        try:
            version, value, _ = parse_network(str(server))
        except ValueError:
            continue
        out.append(((version, value), 53))
    return out
