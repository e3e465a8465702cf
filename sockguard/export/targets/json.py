"""``--format json``: the parsed policy with resolved addresses, warnings and notes, for other tools."""

from __future__ import annotations

import json
from typing import Any

from sockguard.addresses import classify, format_address
from sockguard.display import portable
from sockguard.export.model import net_of
from sockguard.export.plan import Plan
from sockguard.rules import Rule


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
                data["error"] = portable(found.error)
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
