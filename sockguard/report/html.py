"""The HTML page of ``sockguard report --html``: one self-contained file.

Inline CSS and a server-side SVG chart; no scripts, fonts or external URLs, and a
Content-Security-Policy that forbids them. Every value from the log is untrusted
(hostnames and callers are whatever a process sent) and goes through escape().
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator

from sockguard.report.fields import DECISIONS, counts_text, duration, iso, safe
from sockguard.report.summary import Destination, Summary

CHART_ROWS = 30  # destinations charted (most blocked first), after the "all" row
COLORS = {"allow": "#2e8b3a", "would-block": "#e6a100", "block": "#d1302f"}
_LABEL_W, _PLOT_W, _ROW_H, _BAR_H, _PEAK_W = 290, 640, 34, 26, 90

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d232a;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#5a6470}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #d8dee4;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:20px}.card.allow b{color:#2e8b3a}.card.would-block b{color:#b07a00}
.card.block b{color:#d1302f}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e4e8ec;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f6f8;position:sticky;top:0}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.blocked td:first-child{border-left:3px solid #d1302f}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
ul.patterns li{margin:4px 0}svg{display:block;max-width:100%;height:auto}
svg text{font:12px system-ui,sans-serif;fill:#1d232a}svg text.peak,svg text.tick{fill:#5a6470;font-size:11px}
.legend span{display:inline-block;margin-right:16px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:5px;vertical-align:-1px}
.muted{color:#5a6470}table.narrow{width:auto}
"""


def escape(value: object) -> str:
    """HTML-escaped, with control and bidi-override characters made visible (safe())."""
    return html.escape(safe(value), quote=True)


def _n(value: int) -> str:
    return f"{value:,}"


def render_html(summary: Summary) -> Iterator[str]:
    """The page, in chunks (a table row at a time), so it is never one big string."""
    s = summary
    sources = ", ".join(f["path"] for f in s.files)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>sockguard report: {escape(sources)}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>sockguard report</h1>",
        f'<div class="meta">{escape(sources)} &middot; {_n(s.lines)} lines &middot; '
        f"{escape(iso(s.first))} .. {escape(iso(s.last))}"
        f"{' (' + escape(duration((s.last or 0) - (s.first or 0))) + ')' if s.events else ''}"
        f" &middot; generated {escape(iso(time.time()))}</div>",
        _cards(s),
    ]
    if s.patterns:
        parts.append("<h2>Patterns</h2>")
        parts.append('<ul class="patterns">' + "".join(f"<li>{escape(p.message)}</li>" for p in s.patterns) + "</ul>")
    parts.append("<h2>Timeline: allowed vs blocked decisions per destination</h2>")
    parts.append(_chart(s))
    yield "\n".join(parts)
    yield from _table(s)
    yield _extras(s)
    yield "\n</body></html>\n"


def _cards(s: Summary) -> str:
    items = [
        ("", "decisions", s.events),
        ("allow", "allowed", s.counts[0]),
        ("would-block", "would-block", s.counts[1]),
        ("block", "blocked", s.counts[2]),
        ("", "destinations", len(s.destinations)),
        ("", "other events", sum(s.other.values()) + s.other_more),
        ("", "malformed lines", s.malformed),
    ]
    cards = "".join(f'<div class="card {cls}"><b>{_n(n)}</b>{escape(text)}</div>' for cls, text, n in items)
    notes = []
    if s.truncated:
        notes.append(f"last line truncated ({escape(', '.join(s.truncated))}), as when a process is killed mid-write")
    if s.overflow_events:
        notes.append(
            f"{_n(s.overflow_events)} events to destinations beyond the first {_n(s.max_destinations)} "
            "are counted in the totals but not itemised"
        )
    extra = "".join(f'<p class="muted">{n}</p>' for n in notes)
    return f'<div class="cards">{cards}</div>{extra}'


def _chart(s: Summary) -> str:
    n = len(s.timeline)
    if not n:
        return '<p class="muted">No decisions in the log.</p>'
    charted = s.ranked()[:CHART_ROWS]
    rows: list[tuple[str, str, list[tuple[int, int, int]]]] = [("All destinations", "all", s.timeline)]
    rows += [(d.label, _row_class(d), s.dense(d.series)) for d in charted]
    bar_w = _PLOT_W / n
    top = 30
    height = top + len(rows) * _ROW_H + 36
    width = _LABEL_W + _PLOT_W + _PEAK_W
    out = [
        f'<svg id="timeline" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="decisions over time per destination">',
    ]
    x = _LABEL_W
    for name in DECISIONS:
        out.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{COLORS[name]}"/>')
        out.append(f'<text x="{x + 17}" y="16">{escape(name)}</text>')
        x += 110
    out.append(
        f'<text class="tick" x="{_LABEL_W + _PLOT_W}" y="16" text-anchor="end">'
        f"bucket {escape(duration(s.bucket_seconds))}, bars scaled per row</text>"
    )
    start = s.timeline_start or 0.0
    for r, (label, cls, series) in enumerate(rows):
        y = top + r * _ROW_H
        peak = max((sum(b) for b in series), default=0)
        shown = label if len(label) <= 40 else label[:39] + "\u2026"
        out.append(f'<g class="row {cls}" transform="translate(0,{y})">')
        out.append(f'<text class="label" x="0" y="{_BAR_H - 8}"><title>{escape(label)}</title>{escape(shown)}</text>')
        out.append(f'<line x1="{_LABEL_W}" y1="{_BAR_H}" x2="{_LABEL_W + _PLOT_W}" y2="{_BAR_H}" stroke="#c9d1d9"/>')
        for i, counts in enumerate(series):
            if not any(counts):
                continue
            bx = _LABEL_W + i * bar_w
            at = start + i * s.bucket_seconds
            tip = f"{label} at {iso(at)}: " + ", ".join(f"{d} {c:,}" for d, c in zip(DECISIONS, counts, strict=True))
            out.append(f'<g class="bucket"><title>{escape(tip)}</title>')
            base = float(_BAR_H)
            for name, count in zip(DECISIONS, counts, strict=True):
                if not count:
                    continue
                h = max(1.5, _BAR_H * count / peak)
                base -= h
                out.append(
                    f'<rect class="bar {name}" x="{bx + 0.5:.2f}" y="{base:.2f}" width="{max(bar_w - 1, 1):.2f}" '
                    f'height="{h:.2f}" fill="{COLORS[name]}"/>'
                )
            out.append("</g>")
        out.append(f'<text class="peak" x="{_LABEL_W + _PLOT_W + 8}" y="{_BAR_H - 8}">peak {_n(peak)}</text></g>')
    axis_y = top + len(rows) * _ROW_H + 4
    for k in range(5):
        i = round(k * n / 4)
        tx = _LABEL_W + i * bar_w
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        out.append(f'<line x1="{tx:.1f}" y1="{axis_y - 6}" x2="{tx:.1f}" y2="{axis_y}" stroke="#8b949e"/>')
        out.append(
            f'<text class="tick" x="{tx:.1f}" y="{axis_y + 14}" text-anchor="{anchor}">'
            f"{escape(_tick(start + i * s.bucket_seconds, n * s.bucket_seconds))}</text>"
        )
    out.append("</svg>")
    more = len(s.destinations) - len(charted)
    if more > 0:
        out.append(f'<p class="muted">{_n(more)} less-blocked destinations are in the table only.</p>')
    return "\n".join(out)


def _row_class(d: Destination) -> str:
    return "blocked" if d.blocked else "allowed"


def _tick(ts: float, span: float) -> str:
    if span >= 86400:
        return time.strftime("%m-%d %H:%M", time.gmtime(ts))
    return time.strftime("%H:%M:%S", time.gmtime(ts)) + ("Z" if span >= 60 else f".{int(ts % 1 * 1000):03d}")


def _table(s: Summary) -> Iterator[str]:
    head = (
        "<tr><th>Destination</th><th>Kind</th><th>Events</th><th>Allow</th><th>Would-block</th><th>Block</th>"
        "<th>Reasons</th><th>Ops</th><th>Addresses</th><th>Calling code</th><th>First seen</th><th>Last seen</th></tr>"
    )
    yield f'<h2>Destinations ({_n(len(s.destinations))})</h2><table id="destinations"><thead>{head}</thead><tbody>'
    for d in s.ranked():
        addresses = "<br>".join(f"{escape(a)} ({_n(c)})" for a, c in sorted(d.addresses.items(), key=lambda x: -x[1]))
        if d.address_more:
            addresses += f'<br><span class="muted">+{_n(d.address_more)} events to unlisted addresses</span>'
        if d.categories - {"invalid"}:
            addresses += f"<br><b>internal: {escape(', '.join(sorted(d.categories)))}</b>"
        ranked = [f"{escape(c)} ({_n(n)})" for c, n, _b in d.top_callers()]
        callers = "<br>".join(ranked[:3])
        if len(ranked) > 3:
            callers += f"<details><summary>{len(ranked) - 3} more</summary>{'<br>'.join(ranked[3:])}</details>"
        if d.caller_more:
            callers += f'<span class="muted">+{_n(d.caller_more)} events from unlisted callers</span>'
        yield (
            f'<tr class="dest {_row_class(d)}"><td class="mono">{escape(d.label)}</td><td>{escape(d.kind)}</td>'
            f'<td class="n">{_n(d.events)}</td><td class="n">{_n(d.counts[0])}</td>'
            f'<td class="n">{_n(d.counts[1])}</td><td class="n">{_n(d.counts[2])}</td>'
            f"<td>{escape(counts_text(d.reasons))}</td><td>{escape(counts_text(d.ops))}</td>"
            f'<td class="mono">{addresses}</td><td class="mono">{callers}</td>'
            f"<td>{escape(iso(d.first))}</td><td>{escape(iso(d.last))}</td></tr>"
        )
    if s.overflow_events:
        counts = s.overflow
        yield (
            f'<tr class="overflow"><td colspan="2">beyond --max-destinations</td><td class="n">{_n(sum(counts))}</td>'
            + "".join(f'<td class="n">{_n(c)}</td>' for c in counts)
            + '<td colspan="6"></td></tr>'
        )
    yield "</tbody></table>"


def _extras(s: Summary) -> str:
    out = []
    for title, columns, rows in s.requests.html_tables():  # HTTP request events (sockguard/report/requests.py)
        out.append(f"<h2>{escape(title)}</h2><table><thead><tr>")
        out += [f"<th>{escape(column)}</th>" for column in columns]
        out.append("</tr></thead><tbody>")
        out += ["<tr>" + "".join(f'<td class="mono">{escape(cell)}</td>' for cell in row) + "</tr>" for row in rows]
        out.append("</tbody></table>")
    if s.blocked_callers:
        out.append('<h2>Calling code behind blocked and would-block attempts</h2><table class="narrow"><tbody>')
        for caller, n in sorted(s.blocked_callers.items(), key=lambda x: (-x[1], x[0]))[:20]:
            out.append(f'<tr><td class="n">{_n(n)}</td><td class="mono">{escape(caller)}</td></tr>')
        out.append("</tbody></table>")
    if s.other:
        out.append(f"<h2>Other events</h2><p>{escape(counts_text(s.other))}</p><ul>")
        out += [f"<li>{escape(kind)}: {escape(counts_text(d))}</li>" for kind, d in s.other_detail.items()]
        out += [f'<li class="mono">{escape(sample)}</li>' for sample in s.other_samples[:10]]
        out.append("</ul>")
    if s.malformed:
        out.append(f"<h2>Malformed lines ({_n(s.malformed)}, skipped)</h2><ul>")
        out += [f"<li>{escape(p.where)}: {escape(p.problem)}</li>" for p in s.malformed_samples]
        out.append("</ul>")
    return "\n".join(out)
