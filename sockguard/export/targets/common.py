"""Pieces every renderer shares: names as addresses, the DNS rule, the deny entries with their IPv6 forms,
notes about what a target cannot see, and the header of host-firewall files."""

from __future__ import annotations

import time

from sockguard.addresses import classify, format_address
from sockguard.display import ascii_printable
from sockguard.export.model import Entry, Service, allow_entries, deny_entries, host_net
from sockguard.export.plan import Plan


def deny_entries_for(plan: Plan, target: str, allows: list[Entry], any_v6: bool = False) -> list[Entry]:
    entries, teredo = deny_entries(plan.deny_cidrs, [e.net for e in allows if e.net.version == 6], any_v6)
    for entry in teredo:
        plan.messages.warn(
            f"{target}: deny {entry.label}: Teredo addresses hide their IPv4 host, so all of 2001::/32 is denied "
            "(narrower)"
        )
    return entries


def dns_entries(plan: Plan) -> list[Entry]:
    if not plan.dns:
        return []
    dns = Service(False, ((53, 53),))
    return [
        Entry(host_net(addr), dns if port == 53 else Service(False, ((port, port),)), "DNS to the resolver")
        for addr, port in plan.dns_servers
    ]


def note_local_dns(plan: Plan, target: str) -> None:
    """A stub resolver on loopback (systemd-resolved, dnsmasq) forwards to upstream servers
    from this same host: a host firewall must allow those too."""
    for addr, _ in plan.dns_servers if plan.dns else ():
        if classify(addr) == "loopback":
            plan.messages.note(
                f"{target}: DNS server {format_address(addr)} is on this host (a stub resolver?); allow its "
                "upstream servers too (--dns-server UPSTREAM), or lookups fail"
            )


def note_name_denies(plan: Plan, target: str) -> None:
    for rule in plan.deny:
        if rule.kind != "cidr":
            plan.messages.note(
                f"{target}: deny rule {rule.text!r} is a name; the export denies it by leaving it out "
                "(its addresses stay reachable if another rule allows them, as in sockguard)"
            )


def address_allows(plan: Plan, target: str) -> list[Entry]:
    """CIDR allows plus every exact name as the addresses it resolves to now.

    Addresses sockguard would refuse for a name (internal ranges, metadata) are left
    out, as the guard blocks them unless an IP/CIDR rule covers them.
    """
    entries = allow_entries(plan.allow_cidrs)
    for name in plan.names:
        rule = name.rule
        if rule.kind == "wildcard":
            plan.messages.warn(
                f"{target}: {rule.text!r}: a wildcard cannot be expressed as addresses (its names are unknown); "
                "not exported, so those names are blocked"
            )
            continue
        found = plan.resolved.get(rule.host) if plan.resolved is not None else None
        if found is None:
            plan.messages.warn(f"{target}: {rule.text!r}: not resolved (--no-resolve); not exported, so it is blocked")
            continue
        if found.error:
            plan.messages.warn(f"{target}: {rule.text!r}: cannot resolve {rule.host} ({found.error}); not exported")
            continue
        kept = []
        for addr, ttl in found.addresses:
            category = classify(addr)
            shown = format_address(addr)
            if category == "loopback" and plan.allow_loopback:
                plan.messages.note(f"{target}: {rule.host} resolves to loopback {shown}, allowed anyway (loopback)")
                continue
            if category is not None:
                plan.messages.note(
                    f"{target}: {rule.host} resolves to {shown} ({category}); sockguard blocks a name that resolves "
                    "to an internal address unless an IP/CIDR rule covers it, so it is left out"
                )
                continue
            kept.append((addr, ttl))
            entries.append(Entry(host_net(addr), name.service, f"{rule.host} ttl {ttl}s"))
        if kept:
            shown = ", ".join(format_address(a) for a, _ in kept)
            ttl = min(t for _, t in kept)
            plan.messages.warn(
                f"{target}: {rule.text!r} exported as the addresses it has now ({shown}; ttl {ttl}s). Addresses "
                "change: re-export before the TTL runs out; any process may reach these addresses directly or "
                "under other names"
            )
        elif not found.addresses:
            plan.messages.warn(f"{target}: {rule.text!r}: {rule.host} has no A/AAAA records; not exported")
    return entries


def comment(text: str) -> str:
    """A ``#`` comment line of a host-firewall file: printable ASCII only, every other character (a newline
    above all: it would end the comment and start a rule) written as a ``\\xNN`` escape."""
    return "# " + ascii_printable(text, backslash=False)  # free text reached here through display.portable()


def header_lines(plan: Plan, target: str) -> list[str]:
    """The header of a host-firewall file: what made it, from which policy, the warnings. Generated as
    comments from escaped text: a configuration path or a DNS error message cannot inject a line."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = [
        f"sockguard export --format {target}, generated {now}",
        f"policy: {plan.source}; loopback {'allowed' if plan.allow_loopback else 'blocked'}",
    ]
    if plan.resolved:
        ttls = [t for r in plan.resolved.values() for _, t in r.addresses]
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(plan.resolved_at or time.time()))
        ttl_text = f"; shortest TTL {min(ttls)}s: addresses change, re-export before then" if ttls else ""
        lines.append(f"names resolved at {when} via {plan.resolver}{ttl_text}")
    lines += [f"warning: {w}" for w in plan.messages.warnings]
    return [comment(line) for line in lines]


#: Characters an iptables ``--comment "..."`` keeps as they are; the rest is percent-encoded (UTF-8).
_IPT_COMMENT_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - set("\"'\\%`$")


def comment_text(text: str, limit: int = 255) -> str:
    """Text for ``-m comment --comment "..."``: no quote, backslash or shell character to end or bend the
    argument, nothing outside printable ASCII; at most ``limit`` characters (the module's limit is 256)."""
    pieces = [c if c in _IPT_COMMENT_CHARS else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
              for c in text]  # fmt: skip
    if sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    out, size = [], 0
    for piece in pieces:  # cut between pieces, never inside a %XX
        if size + len(piece) > limit - 3:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out) + "..."
