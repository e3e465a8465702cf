"""Cilium: a cilium.io/v2 CiliumNetworkPolicy: toFQDNs for names, toCIDRSet for addresses, egressDeny for
deny CIDRs and for sockguard's internal ranges, and the DNS-proxy rule toFQDNs needs."""

from __future__ import annotations

import json
from typing import Any

from sockguard.export.model import (
    TEREDO,
    Net,
    Service,
    allow_entries,
    maximal_nets,
    merge_entries,
    name_unreachable,
)
from sockguard.export.plan import Plan
from sockguard.export.targets.common import deny_entries_for
from sockguard.export.targets.k8s import metadata
from sockguard.rules import Rule

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
    # Where a name must not lead (internal ranges minus the CIDR allows). Cilium denies match ports, not icmp:
    # if some of those segments are denied only on some ports, names must not carry other protocols at all.
    unreachable = name_unreachable(plan.allow_cidrs) if plan.names else []
    icmp_leak = sorted({n.text() for s in unreachable if not s.service.is_all for n in s.nets()})
    fqdn_groups: dict[Service, list[dict[str, str]]] = {}
    for name in plan.names:
        rule = name.rule
        service = name.service
        if name.partial_denies:
            denied = ", ".join(d.text for d in name.partial_denies)
            msgs.warn(
                f"cilium: {rule.text!r}: deny rule(s) {denied} cover only some of its names and Cilium cannot deny "
                f"by name; exported for {service.describe()} for all of its names (narrower)"
            )
        if not service.ports and not service.is_all:
            msgs.warn(
                f"cilium: {rule.text!r}: no tcp/udp port is left after the denies, and toFQDNs cannot allow other "
                "protocols alone; not exported (narrower)"
            )
            continue
        if service.other and icmp_leak:
            service = Service(False, service.ports)
            msgs.warn(
                f"cilium: names are exported for tcp/udp only: a name that resolves into {', '.join(icmp_leak[:5])} "
                "(internal, allowed on some ports by a CIDR rule) must not be reached with icmp, and Cilium deny "
                "rules cannot match icmp (narrower)"
            )
        elif service.partial_other:
            msgs.warn(f"cilium: {rule.text!r}: only tcp/udp ports are exported, not other protocols (narrower)")
            service = Service(False, service.ports)
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
        fqdn_groups.setdefault(service, []).append(cilium_selector(rule, version))
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

    allows = merge_entries(allow_entries(plan.allow_cidrs))
    cidr_groups: dict[Service, list[Net]] = {}
    for entry in allows:
        cidr_groups.setdefault(entry.service, []).append(entry.net)
    for service, nets in sorted(cidr_groups.items(), key=lambda kv: (not kv[0].is_all, kv[0].ports)):
        rule_out = {"toCIDRSet": [{"cidr": n.text()} for n in nets]}
        if not service.is_all:
            rule_out["toPorts"] = _cilium_port_rules(service)
            uses_ranges = uses_ranges or any(hi > lo for lo, hi in service.ports)
        egress.append(rule_out)

    deny_groups: dict[Service, list[Net]] = {}
    for entry in merge_entries(deny_entries_for(plan, "cilium", allows, any_v6=bool(fqdn_groups))):
        deny_groups.setdefault(entry.service, []).append(entry.net)
    if fqdn_groups:
        for segment in unreachable:
            deny_service = segment.service if segment.service.is_all else Service(False, segment.service.ports)
            if not deny_service.empty:  # the icmp part cannot be denied: names carry no icmp then (above)
                deny_groups.setdefault(deny_service, []).extend(segment.nets())
        msgs.note(
            "cilium: egressDeny lists sockguard's internal ranges (private, link-local, metadata, ...) and their "
            "IPv6 forms (mapped, compatible, NAT64, 6to4): toFQDNs would admit a name that resolves there, "
            "sockguard does not"
        )
        if any(s.lo <= TEREDO.first <= s.hi or TEREDO.first <= s.lo <= TEREDO.last for s in unreachable):
            # A note, not a warning: Teredo addresses belong to NATed clients tunnelling IPv6 (RFC 4380), never
            # to servers, so a name that resolves to one loses no legitimate destination (docs/export.md).
            msgs.note(
                "cilium: names that resolve to Teredo addresses (2001::/32) are denied: a Teredo address hides its "
                "IPv4 host, so no CIDR can tell internal from public ones, and no server has one"
            )
    deny_out: list[dict[str, Any]] = []
    for service, nets in sorted(deny_groups.items(), key=lambda kv: (not kv[0].is_all, kv[0].ports)):
        item: dict[str, Any] = {"toCIDRSet": [{"cidr": n.text()} for n in maximal_nets(nets)]}
        if not service.is_all:
            item["toPorts"] = _cilium_port_rules(service)
            uses_ranges = uses_ranges or any(hi > lo for lo, hi in service.ports)
        deny_out.append(item)

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
        "metadata": metadata(plan, opts.name),
        "spec": spec,
    }
    return json.dumps(policy, indent=2) + "\n"
