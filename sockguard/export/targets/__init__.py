"""One renderer per target format: each takes a :class:`~sockguard.export.plan.Plan` and returns the text,
adding a warning to ``plan.messages`` wherever it has to be narrower than the policy."""

from __future__ import annotations

from collections.abc import Callable

from sockguard.export.plan import Plan
from sockguard.export.targets.aws_sg import render_aws_sg
from sockguard.export.targets.cilium import render_cilium
from sockguard.export.targets.iptables import render_iptables
from sockguard.export.targets.json import render_json
from sockguard.export.targets.k8s import render_k8s
from sockguard.export.targets.nftables import render_nftables

RENDERERS: dict[str, Callable[[Plan], str]] = {
    "aws-sg": render_aws_sg,
    "nftables": render_nftables,
    "iptables": lambda plan: render_iptables(plan, 4),
    "ip6tables": lambda plan: render_iptables(plan, 6),
    "k8s": render_k8s,
    "cilium": render_cilium,
    "json": render_json,
}


def render(fmt: str, plan: Plan) -> str:
    return RENDERERS[fmt](plan)
