"""What every renderer gets (:class:`Plan`: the parsed policy, resolved names and options) and what it gives
back besides its text (:class:`Messages`: warnings when the output is narrower than the policy, notes)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from sockguard.addresses import Address
from sockguard.display import path_text, portable
from sockguard.export.model import NameAllow, name_allows
from sockguard.rules import Rule, parse_rule

#: Formats that need names as addresses, and DNS server addresses for the DNS rule.
ADDRESS_FORMATS = frozenset({"aws-sg", "nftables", "iptables", "ip6tables", "json"})


class Resolution(NamedTuple):
    addresses: tuple[tuple[Address, int], ...]  # (address, ttl seconds)
    error: str | None = None


@dataclass
class Messages:
    """Warnings (the output is narrower than the policy: ``--strict`` fails) and notes, each said once."""

    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _said: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def warn(self, text: str) -> None:
        text = portable(text)  # may quote a DNS error: printed on a terminal, written into files
        if ("w", text) not in self._said:
            self._said.add(("w", text))
            self.warnings.append(text)

    def note(self, text: str) -> None:
        text = portable(text)
        if ("n", text) not in self._said:
            self._said.add(("n", text))
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


Resolver = Callable[[str], Resolution]


def build_plan(
    allow: Iterable[str | Rule],
    deny: Iterable[str | Rule] = (),
    *,
    fmt: str,
    source: str = "command line",
    allow_loopback: bool = True,
    resolve: Resolver | None = None,
    resolver_name: str = "system resolver",
    dns_servers: list[tuple[Address, int]] | None = None,
    dns: bool = True,
    k8s: K8sOptions | None = None,
) -> Plan:
    """Everything a renderer needs. ``resolve`` None means names are not resolved."""
    allow_rules = tuple(r if isinstance(r, Rule) else parse_rule(r) for r in allow)
    deny_rules = tuple(r if isinstance(r, Rule) else parse_rule(r) for r in deny)
    names, cancelled = name_allows(allow_rules, deny_rules)
    plan = Plan(
        source=portable(path_text(source)),  # a file name: any bytes, shown escaped
        allow=allow_rules,
        deny=deny_rules,
        names=names,
        allow_loopback=allow_loopback,
        resolver=portable(resolver_name),
        dns_servers=list(dns_servers or []),
        dns=dns,
        k8s=k8s or K8sOptions(),
    )
    for rule, by, exact in cancelled:
        if exact:
            plan.messages.note(f"{fmt}: allow rule {rule.text!r} is cancelled by deny rule {by.text!r}")
        else:
            plan.messages.warn(
                f"{fmt}: allow rule {rule.text!r}: deny rule {by.text!r} covers some of its names and a name "
                "selector cannot leave them out; not exported (narrower)"
            )
    if resolve is not None and fmt in ADDRESS_FORMATS:
        plan.resolved = {}
        for name in names:
            if name.rule.kind == "name" and name.rule.host not in plan.resolved:
                plan.resolved[name.rule.host] = resolve(name.rule.host)
        plan.resolved_at = time.time()
    return plan
