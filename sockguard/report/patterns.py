"""Patterns in a summarised log worth a reviewer's look: broken configuration, internal and metadata
targets, raw IPs, deny hits, retry loops, fan-out under one domain, overflow, breaker alerts, mixed modes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sockguard.addresses import METADATA_NAMES
from sockguard.report.fields import (
    DENIED,
    INTERNAL,
    MAX_GLOBAL,
    MAX_SAMPLES,
    METADATA,
    counts_text,
    duration,
    list_text,
)

if TYPE_CHECKING:
    from sockguard.report.summary import Destination, Summary


@dataclass
class Pattern:
    kind: str
    message: str
    destinations: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "destinations": self.destinations}


RETRY_MIN = 20  # blocked events to one destination before it is called a loop
RETRY_SHOWN = 10
RETRY_SHARE = 0.8  # ... mostly from one calling line
FANOUT_MIN = 10  # distinct names under one parent domain before it is a pattern


def find_patterns(summary: Summary) -> list[Pattern]:
    """Things a reviewer should look at, most serious first."""
    found: list[Pattern] = []
    dests = summary.ranked()
    broken = summary.reasons.get("config-error")
    if broken:
        found.append(
            Pattern(
                "config-error",
                f"the configuration was broken for {sum(broken):,} decisions: all traffic was blocked then",
            )
        )
    sensitive = [d for d in dests if _sensitive(d)]
    if sensitive:
        found.append(
            Pattern(
                "internal",
                f"{len(sensitive)} destination(s) are cloud metadata or internal addresses "
                "(credential theft and SSRF targets): " + list_text(d.label for d in sensitive),
                [d.label for d in sensitive],
            )
        )
    raw = [d for d in dests if d.kind == "ip" and not d.categories]
    if raw:
        found.append(
            Pattern(
                "raw-ip",
                f"{len(raw)} destination(s) were reached by raw IP, without a name: " + list_text(d.label for d in raw),
                [d.label for d in raw],
            )
        )
    denied = [d for d in dests if DENIED in d.reasons]
    if denied:
        found.append(
            Pattern(
                "denied",
                f"{len(denied)} destination(s) hit a deny rule: " + list_text(d.label for d in denied),
                [d.label for d in denied],
            )
        )
    loops = 0
    for dest in dests:
        if dest.blocked < RETRY_MIN or not dest.callers or loops >= RETRY_SHOWN:
            continue
        caller, (_, by_caller) = max(dest.callers.items(), key=lambda kv: kv[1][1])
        if by_caller < RETRY_SHARE * dest.blocked:  # many callers: traffic, not one loop
            continue
        loops += 1
        span = dest.last - dest.first
        every = f", about every {duration(span / (dest.blocked - 1))}" if span > 0 else ""
        found.append(
            Pattern(
                "retry-loop",
                f"{dest.label} was blocked {dest.blocked:,} times over {duration(span)}{every}, "
                f"{100 * by_caller // dest.blocked}% from {caller}: a retry loop?",
                [dest.label],
            )
        )
    parents: dict[str, set[str]] = {}
    for dest in dests:
        if dest.kind == "name" and dest.host.count(".") >= 2:
            names = parents.setdefault(dest.host.partition(".")[2], set())
            if len(names) <= MAX_GLOBAL:
                names.add(dest.host)
    for parent, names in sorted(parents.items(), key=lambda kv: -len(kv[1])):
        extra = summary.overflow_domains.get(parent, 0)
        if len(names) >= FANOUT_MIN:
            more = f" (and {extra:,} events to further ones not itemised)" if extra else ""
            found.append(
                Pattern(
                    "fan-out",
                    f"{len(names)} distinct names under {parent}{more}: per-tenant hosts, or data leaving "
                    "through DNS names? (--suggest --wildcard-threshold can collapse them)",
                    sorted(names)[:MAX_SAMPLES],
                )
            )
    if summary.overflow_events:
        found.append(
            Pattern(
                "overflow",
                f"{summary.overflow_events:,} events went to destinations beyond the first "
                f"{summary.max_destinations:,}; they are counted but not itemised (--max-destinations)",
            )
        )
    alerts = summary.other.get("alert")
    if alerts:
        detail = summary.other_detail.get("alert")
        found.append(Pattern("alerts", f"{alerts:,} breaker alert(s)" + (f": {counts_text(detail)}" if detail else "")))
    if len(summary.modes) > 1:
        found.append(Pattern("modes", "the log mixes modes: " + counts_text(summary.modes)))
    return found


def _sensitive(dest: Destination) -> bool:
    if dest.kind == "name" and dest.host in METADATA_NAMES:
        return True
    return bool(dest.categories - {"loopback", "invalid"}) or METADATA in dest.reasons or INTERNAL in dest.reasons
