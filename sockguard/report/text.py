"""The summary as text for people: totals, destinations (most blocked first), blocks by calling code,
patterns, other events and malformed lines. Every log string goes through safe()."""

from __future__ import annotations

import json

from sockguard.report.fields import DECISIONS, LOOPBACK, by_count, counts_text, duration, iso, safe
from sockguard.report.summary import Summary


def render_text(summary: Summary, top: int) -> str:
    s = summary
    out = [f"sockguard report: {safe(', '.join(f['path'] for f in s.files))} ({_size(s.bytes)})"]
    read = f"{s.lines:,} lines: {s.events:,} decisions"
    if s.requests.requests:
        read += f", {s.requests.requests:,} HTTP requests"
    if s.other:
        read += f", {sum(s.other.values()) + s.other_more:,} other events ({safe(counts_text(s.other))})"
    if s.malformed:
        read += f", {s.malformed:,} malformed (first at {', '.join(p.where for p in s.malformed_samples[:3])})"
    if s.truncated:
        read += f", truncated last line ({', '.join(s.truncated)})"
    out.append(f"  read       {read}")
    if s.events:
        span = duration((s.last or 0) - (s.first or 0))
        procs = f"{len(s.pids)}{'+' if s.pids_more else ''} process(es)"
        out.append(f"  time       {iso(s.first)} .. {iso(s.last)} ({span}), {procs}, mode {safe(_modes(s.modes))}")
        out.append(f"  decisions  {', '.join(f'{n} {c:,}' for n, c in zip(DECISIONS, s.counts, strict=True))}")
        reasons = {r: sum(row) for r, row in s.reasons.items()}
        out.append(f"  reasons    {safe(counts_text(reasons))}")
    ranked = s.ranked()
    shown = ranked if top <= 0 else ranked[:top]
    out.append("")
    more = f" (showing {len(shown)}; --top 0 for all)" if len(shown) < len(ranked) else ""
    out.append(f"Destinations: {len(ranked):,}{more}, most blocked first")
    for d in shown:
        decisions = ", ".join(f"{n} {c:,}" for n, c in zip(DECISIONS, d.counts, strict=True) if c)
        out.append(f"  {safe(d.label)}  [{d.kind}]  {d.events:,} events: {decisions}")
        out.append(f"      ops {safe(counts_text(d.ops))} | proto {safe(counts_text(d.protocols))}")
        out.append(f"      reasons {safe(counts_text(d.reasons))}")
        if d.addresses:
            extra = f" (+{d.address_more:,} events to unlisted addresses)" if d.address_more else ""
            internal = f" [internal: {', '.join(sorted(d.categories))}]" if d.categories - {"invalid"} else ""
            listed = ", ".join(f"{a} ({n:,})" for a, n in sorted(d.addresses.items(), key=by_count))
            out.append(f"      addresses {safe(listed)}{extra}{internal}")
        out.append(f"      seen {iso(d.first)} .. {iso(d.last)}")
        ranked_callers = d.top_callers()
        callers = ", ".join(f"{c} ({n:,})" for c, n, _b in ranked_callers[:5])
        unlisted = sum(n for _c, n, _b in ranked_callers[5:]) + d.caller_more
        extra = f" (+{unlisted:,} events from other callers)" if unlisted else ""
        out.append(f"      callers {safe(callers)}{extra}")
    if s.overflow_events:
        out.append(
            f"  ... {s.overflow_events:,} events to destinations beyond --max-destinations {s.max_destinations:,}: "
            + safe(counts_text(dict(zip(DECISIONS, s.overflow, strict=True))))
        )
    blocked = [d for d in ranked if d.blocked]
    if blocked:
        out.append("")
        out.append(f"Blocked and would-block: {s.counts[1] + s.counts[2]:,} events to {len(blocked):,} destinations")
        for d in blocked[: top if top > 0 else None]:
            why = ", ".join(r for r in d.reasons if r not in ("allowed-name", "allowed-ip", LOOPBACK))
            out.append(f"  {d.counts[1]:>9,} would-block {d.counts[2]:>9,} block  {safe(d.label)}  ({safe(why)})")
        out.append("  by calling code:")
        for caller, n in sorted(s.blocked_callers.items(), key=by_count)[:10]:
            out.append(f"  {n:>9,}  {safe(caller)}")
    requests = s.requests.text_lines(top)
    if requests:
        out.append("")
        out += [safe(line) for line in requests]
    if s.patterns:
        out.append("")
        out.append("Patterns")
        out += [f"  - {safe(p.message)}" for p in s.patterns]
    if s.other:
        out.append("")
        out.append(f"Other events: {safe(counts_text(s.other))}")
        for kind, detail in s.other_detail.items():
            out.append(f"  {safe(kind)}: {safe(counts_text(detail))}")
        for sample in s.other_samples[:5]:
            out.append(f"  {safe(json.dumps(sample))[:300]}")
    if s.malformed:
        out.append("")
        out.append(f"Malformed lines: {s.malformed:,} (skipped)")
        out += [f"  {safe(p.where)}: {safe(p.problem)}" for p in s.malformed_samples[:10]]
    return "\n".join(out) + "\n"


def _modes(modes: dict[str, int]) -> str:
    return next(iter(modes)) if len(modes) == 1 else counts_text(modes)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
