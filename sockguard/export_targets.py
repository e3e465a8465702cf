"""Renderers for ``sockguard export``: one function per target format.

Each takes a :class:`Plan` (the parsed policy, resolved names, options) and returns
the text to write; whatever a target cannot say goes to ``plan.messages`` as a
warning (the export is then narrower, never wider) or a note (informational).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sockguard.addresses import Address, classify, format_address
from sockguard.export_model import (
    ALL,
    FULL,
    Entry,
    NameAllow,
    Net,
    Service,
    blocks_with_except,
    cidr_entries,
    dedupe_nested,
    deny_entries,
    flatten,
    group_by_service,
    host_net,
    internal_nets,
    maximal_nets,
    net_of,
)
from sockguard.rules import Rule


class Resolution(NamedTuple):
    addresses: tuple[tuple[Address, int], ...]  # (address, ttl seconds)
    error: str | None = None


@dataclass
class Messages:
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


@dataclass
class K8sOptions:
    name: str = "sockguard-egress"
    namespace: str | None = None
    pod_labels: dict[str, str] = field(default_factory=dict)
    dns_namespace: str = "kube-system"
    dns_labels: dict[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})
    cilium_version: tuple[int, int] = (1, 19)
    dns_names: str = "any"  # cilium: "any" or "policy"


@dataclass
class Plan:
    source: str
    allow: tuple[Rule, ...]
    deny: tuple[Rule, ...]
    names: list[NameAllow]  # name/wildcard allows after name denies
    allow_loopback: bool = True
    resolved: dict[str, Resolution] | None = None  # None: names were not resolved
    resolver: str = "system resolver"
    resolved_at: float | None = None
    dns_servers: list[tuple[Address, int]] = field(default_factory=list)
    dns: bool = True
    k8s: K8sOptions = field(default_factory=K8sOptions)
    messages: Messages = field(default_factory=Messages)

    @property
    def allow_cidrs(self) -> list[Rule]:
        return [r for r in self.allow if r.kind == "cidr"]

    @property
    def deny_cidrs(self) -> list[Rule]:
        return [r for r in self.deny if r.kind == "cidr"]


# --- shared pieces ----------------------------------------------------------------------------


def _deny_entries(plan: Plan, target: str, allows: list[Entry], any_v6: bool = False) -> list[Entry]:
    entries, teredo = deny_entries(plan.deny_cidrs, [e.net for e in allows if e.net.version == 6], any_v6)
    for entry in teredo:
        plan.messages.warn(
            f"{target}: deny {entry.label}: Teredo addresses hide their IPv4 host, so all of 2001::/32 is denied "
            "(narrower)"
        )
    return entries


def _dns_entries(plan: Plan) -> list[Entry]:
    if not plan.dns:
        return []
    dns = Service(False, ((53, 53),))
    return [
        Entry(host_net(addr), dns if port == 53 else Service(False, ((port, port),)), "DNS to the resolver")
        for addr, port in plan.dns_servers
    ]


def _note_local_dns(plan: Plan, target: str) -> None:
    """A stub resolver on loopback (systemd-resolved, dnsmasq) forwards to upstream servers
    from this same host: a host firewall must allow those too."""
    for addr, _ in plan.dns_servers if plan.dns else ():
        if classify(addr) == "loopback":
            plan.messages.note(
                f"{target}: DNS server {format_address(addr)} is on this host (a stub resolver?); allow its "
                "upstream servers too (--dns-server UPSTREAM), or lookups fail"
            )


def _note_name_denies(plan: Plan, target: str) -> None:
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
    entries = cidr_entries(plan.allow_cidrs)
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


def _header_lines(plan: Plan, target: str) -> list[str]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = [
        f"# sockguard export --format {target}, generated {now}",
        f"# policy: {plan.source}; loopback {'allowed' if plan.allow_loopback else 'blocked'}",
    ]
    if plan.resolved:
        ttls = [t for r in plan.resolved.values() for _, t in r.addresses]
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(plan.resolved_at or time.time()))
        ttl_text = f"; shortest TTL {min(ttls)}s: addresses change, re-export before then" if ttls else ""
        lines.append(f"# names resolved at {when} via {plan.resolver}{ttl_text}")
    return lines


def _comment_text(text: str, limit: int = 255) -> str:
    clean = "".join(c if c.isprintable() and c not in "\"'\\" else "_" for c in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


# --- nftables ---------------------------------------------------------------------------------


def _nft_ports(ports: tuple[tuple[int, int], ...]) -> str:
    items = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ports]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


# Refused at once (the connect fails with EHOSTUNREACH, a datagram with EPERM), as the guard
# refuses at once; a silent drop would leave TCP retrying its SYN until it times out.
NFT_REJECT = "reject with icmpx type admin-prohibited"
IPT_REJECT = {4: "REJECT --reject-with icmp-admin-prohibited", 6: "REJECT --reject-with icmp6-adm-prohibited"}


def render_nftables(plan: Plan) -> str:
    """An ``nft -f`` ruleset: table ``inet sockguard``, replaced whole on every load."""
    allows = address_allows(plan, "nftables")
    _note_name_denies(plan, "nftables")
    _note_local_dns(plan, "nftables")
    sets: list[str] = []
    rules: list[str] = []
    counter = {"allow": 0, "deny": 0}

    def add_set(kind: str, version: int, service: Service, items: list[tuple[Net, str]]) -> str:
        counter[kind] += 1
        name = f"{kind}_v{version}_{counter[kind]}"
        body = [
            f"\tset {name} {{",
            f"\t\t# {kind}: {service.describe()}",
            f"\t\ttype {'ipv4_addr' if version == 4 else 'ipv6_addr'}",
            "\t\tflags interval",
            "\t\telements = {",
        ]
        for net, labels in dedupe_nested(items):
            body.append(f"\t\t\t{net.short()},  # {'; '.join(labels)}".replace("\n", " "))
        body += ["\t\t}", "\t}"]
        sets.append("\n".join(body))
        return name

    def emit(kind: str, entries: list[Entry], verdict: str) -> None:
        grouped: dict[tuple[int, Service], list[tuple[Net, str]]] = {}
        for e in entries:
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

    allows = _dns_entries(plan) + allows
    emit("deny", _deny_entries(plan, "nftables", allows), NFT_REJECT)
    if plan.allow_loopback:
        rules.append("\t\tip daddr 127.0.0.0/8 accept")
        rules.append("\t\tip6 daddr ::1 accept")
    emit("allow", allows, "accept")

    lines = _header_lines(plan, "nftables")
    lines += [f"# warning: {w}" for w in plan.messages.warnings]
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


# --- iptables ---------------------------------------------------------------------------------

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
    tail = f'-m comment --comment "{_comment_text(comment)}" -j {target}'
    if service.is_all:
        return [f"{base} {tail}"]
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
    all_allows = _dns_entries(plan) + address_allows(plan, target)
    denies = _deny_entries(plan, target, all_allows)
    _note_name_denies(plan, target)
    _note_local_dns(plan, target)
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
        if e.service.partial_other:
            plan.messages.warn(
                f"{target}: {e.label}: other protocols (icmp, ...) cannot be allowed next to a partial port list "
                "in one rule; only tcp/udp are exported (narrower)"
            )
        body += _ipt_lines(e.net, e.service, e.label, "ACCEPT")
    lines = _header_lines(plan, target)
    lines += [f"# warning: {w}" for w in plan.messages.warnings]
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


# --- AWS security group -----------------------------------------------------------------------

_SG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-:/()#,@[]+=&;{}!$*")


def sg_description(labels: tuple[str, ...]) -> str:
    """At most 255 characters from the set AWS allows in a rule description."""
    text = "sockguard: " + ", ".join(labels)
    text = "".join(c if c in _SG_CHARS else "_" for c in text)
    return text if len(text) <= 255 else text[:252] + "..."


def render_aws_sg(plan: Plan) -> str:
    """A JSON list of IpPermissions for ``aws ec2 authorize-security-group-egress --ip-permissions file://FILE``."""
    allows = address_allows(plan, "aws-sg")
    _note_name_denies(plan, "aws-sg")
    dns = _dns_entries(plan)
    for entry in list(dns):
        category = classify((entry.net.version, entry.net.network))
        if category in ("loopback", "link-local"):
            dns.remove(entry)
            plan.messages.note(
                f"aws-sg: DNS server {entry.net.short()} is {category}; not added (security groups do not filter "
                "the Amazon-provided DNS server)"
            )
    segments = flatten(dns + allows, _deny_entries(plan, "aws-sg", dns + allows))
    permissions: list[dict[str, Any]] = []
    rule_count = 0
    for service, segs in group_by_service(segments).items():
        ranges: dict[str, Any] = {}
        v4 = [
            {"CidrIp": n.text(), "Description": sg_description(s.labels)}
            for s in segs
            if s.version == 4
            for n in s.nets()
        ]
        v6 = [
            {"CidrIpv6": n.text(), "Description": sg_description(s.labels)}
            for s in segs
            if s.version == 6
            for n in s.nets()
        ]
        if v4:
            ranges["IpRanges"] = v4
        if v6:
            ranges["Ipv6Ranges"] = v6
        if service.is_all:
            permissions.append({"IpProtocol": "-1", **ranges})
            rule_count += len(v4) + len(v6)
            continue
        if service.other:
            plan.messages.warn(
                f"aws-sg: {', '.join(sorted({lbl for s in segs for lbl in s.labels}))}: a deny with ports leaves "
                "other protocols (icmp, ...) allowed; a security group cannot say 'all but these tcp/udp ports', "
                "so only tcp/udp are exported (narrower)"
            )
        for lo, hi in service.ports:
            for proto in ("tcp", "udp"):
                permissions.append({"IpProtocol": proto, "FromPort": lo, "ToPort": hi, **ranges})
                rule_count += len(v4) + len(v6)
    plan.messages.note(
        "aws-sg: security groups only allow; a new group's default 'all traffic' egress rule must be revoked "
        "for this list to restrict anything"
    )
    plan.messages.note(
        "aws-sg: security groups never filter the instance metadata service (169.254.169.254), the Amazon DNS "
        "server or time sync; sockguard blocks metadata unless allowed: use IMDSv2 with hop limit 1 or disable it"
    )
    if rule_count > 60:
        plan.messages.note(f"aws-sg: {rule_count} rules; the default quota is 60 outbound rules per security group")
    if not permissions:
        plan.messages.note("aws-sg: the policy allows nothing: an empty list means no egress once defaults are revoked")
    return json.dumps(permissions, indent=2) + "\n"


# --- Kubernetes NetworkPolicy -----------------------------------------------------------------


def _k8s_ports(service: Service) -> list[dict[str, Any]]:
    out = []
    for lo, hi in service.ports:
        for proto in ("TCP", "UDP"):
            item: dict[str, Any] = {"protocol": proto, "port": lo}
            if hi > lo:
                item["endPort"] = hi
            out.append(item)
    return out


def _metadata(plan: Plan, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if plan.k8s.namespace:
        meta["namespace"] = plan.k8s.namespace
    annotations = {"sockguard/source": plan.source}
    if plan.messages.warnings:
        annotations["sockguard/warnings"] = "\n".join(plan.messages.warnings)
    meta["annotations"] = annotations
    return meta


def render_k8s(plan: Plan) -> str:
    """A networking.k8s.io/v1 NetworkPolicy (JSON, which kubectl and YAML parsers accept)."""
    opts = plan.k8s
    for name in plan.names:
        plan.messages.warn(
            f"k8s: {name.rule.text!r}: a NetworkPolicy has no names (only IP blocks); not exported, so it is "
            "blocked. Use --format cilium for names, or add IP/CIDR rules"
        )
    _note_name_denies(plan, "k8s")
    egress: list[dict[str, Any]] = []
    if plan.dns:
        egress.append(
            {
                "to": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": opts.dns_namespace}},
                        "podSelector": {"matchLabels": dict(opts.dns_labels)},
                    }
                ],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }
        )
    allows = cidr_entries(plan.allow_cidrs)
    segments = flatten(allows, _deny_entries(plan, "k8s", allows), keep_labels=False)
    containers = maximal_nets(e.net for e in allows)
    uses_ranges = False
    for service, segs in group_by_service(segments).items():
        peers = []
        for net, holes in blocks_with_except(segs, containers):
            block: dict[str, Any] = {"cidr": net.text()}
            if holes:
                block["except"] = [h.text() for h in holes]
            peers.append({"ipBlock": block})
        rule: dict[str, Any] = {"to": peers}
        if not service.is_all:
            if service.other:
                plan.messages.warn(
                    f"k8s: {', '.join(p['ipBlock']['cidr'] for p in peers)}: a deny with ports leaves other "
                    "protocols allowed; NetworkPolicy ports cannot say 'all but these', so only tcp/udp are "
                    "exported (narrower)"
                )
            rule["ports"] = _k8s_ports(service)
            uses_ranges = uses_ranges or any(hi > lo for lo, hi in service.ports)
        egress.append(rule)
    if uses_ranges:
        plan.messages.note("k8s: port ranges use endPort (Kubernetes >= 1.25, and the network plugin must support it)")
    if plan.allow_cidrs:
        plan.messages.note(
            "k8s: ipBlock rules are meant for addresses outside the cluster; whether they match pod or service "
            "addresses depends on the network plugin"
        )
    plan.messages.note("k8s: NetworkPolicies add up: another policy selecting the same pods can allow more")
    plan.messages.note("k8s: loopback and unix sockets are not subject to NetworkPolicy (pod-local)")
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(plan, opts.name),
        "spec": {
            "podSelector": {"matchLabels": dict(opts.pod_labels)} if opts.pod_labels else {},
            "policyTypes": ["Egress"],
            "egress": egress,
        },
    }
    return json.dumps(policy, indent=2) + "\n"


# --- Cilium -----------------------------------------------------------------------------------

MULTI_LABEL_VERSION = (1, 19)  # "**." matches several labels from Cilium 1.19 on
PORT_RANGE_VERSION = (1, 16)  # endPort is enforced from Cilium 1.16 on


def _cilium_port_rules(service: Service, protocols: tuple[str, ...] = ("TCP", "UDP")) -> list[dict[str, Any]]:
    ports = []
    for lo, hi in service.ports:
        for proto in protocols:
            item: dict[str, Any] = {"port": str(lo), "protocol": proto}
            if hi > lo:
                item["endPort"] = hi
            ports.append(item)
    return [{"ports": ports[i : i + 40]} for i in range(0, len(ports), 40)]  # the CRD allows 40 per rule


def cilium_selector(rule: Rule, version: tuple[int, int]) -> dict[str, str]:
    if rule.kind == "name":
        return {"matchName": rule.host}
    prefix = "**." if version >= MULTI_LABEL_VERSION else "*."
    return {"matchPattern": prefix + rule.host}


def render_cilium(plan: Plan) -> str:
    """A cilium.io/v2 CiliumNetworkPolicy: toFQDNs for names, toCIDRSet for addresses,
    egressDeny for deny CIDRs, and the DNS-proxy rule toFQDNs needs."""
    opts = plan.k8s
    msgs = plan.messages
    version = opts.cilium_version
    egress: list[dict[str, Any]] = []
    fqdn_groups: dict[Service, list[dict[str, str]]] = {}
    for name in plan.names:
        rule = name.rule
        if name.partial_denies:
            denied = ", ".join(d.text for d in name.partial_denies)
            msgs.warn(
                f"cilium: {rule.text!r}: deny rule(s) {denied} cover only some of its names and Cilium cannot deny "
                f"by name; exported for {name.service.describe()} for all of its names (narrower)"
            )
        if name.service.partial_other:
            msgs.warn(f"cilium: {rule.text!r}: only tcp/udp ports are exported, not other protocols (narrower)")
        if rule.kind == "wildcard":
            if version < MULTI_LABEL_VERSION:
                msgs.warn(
                    f"cilium: {rule.text!r}: Cilium {version[0]}.{version[1]} '*' matches one label only; exported "
                    f"as *.{rule.host}, so deeper names are not covered (narrower); Cilium >= 1.19 supports **."
                )
            else:
                msgs.note(
                    f"cilium: {rule.text!r} exported as **.{rule.host} (any depth, needs Cilium >= 1.19; older "
                    "versions match one label only, narrower)"
                )
        fqdn_groups.setdefault(name.service, []).append(cilium_selector(rule, version))
    for rule in plan.deny:
        if rule.kind != "cidr":
            msgs.note(f"cilium: deny rule {rule.text!r} is a name; it is applied by narrowing the names it overlaps")

    dns_rules: list[dict[str, str]] = [{"matchPattern": "*"}]
    if plan.dns and opts.dns_names == "policy":
        dns_rules = [cilium_selector(n.rule, version) for n in plan.names]
        if dns_rules:
            msgs.note(
                "cilium: DNS lookups are limited to the policy's names; lookups through the resolver search list "
                "(ndots) are refused, so use fully qualified names"
            )
        else:
            msgs.note("cilium: the policy has no names, so no DNS rule (--dns-names policy)")
    elif plan.dns:
        msgs.note(
            "cilium: lookups of any name are allowed through kube-dns (connections are still limited); "
            "--dns-names policy limits lookups to the policy's names"
        )
    if plan.dns and dns_rules:
        egress.append(
            {
                "toEndpoints": [
                    {
                        "matchLabels": {
                            "k8s:io.kubernetes.pod.namespace": opts.dns_namespace,
                            **{f"k8s:{k}": v for k, v in opts.dns_labels.items()},
                        }
                    }
                ],
                "toPorts": [
                    {
                        "ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}],
                        "rules": {"dns": dns_rules},
                    }
                ],
            }
        )
    elif fqdn_groups:
        msgs.warn("cilium: --no-dns: toFQDNs rules only work when the DNS proxy sees the lookups; names will fail")

    uses_ranges = False
    for service, selectors in sorted(fqdn_groups.items(), key=lambda kv: (not kv[0].is_all, kv[0].ports)):
        rule_out: dict[str, Any] = {"toFQDNs": selectors}
        if not service.is_all:
            rule_out["toPorts"] = _cilium_port_rules(service)
            uses_ranges = uses_ranges or any(hi > lo for lo, hi in service.ports)
        egress.append(rule_out)

    allows = cidr_entries(plan.allow_cidrs)
    cidr_groups: dict[Service, list[Net]] = {}
    for entry in allows:
        cidr_groups.setdefault(entry.service, []).append(entry.net)
    for service, nets in sorted(cidr_groups.items(), key=lambda kv: (not kv[0].is_all, kv[0].ports)):
        rule_out = {"toCIDRSet": [{"cidr": n.text()} for n in nets]}
        if not service.is_all:
            rule_out["toPorts"] = _cilium_port_rules(service)
            uses_ranges = uses_ranges or any(hi > lo for lo, hi in service.ports)
        egress.append(rule_out)

    deny_out: list[dict[str, Any]] = []
    deny_groups: dict[Service, list[Net]] = {}
    for entry in _deny_entries(plan, "cilium", allows, any_v6=bool(fqdn_groups)):
        deny_groups.setdefault(entry.service, []).append(entry.net)
    for service, nets in sorted(deny_groups.items(), key=lambda kv: (not kv[0].is_all, kv[0].ports)):
        item: dict[str, Any] = {"toCIDRSet": [{"cidr": n.text()} for n in nets]}
        if not service.is_all:
            item["toPorts"] = _cilium_port_rules(service)
            uses_ranges = uses_ranges or any(hi > lo for lo, hi in service.ports)
        deny_out.append(item)

    if fqdn_groups:
        deny_out += _internal_denies(plan)

    if uses_ranges and version < PORT_RANGE_VERSION:
        msgs.warn(
            f"cilium: Cilium {version[0]}.{version[1]} ignores endPort, so port ranges shrink to their first port "
            "(narrower); Cilium >= 1.16 enforces ranges"
        )
    if plan.allow_cidrs:
        msgs.note("cilium: toCIDRSet only matches destinations outside the cluster, not pods or nodes")
    msgs.note("cilium: loopback and unix sockets are pod-local and not subject to network policy")

    spec: dict[str, Any] = {
        "description": f"sockguard egress policy from {plan.source}",
        "endpointSelector": {"matchLabels": dict(opts.pod_labels)} if opts.pod_labels else {},
        "enableDefaultDeny": {"egress": True},
        "egress": egress or [{}],
    }
    if deny_out:
        spec["egressDeny"] = deny_out
    policy = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": _metadata(plan, opts.name),
        "spec": spec,
    }
    return json.dumps(policy, indent=2) + "\n"


def _internal_denies(plan: Plan) -> list[dict[str, Any]]:
    """toFQDNs admits whatever a name resolves to; sockguard refuses a name that resolves to an
    internal address unless an IP/CIDR rule covers it. Deny those ranges minus the CIDR allows."""
    internal = [Entry(net, ALL, category) for net, category in internal_nets(include_loopback=False)]
    segments = flatten(internal, cidr_entries(plan.allow_cidrs), keep_labels=False)
    out: list[dict[str, Any]] = []
    for service, segs in group_by_service(segments).items():
        cidrs = [{"cidr": n.text()} for s in segs for n in s.nets()]
        item: dict[str, Any] = {"toCIDRSet": cidrs}
        if not service.is_all:
            item["toPorts"] = _cilium_port_rules(Service(False, service.ports))
            plan.messages.warn(
                f"cilium: names that resolve into {', '.join(c['cidr'] for c in cidrs[:5])} (internal, allowed only "
                "on some ports by a CIDR rule) can still reach it with icmp: Cilium deny rules match ports, not icmp"
            )
        out.append(item)
    plan.messages.note(
        "cilium: egressDeny lists sockguard's internal ranges (private, link-local, metadata, ...): toFQDNs would "
        "admit a name that resolves there, sockguard does not"
    )
    return out


# --- neutral JSON -----------------------------------------------------------------------------


def render_json(plan: Plan) -> str:
    """The parsed policy with resolved addresses, for tools sockguard has no format for."""

    def rule_data(rule: Rule) -> dict[str, Any]:
        data: dict[str, Any] = {"rule": rule.text, "kind": rule.kind}
        if rule.kind == "cidr":
            data["cidr"] = net_of(rule).text()
        else:
            data["host"] = rule.host
        data["ports"] = [list(rule.ports)] if rule.ports else None
        if rule.kind == "name" and plan.resolved is not None and rule.host in plan.resolved:
            found = plan.resolved[rule.host]
            data["addresses"] = [
                {"address": format_address(a), "ttl": t, "category": classify(a)} for a, t in found.addresses
            ]
            if found.error:
                data["error"] = found.error
                plan.messages.warn(f"json: {rule.text!r}: cannot resolve {rule.host} ({found.error})")
        return data

    payload = {
        "format": "sockguard-export/1",
        "source": plan.source,
        "allow_loopback": plan.allow_loopback,
        "allow": [rule_data(r) for r in plan.allow],
        "deny": [rule_data(r) for r in plan.deny],
        "dns_servers": [{"address": format_address(a), "port": p} for a, p in plan.dns_servers] if plan.dns else [],
        "resolved_at": plan.resolved_at,
    }
    payload["warnings"] = plan.messages.warnings
    payload["notes"] = plan.messages.notes
    return json.dumps(payload, indent=2) + "\n"


__all__ = [
    "FULL",
    "K8sOptions",
    "Messages",
    "Plan",
    "Resolution",
    "render_aws_sg",
    "render_cilium",
    "render_iptables",
    "render_json",
    "render_k8s",
    "render_nftables",
]
