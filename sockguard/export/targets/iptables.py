"""iptables / ip6tables: ``iptables-restore --noflush`` input, chain SOCKGUARD-EGRESS plus the OUTPUT jump."""

from __future__ import annotations

from sockguard.export.model import Net, Service, merge_entries
from sockguard.export.plan import Plan
from sockguard.export.targets.common import (
    address_allows,
    comment_text,
    deny_entries_for,
    dns_entries,
    header_lines,
    note_local_dns,
    note_name_denies,
)

IPT_REJECT = {4: "REJECT --reject-with icmp-admin-prohibited", 6: "REJECT --reject-with icmp6-adm-prohibited"}
CHAIN = "SOCKGUARD-EGRESS"


def _multiport_chunks(ports: tuple[tuple[int, int], ...]) -> list[list[tuple[int, int]]]:
    """multiport takes at most 15 ports, a range counting as two."""
    chunks: list[list[tuple[int, int]]] = [[]]
    used = 0
    for lo, hi in ports:
        cost = 1 if lo == hi else 2
        if used + cost > 15:
            chunks.append([])
            used = 0
        chunks[-1].append((lo, hi))
        used += cost
    return chunks


def _ipt_lines(net: Net, service: Service, comment: str, target: str) -> list[str]:
    base = f"-A {CHAIN} -d {net.text()}"
    tail = f'-m comment --comment "{comment_text(comment)}" -j {target}'
    if service.is_all:
        return [f"{base} {tail}"]
    if not service.ports:
        return []  # other protocols only: no port list, and never an empty one (the caller warns)
    out = []
    for proto in ("tcp", "udp"):
        for chunk in _multiport_chunks(service.ports):
            spec = [str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in chunk]
            if len(spec) == 1:
                out.append(f"{base} -p {proto} -m {proto} --dport {spec[0]} {tail}")
            else:
                out.append(f"{base} -p {proto} -m multiport --dports {','.join(spec)} {tail}")
    return out


def render_iptables(plan: Plan, version: int) -> str:
    """``iptables-restore`` (IPv4) or ``ip6tables-restore`` (IPv6) input: chain SOCKGUARD-EGRESS."""
    target = "iptables" if version == 4 else "ip6tables"
    all_allows = merge_entries(dns_entries(plan) + address_allows(plan, target))
    denies = merge_entries(deny_entries_for(plan, target, all_allows))
    note_name_denies(plan, target)
    note_local_dns(plan, target)
    other_family = sorted({e.label for e in all_allows + denies if e.net.version != version})
    if other_family:
        other = "ip6tables" if version == 4 else "iptables"
        plan.messages.note(
            f"{target}: {len(other_family)} IPv{10 - version} destination(s) are not in this file "
            f"({', '.join(other_family[:5])}); export them with --format {other}"
        )
    body: list[str] = []
    for e in denies:
        if e.net.version == version:
            body += _ipt_lines(e.net, e.service, e.label, IPT_REJECT[version])
    if plan.allow_loopback:
        loop = "127.0.0.0/8" if version == 4 else "::1/128"
        body.append(f'-A {CHAIN} -d {loop} -m comment --comment "loopback" -j ACCEPT')
    for e in all_allows:
        if e.net.version != version:
            continue
        if e.service.partial_other and not e.service.ports:
            plan.messages.warn(
                f"{target}: {e.label}: only other protocols (icmp, ...) are left after the denies, and iptables "
                "cannot match 'neither tcp nor udp' in one rule; not exported (narrower)"
            )
        elif e.service.partial_other:
            plan.messages.warn(
                f"{target}: {e.label}: other protocols (icmp, ...) cannot be allowed next to a partial port list "
                "in one rule; only tcp/udp are exported (narrower)"
            )
        body += _ipt_lines(e.net, e.service, e.label, "ACCEPT")
    lines = header_lines(plan, target)
    lines += [
        f"# Load with: {target}-restore --noflush FILE (creates or flushes chain {CHAIN}, adds the OUTPUT jump;",
        "# a jump added twice is harmless: the chain ends every packet with ACCEPT or REJECT).",
        "*filter",
        f":{CHAIN} - [0:0]",
        f"-A {CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    if version == 6:
        lines += [
            f"-A {CHAIN} -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT" for t in (133, 135, 136, 143)
        ]  # router/neighbour solicitation, neighbour advertisement, MLDv2 report
    lines += body
    lines += [
        f'-A {CHAIN} -m comment --comment "sockguard: not in the allowlist" -j {IPT_REJECT[version]}',
        f"-A OUTPUT -j {CHAIN}",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"
