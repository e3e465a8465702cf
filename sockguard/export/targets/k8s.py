"""Kubernetes: a networking.k8s.io/v1 NetworkPolicy (JSON, which kubectl and YAML parsers accept)."""

from __future__ import annotations

import json
from typing import Any

from sockguard.export.model import Service, allow_entries, blocks_with_except, flatten, group_by_service, maximal_nets
from sockguard.export.plan import Plan
from sockguard.export.targets.common import deny_entries_for, note_name_denies


def _k8s_ports(service: Service) -> list[dict[str, Any]]:
    out = []
    for lo, hi in service.ports:
        for proto in ("TCP", "UDP"):
            item: dict[str, Any] = {"protocol": proto, "port": lo}
            if hi > lo:
                item["endPort"] = hi
            out.append(item)
    return out


#: Kubernetes refuses an object whose annotations exceed 256 KiB in total; keep well below it.
MAX_ANNOTATION = 64 * 1024


def _bounded_lines(lines: list[str], limit: int) -> str:
    """The lines joined, cut to at most ``limit`` characters with a count of what was left out."""
    kept: list[str] = []
    size = 0
    for i, line in enumerate(lines):
        if size + len(line) + 1 > limit - 100:
            kept.append(f"... and {len(lines) - i} more warning(s) (see the export's stderr)")
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept)


def metadata(plan: Plan, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if plan.k8s.namespace:
        meta["namespace"] = plan.k8s.namespace
    annotations = {"sockguard/source": plan.source}
    if plan.messages.warnings:
        annotations["sockguard/warnings"] = _bounded_lines(plan.messages.warnings, MAX_ANNOTATION)
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
    note_name_denies(plan, "k8s")
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
    allows = allow_entries(plan.allow_cidrs)
    segments = flatten(allows, deny_entries_for(plan, "k8s", allows), keep_labels=False)
    containers = maximal_nets(e.net for e in allows)
    uses_ranges = False
    for service, segs in group_by_service(segments).items():
        if not service.ports and not service.is_all:
            plan.messages.warn(
                f"k8s: {', '.join(n.text() for s in segs[:5] for n in s.nets()[:1])}: only other protocols (icmp, "
                "...) are left after the denies, and a NetworkPolicy rule without ports would allow every port; "
                "not exported (narrower)"
            )
            continue
        peers = []
        for net, holes in blocks_with_except(segs, containers):
            block: dict[str, Any] = {"cidr": net.text()}
            if holes:
                block["except"] = [h.text() for h in holes]
            peers.append({"ipBlock": block})
        if not peers:  # "to: []" would mean every destination
            continue
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
        "metadata": metadata(plan, opts.name),
        "spec": {
            "podSelector": {"matchLabels": dict(opts.pod_labels)} if opts.pod_labels else {},
            "policyTypes": ["Egress"],
            "egress": egress,
        },
    }
    return json.dumps(policy, indent=2) + "\n"
