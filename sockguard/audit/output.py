"""Text and JSON reports for ``sockguard audit``, streamed as the findings arrive (SARIF: sarif.py).

Text is for a terminal: every path, key, value and message is passed through
:func:`sockguard.display.printable`, so an ESC sequence or a newline in a scanned file (or its name)
cannot rewrite the screen or forge a line of the report. JSON escapes by construction.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from sockguard.audit.findings import RANK, SEVERITIES, Finding
from sockguard.display import printable

if TYPE_CHECKING:
    from collections.abc import Callable

    from sockguard.audit.auditor import Stats
    from sockguard.config import Settings

_MARK = {"error": "✗", "warning": "!", "note": "✓"}
_ASCII_MARK = {"error": "X", "warning": "!", "note": "+"}
PROBLEMS_SHOWN = 20


class Tally:
    """Counts the findings that pass through it, by severity (for the summary and the exit status)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.highest = -1

    def count(self, findings: Iterable[Finding]) -> Iterator[Finding]:
        for f in findings:
            self.counts[f.severity] += 1
            self.highest = max(self.highest, RANK[f.severity])
            yield f

    def summary(self, suppressed: int) -> dict[str, int]:
        return {s: self.counts[s] for s in reversed(SEVERITIES)} | {"suppressed": suppressed}


def _marks(encoding: str | None) -> dict[str, str]:
    try:
        "".join(_MARK.values()).encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return _ASCII_MARK
    return _MARK


def text_chunks(
    findings: Iterable[Finding],
    stats: Stats,
    settings: Settings,
    tally: Tally,
    suppressed: Callable[[], int],
    encoding: str | None,
) -> Iterator[str]:
    """The text report: a header, one finding at a time, then the summary (once the scan is done)."""
    marks = _marks(encoding)
    bar = "=" * 70
    rules = f"{len(settings.allow)} allow / {len(settings.deny)} deny rules from {printable(settings.source)}"
    loopback = "loopback allowed" if settings.allow_loopback else "loopback blocked"
    title = "SOCKGUARD AUDIT: destinations in configuration and code"
    yield "\n".join([bar, title, bar, f"policy: {rules}; {loopback}", "", ""])
    any_found = False
    for f in findings:
        any_found = True
        where = f"{f.path}:{f.key}" if f.line == 0 else f"{f.path}:{f.line}:{f.column}"
        key = f"{f.key}=" if f.key else ""
        line = f"{marks[f.severity]} {printable(where)}: {f.severity}[{f.kind}] {printable(key)}{printable(f.value)}"
        yield f"{line}\n    {printable(f.message)}\n"
    out = [""] if any_found else []
    counts = tally.counts
    rate = f", {stats.files / stats.seconds:.0f} files/s" if stats.seconds > 0 and stats.files else ""
    scanners = ", ".join(f"{n} {k}" for k, n in sorted(stats.by_scanner.items()))
    out += [bar, "SUMMARY", bar]
    out.append(f"scanned {stats.files} files ({scanners or 'none'}) in {stats.seconds:.2f} s{rate}")
    for path, error in stats.problems[:PROBLEMS_SHOWN]:
        out.append(f"  not scanned: {printable(path)}: {printable(error)}")
    if stats.problem_count > PROBLEMS_SHOWN:
        out.append(f"  ... and {stats.problem_count - PROBLEMS_SHOWN} more not scanned (see --format json)")
    if stats.problem_count:
        out.append(f"{marks['warning']} not scanned: {stats.problem_count} (--strict makes that exit 1)")
    total = ", ".join(f"{counts[s]} {s}{'s' if counts[s] != 1 else ''}" for s in reversed(SEVERITIES))
    held = suppressed()
    tail = f" ({held} suppressed by the baseline)" if held else ""
    if any_found:
        out.append(f"{marks['error'] if counts['error'] else marks['warning']} findings: {total}{tail}")
    else:
        out.append(f"{marks['note']} no findings{tail}")
    yield "\n".join(out) + "\n"


def json_chunks(
    findings: Iterable[Finding], stats: Stats, settings: Settings, tally: Tally, suppressed: Callable[[], int]
) -> Iterator[str]:
    """The JSON report, one finding per line; ``summary`` and ``stats`` follow the findings, since they are
    only known once the scan is done."""
    head = {
        "version": 1,
        "tool": "sockguard audit",
        "policy": {
            "source": settings.source,
            "allow": [r.text for r in settings.allow],
            "deny": [r.text for r in settings.deny],
            "allow_loopback": settings.allow_loopback,
        },
    }
    text = json.dumps(head, indent=2, ensure_ascii=False)
    yield text[:-2] + ',\n  "findings": ['
    for i, f in enumerate(findings):
        yield ("," if i else "") + "\n    " + json.dumps(f.to_json(), ensure_ascii=False)
    tail = {"summary": tally.summary(suppressed()), "stats": stats.to_json()}
    yield "\n  ],\n" + json.dumps(tail, indent=2, ensure_ascii=False)[2:] + "\n"
