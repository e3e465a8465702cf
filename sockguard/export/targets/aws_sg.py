"""AWS security groups: a JSON list of IpPermissions for ``aws ec2 authorize-security-group-egress``."""

from __future__ import annotations

import json
from typing import Any

from sockguard.addresses import classify
from sockguard.export.model import flatten, group_by_service, join_labels
from sockguard.export.plan import Plan
from sockguard.export.targets.common import address_allows, deny_entries_for, dns_entries, note_name_denies

_SG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-:/()#,@[]+=&;{}!$*")


def sg_description(labels: tuple[str, ...]) -> str:
    """At most 255 characters from the set AWS allows in a rule description."""
    text = "sockguard: " + ", ".join(labels)
    text = "".join(c if c in _SG_CHARS else "_" for c in text)
    return text if len(text) <= 255 else text[:252] + "..."


def render_aws_sg(plan: Plan) -> str:
    """A JSON list of IpPermissions for ``aws ec2 authorize-security-group-egress --ip-permissions file://FILE``."""
    allows = address_allows(plan, "aws-sg")
    note_name_denies(plan, "aws-sg")
    dns = dns_entries(plan)
    for entry in list(dns):
        category = classify((entry.net.version, entry.net.network))
        if category in ("loopback", "link-local"):
            dns.remove(entry)
            plan.messages.note(
                f"aws-sg: DNS server {entry.net.short()} is {category}; not added (security groups do not filter "
                "the Amazon-provided DNS server)"
            )
    segments = flatten(dns + allows, deny_entries_for(plan, "aws-sg", dns + allows))
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
            what = "so only tcp/udp are exported" if service.ports else "and no tcp/udp port is left: not exported"
            plan.messages.warn(
                f"aws-sg: {join_labels(lbl for s in segs for lbl in s.labels)}: a deny with ports leaves other "
                f"protocols (icmp, ...) allowed; a security group cannot say 'all but these tcp/udp ports', {what} "
                "(narrower)"
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
