"""Shared by every part of ``sockguard report``: decision columns, the memory limits, reason names, and the
helpers that keep log text bounded and readable. Log text is untrusted: it is bounded here and escaped
(sockguard.display) wherever it is shown."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from sockguard.display import printable

DECISIONS = ("allow", "would-block", "block")
COLUMN = {name: i for i, name in enumerate(DECISIONS)}

BUCKETS = 64  # timeline buckets; the width doubles until the log's span fits
MAX_LINE = 1 << 20  # longer lines are skipped as malformed, never held whole
MAX_TEXT = 200  # log strings are truncated to this many characters
MAX_ADDRESSES = 16  # distinct addresses listed per destination
MAX_CALLERS = 10  # distinct callers listed per destination
MAX_SMALL = 16  # distinct ops / protocols / reasons / rules per destination
MAX_GLOBAL = 1000  # distinct keys in global counters (callers, pids, reasons ...)
MAX_SAMPLES = 20  # samples kept of non-decision events, and malformed line numbers
MAX_DESTINATIONS = 5000  # default cap on itemised destinations
MAX_TS = 1e11  # year 5138: anything later (or negative) is not a real timestamp
CACHE_MAX = 8192  # host / address normalisation caches (cleared when full)

# Decision reasons from sockguard.policy (duplicated as strings: this module must
# also read logs written by other sockguard versions, whatever they import).
UNIX, FAMILY, DENIED, METADATA, INTERNAL, LOOPBACK = (
    "unix-socket",
    "unsupported-family",
    "denied",
    "metadata-name",
    "internal-address",
    "loopback",
)


def short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "\u2026"


def bounded_text(value: Any) -> str | None:
    """A descriptive field as a bounded string (other types are stringified)."""
    if value is None:
        return None
    if value.__class__ is not str:
        value = json.dumps(value, default=str) if not isinstance(value, (int, float)) else str(value)
    return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "\u2026"


def bump(counter: dict[Any, int], key: Any, cap: int, n: int = 1) -> bool:
    """Count key in a dict that never grows past cap keys; False if it was full."""
    if key in counter:
        counter[key] += n
        return True
    if len(counter) < cap:
        counter[key] = n
        return True
    return False


def safe(text: object) -> str:
    """Log text for a terminal or a TOML comment: control characters escaped,
    so a hostile log cannot move the cursor or start a new TOML line."""
    return printable(text)


def iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = int(seconds)
    parts = [(s // 86400, "d"), (s // 3600 % 24, "h"), (s // 60 % 60, "m"), (s % 60, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return "".join(shown[:2])


def by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def list_text(labels: Iterable[str], limit: int = 8) -> str:
    items = list(labels)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def counts_text(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {n:,}" for k, n in sorted(counter.items(), key=by_count))
