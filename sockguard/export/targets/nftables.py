"""nftables: an ``nft -f`` ruleset, table ``inet sockguard`` replaced whole on every load."""

from __future__ import annotations

from sockguard.export.model import Entry, Net, Service, dedupe_nested, merge_entries
from sockguard.export.plan import Plan
from sockguard.export.targets.common import (
    address_allows,
    comment,
    deny_entries_for,
    dns_entries,
    header_lines,
    note_local_dns,
    note_name_denies,
)


def _nft_ports(ports: tuple[tuple[int, int], ...]) -> str:
    items = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ports]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


# Refused at once (the connect fails with EHOSTUNREACH, a datagram with EPERM), as the guard
# refuses at once; a silent drop would leave TCP retrying its SYN until it times out.
NFT_REJECT = "reject with icmpx type admin-prohibited"


def render_nftables(plan: Plan) -> str:
    """An ``nft -f`` ruleset: table ``inet sockguard``, replaced whole on every load."""
    allows = address_allows(plan, "nftables")
    note_name_denies(plan, "nftables")
    note_local_dns(plan, "nftables")
    sets: list[str] = []
    rules: list[str] = []
    counter = {"allow": 0, "deny": 0}

    def add_set(kind: str, version: int, service: Service, items: list[tuple[Net, str]]) -> str:
        counter[kind] += 1
        name = f"{kind}_v{version}_{counter[kind]}"
        body = [
            f"\tset {name} {{",
            f"\t\t{comment(kind + ': ' + service.describe())}",
            f"\t\ttype {'ipv4_addr' if version == 4 else 'ipv6_addr'}",
            "\t\tflags interval",
            "\t\telements = {",
        ]
        for net, labels in dedupe_nested(items):
            body.append(f"\t\t\t{net.short()},  {comment('; '.join(labels))}")
        body += ["\t\t}", "\t}"]
        sets.append("\n".join(body))
        return name

    def emit(kind: str, entries: list[Entry], verdict: str) -> None:
        grouped: dict[tuple[int, Service], list[tuple[Net, str]]] = {}
        for e in merge_entries(entries):
            grouped.setdefault((e.net.version, e.service), []).append((e.net, e.label))
        for (version, service), items in sorted(grouped.items(), key=lambda kv: (kv[0][0], not kv[0][1].is_all)):
            name = add_set(kind, version, service, items)
            match = f"{'ip' if version == 4 else 'ip6'} daddr @{name}"
            if service.is_all:
                rules.append(f"\t\t{match} {verdict}")
                continue
            if service.other:
                rules.append(f"\t\t{match} meta l4proto != {{ tcp, udp }} {verdict}")
            if service.ports:
                rules.append(f"\t\t{match} meta l4proto {{ tcp, udp }} th dport {_nft_ports(service.ports)} {verdict}")

    allows = dns_entries(plan) + allows
    emit("deny", deny_entries_for(plan, "nftables", allows), NFT_REJECT)
    if plan.allow_loopback:
        rules.append("\t\tip daddr 127.0.0.0/8 accept")
        rules.append("\t\tip6 daddr ::1 accept")
    emit("allow", allows, "accept")

    lines = header_lines(plan, "nftables")
    lines += [
        "# Load with: nft -f FILE (replaces table inet sockguard only; other tables are untouched).",
        "table inet sockguard",
        "delete table inet sockguard",
        "table inet sockguard {",
        *sets,
        "\tchain egress {",
        "\t\ttype filter hook output priority filter; policy drop;",
        "\t\tct state established,related accept",
        "\t\ticmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld2-listener-report } accept",
        *rules,
        f'\t\tcounter {NFT_REJECT} comment "sockguard: not in the allowlist"',
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"
