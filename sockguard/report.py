"""Summarise a sockguard decision log (JSON lines): what did this process talk to?

Lists every destination (host, port, addresses, counts, first/last seen, calling
code), the blocked and would-block attempts, and patterns worth a look. --suggest
prints the narrowest allowlist (TOML) that covers what the log saw (learn from
monitor mode, then enforce); --html writes one self-contained page with a timeline.
The log is read as a stream in bounded memory, so million-line logs are fine.

Exit codes: 0 ok; 1 with --fail-on-block when the log holds any block or
would-block decision; 2 usage error, unreadable input or output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from sockguard.addresses import METADATA_NAMES, classify, format_address, parse_address
from sockguard.paths import write_atomically
from sockguard.report_requests import RequestSummary
from sockguard.rules import InvalidHost, RuleError, normalize_host, parse_rule

EXIT_OK, EXIT_BLOCKS, EXIT_USAGE = 0, 1, 2

#: Decision columns, in the order used by every counter triple.
DECISIONS = ("allow", "would-block", "block")
_COLUMN = {name: i for i, name in enumerate(DECISIONS)}

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
_CACHE_MAX = 8192  # host / address normalisation caches (cleared when full)

# Decision reasons from sockguard.policy (duplicated as strings: this module must
# also read logs written by other sockguard versions, whatever they import).
_UNIX, _FAMILY, _DENIED, _METADATA, _INTERNAL, _LOOPBACK = (
    "unix-socket",
    "unsupported-family",
    "denied",
    "metadata-name",
    "internal-address",
    "loopback",
)


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "\u2026"


def _text(value: Any) -> str | None:
    """A descriptive field as a bounded string (other types are stringified)."""
    if value is None:
        return None
    if value.__class__ is not str:
        value = json.dumps(value, default=str) if not isinstance(value, (int, float)) else str(value)
    return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "\u2026"


def _bump(counter: dict[Any, int], key: Any, cap: int, n: int = 1) -> bool:
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
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}" for c in text)


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


# -- timeline ------------------------------------------------------------------


class Clock:
    """Bucket index for a timestamp. Buckets are 2**level seconds wide, aligned
    to the epoch; the level rises until the whole log fits in BUCKETS buckets,
    so memory stays fixed however long the log is."""

    __slots__ = ("hi", "level", "lo", "width")

    def __init__(self) -> None:
        self.level = -6  # 1/64 s: a short test run still gets a useful chart
        self.width = 2.0**self.level
        self.lo: int | None = None
        self.hi = 0

    def index(self, ts: float) -> int:
        i = int(ts / self.width)
        if self.lo is None:
            self.lo = self.hi = i
        elif i < self.lo or i > self.hi:
            lo, hi = min(self.lo, i), max(self.hi, i)
            while hi - lo >= BUCKETS:
                self.level += 1
                lo >>= 1
                hi >>= 1
                i >>= 1
            self.lo, self.hi = lo, hi
            self.width = 2.0**self.level
        return i


class Series:
    """Allow / would-block / block counts per bucket for one destination (or all).

    Holds BUCKETS slots from ``base`` at ``level``; re-binned lazily when the clock
    coarsens. Any index the clock hands out lies within BUCKETS of every other, so a
    slot always exists."""

    __slots__ = ("base", "counts", "level")

    def __init__(self) -> None:
        self.level = -1000
        self.base = 0
        self.counts = array("I", bytes(4 * 3 * BUCKETS))

    def add(self, i: int, level: int, column: int) -> None:
        if self.level != level:
            self._coarsen(level, i)
        elif i < self.base:
            self._shift(i)
        try:
            self.counts[(i - self.base) * 3 + column] += 1
        except OverflowError:  # 2**32 events in one bucket: widen rather than fail
            self.counts = array("Q", self.counts)
            self.counts[(i - self.base) * 3 + column] += 1

    def _coarsen(self, level: int, i: int) -> None:
        if self.level == -1000:
            self.level, self.base = level, i
            return
        shift = level - self.level
        old, base = self.counts, self.base
        self.counts = array(old.typecode, bytes(old.itemsize * 3 * BUCKETS))
        self.base = base >> shift
        self.level = level
        for slot in range(BUCKETS):
            to = ((base + slot) >> shift) - self.base
            for column in range(3):
                self.counts[to * 3 + column] += old[slot * 3 + column]
        if i < self.base:
            self._shift(i)

    def _shift(self, base: int) -> None:
        by = self.base - base
        old = self.counts
        self.counts = array(old.typecode, bytes(old.itemsize * 3 * by)) + old[: 3 * (BUCKETS - by)]
        self.base = base

    def dense(self, level: int, lo: int, n: int) -> list[tuple[int, int, int]]:
        """Counts aligned to the clock's final buckets lo .. lo+n-1."""
        out = [[0, 0, 0] for _ in range(n)]
        if self.level == -1000:
            return [tuple(row) for row in out]  # type: ignore[misc]
        shift = level - self.level
        for slot in range(BUCKETS):
            at = ((self.base + slot) >> shift) - lo
            for column in range(3):
                value = self.counts[slot * 3 + column]
                if value:
                    out[at][column] += value
        return [tuple(row) for row in out]  # type: ignore[misc]


# -- aggregation -----------------------------------------------------------------


class Destination:
    """Everything the report says about one (host or address, port)."""

    __slots__ = (
        "address_more",
        "addresses",
        "caller_more",
        "callers",
        "categories",
        "counts",
        "first",
        "host",
        "kind",
        "last",
        "ops",
        "port",
        "protocols",
        "public",
        "reasons",
        "rules",
        "series",
    )

    def __init__(self, kind: str, host: str, port: int | None, ts: float) -> None:
        self.kind = kind  # name, ip, unix, invalid, other
        self.host = host
        self.port = port
        self.counts = [0, 0, 0]
        self.ops: dict[str, int] = {}
        self.protocols: dict[str, int] = {}
        self.reasons: dict[str, int] = {}
        self.rules: dict[str, int] = {}
        self.addresses: dict[str, int] = {}
        self.address_more = 0  # events whose address is not listed (cap reached)
        self.categories: set[str] = set()  # internal ranges among ALL addresses seen
        self.public = False  # a public address was among them
        self.callers: dict[str, list[int]] = {}  # caller -> [events, blocked or would-block]
        self.caller_more = 0
        self.first = self.last = ts
        self.series = Series()

    @property
    def label(self) -> str:
        if self.port is None:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def events(self) -> int:
        return self.counts[0] + self.counts[1] + self.counts[2]

    @property
    def blocked(self) -> int:
        return self.counts[1] + self.counts[2]

    def top_callers(self) -> list[tuple[str, int, int]]:
        return sorted(((c, n, b) for c, (n, b) in self.callers.items()), key=lambda x: (-x[1], x[0]))

    def to_json(self, timeline: list[tuple[int, int, int]]) -> dict[str, Any]:
        return {
            "destination": self.label,
            "kind": self.kind,
            "host": self.host,
            "port": self.port,
            "events": self.events,
            "decisions": dict(zip(DECISIONS, self.counts, strict=True)),
            "ops": self.ops,
            "protocols": self.protocols,
            "reasons": self.reasons,
            "rules": self.rules,
            "addresses": [{"address": a, "events": n} for a, n in sorted(self.addresses.items(), key=_by_count)],
            "unlisted_address_events": self.address_more,
            "internal_categories": sorted(self.categories),
            "callers": [{"caller": c, "events": n, "blocked": b} for c, n, b in self.top_callers()],
            "unlisted_caller_events": self.caller_more,
            "first_seen": self.first,
            "last_seen": self.last,
            "timeline": [[i, *row] for i, row in enumerate(timeline) if any(row)],
        }


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


@dataclass
class Problem:
    where: str  # "file:line"
    problem: str


@dataclass
class Pattern:
    kind: str
    message: str
    destinations: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "destinations": self.destinations}


class Summary:
    """Streams decision events into bounded aggregates. Feed with read()/add(),
    then call finish() once."""

    def __init__(self, max_destinations: int = MAX_DESTINATIONS) -> None:
        self.max_destinations = max_destinations
        self.files: list[dict[str, Any]] = []
        self.lines = 0
        self.bytes = 0
        self.blank = 0
        self.events = 0
        self.malformed = 0
        self.malformed_samples: list[Problem] = []
        self.truncated: list[str] = []  # "file:line" of a cut-off last line
        self.counts = [0, 0, 0]
        self.reasons: dict[str, list[int]] = {}
        self.ops: dict[str, int] = {}
        self.protocols: dict[str, int] = {}
        self.modes: dict[str, int] = {}
        self.pids: set[int] = set()
        self.pids_more = False
        self.blocked_callers: dict[str, int] = {}
        self.blocked_callers_more = 0
        self.other: dict[str, int] = {}  # non-decision event kinds
        self.other_detail: dict[str, dict[str, int]] = {}  # kind -> "reason state" (breaker alerts) -> count
        self.other_more = 0
        self.other_samples: list[dict[str, Any]] = []
        self.first: float | None = None
        self.last: float | None = None
        self.destinations: dict[tuple[str, str, int | None], Destination] = {}
        self.overflow = [0, 0, 0]  # events to destinations past max_destinations
        self.overflow_domains: dict[str, int] = {}
        self.clock = Clock()
        self.series = Series()
        self.timeline: list[tuple[int, int, int]] = []
        self.patterns: list[Pattern] = []
        self._hosts: dict[str, tuple[str, str]] = {}
        self._addrs: dict[str, tuple[str, str | None]] = {}
        self.requests = RequestSummary()  # HTTP request events (sockguard/http/)

    # -- reading -----------------------------------------------------------

    def read(self, name: str, stream: IO[bytes], progress: Progress | None = None) -> None:
        """Consume one log stream. Malformed lines are counted, never fatal."""
        decode = json.JSONDecoder().decode
        readline = stream.readline
        entry = {"path": name, "lines": 0, "bytes": 0}
        self.files.append(entry)
        lineno = 0
        done = 0
        while True:
            line = readline(MAX_LINE)
            if not line:
                break
            lineno += 1
            done += len(line)
            if lineno & 0x3FFF == 0 and progress is not None:
                progress.update(name, done, lineno)
            if line[-1] != 10:  # no newline: over-long, or the last line
                if len(line) == MAX_LINE:
                    while True:
                        more = readline(MAX_LINE)
                        done += len(more)
                        if not more or more[-1] == 10:
                            break
                    self._bad(name, lineno, f"line longer than {MAX_LINE} bytes")
                    continue
                try:
                    obj = decode(line.decode())
                except (ValueError, RecursionError):
                    if line.strip():
                        self.truncated.append(f"{name}:{lineno}")  # killed mid-write: normal
                    continue
            else:
                try:
                    obj = decode(line.decode())
                except (ValueError, RecursionError) as exc:
                    if not line.strip():
                        self.blank += 1
                    else:
                        self._bad(name, lineno, _json_problem(exc))
                    continue
            problem = self.add(obj)
            if problem is not None:
                self._bad(name, lineno, problem, obj)
        entry["lines"], entry["bytes"] = lineno, done
        self.lines += lineno
        self.bytes += done

    def _bad(self, name: str, lineno: int, problem: str, obj: Any = None) -> None:
        self.malformed += 1
        if len(self.malformed_samples) < MAX_SAMPLES:
            self.malformed_samples.append(Problem(f"{name}:{lineno}", problem))

    # -- one event ---------------------------------------------------------

    def add(self, obj: Any) -> str | None:
        """Aggregate one parsed line; returns what is wrong with it, if anything."""
        if obj.__class__ is not dict:
            return "not a JSON object"
        kind = obj.get("event", "decision" if "decision" in obj else None)
        if kind != "decision":
            if kind == "request":
                return self.requests.add(obj)
            if kind.__class__ is not str or not kind:
                return "no 'event' field"
            self._other(kind, obj)
            return None
        ts = obj.get("ts")
        if ts.__class__ not in (float, int) or not 0 <= ts < MAX_TS:
            return f"'ts' is not an epoch time: {_text(ts)!r}"
        decision = obj.get("decision")
        column = _COLUMN.get(decision) if decision.__class__ is str else None
        if column is None:
            return f"unknown decision {_text(decision)!r}"
        host = obj.get("host")
        if host is not None and host.__class__ is not str:
            return f"'host' is not a string: {_text(host)!r}"
        address = obj.get("address")
        if address is not None and address.__class__ is not str:
            return f"'address' is not a string: {_text(address)!r}"
        port = obj.get("port")
        if port is not None and (port.__class__ is not int or not 0 <= port <= 65535):
            return f"'port' is not a port number: {_text(port)!r}"
        # Descriptive fields: strings as written (bounded), anything else stringified.
        reason = obj.get("reason")
        if reason.__class__ is not str or len(reason) > MAX_TEXT:
            reason = _text(reason) or "?"
        op = obj.get("op")
        if op.__class__ is not str or len(op) > MAX_TEXT:
            op = _text(op) or "?"
        proto = obj.get("proto")
        if proto.__class__ is not str or len(proto) > MAX_TEXT:
            proto = _text(proto) or "?"
        caller = obj.get("caller")
        if caller.__class__ is not str or len(caller) > MAX_TEXT:
            caller = _text(caller) or "unknown"
        mode = obj.get("mode")
        if mode.__class__ is not str or len(mode) > MAX_TEXT:
            mode = _text(mode) or "?"
        blocked = column != 0

        self.events += 1
        if self.first is None or ts < self.first:
            self.first = ts
        if self.last is None or ts > self.last:
            self.last = ts
        self.counts[column] += 1
        row = self.reasons.get(reason)
        if row is None and len(self.reasons) < MAX_GLOBAL:
            row = self.reasons[reason] = [0, 0, 0]
        if row is not None:
            row[column] += 1
        for counter, key in ((self.ops, op), (self.protocols, proto), (self.modes, mode)):
            if key in counter:
                counter[key] += 1
            elif len(counter) < MAX_SMALL:
                counter[key] = 1
        pid = obj.get("pid")
        if pid.__class__ is int and pid not in self.pids:
            if len(self.pids) < MAX_GLOBAL:
                self.pids.add(pid)
            else:
                self.pids_more = True
        if blocked and not _bump(self.blocked_callers, caller, MAX_GLOBAL):
            self.blocked_callers_more += 1

        kind, label, category = self._destination(host, address, reason)
        dest_key = (kind, label, port)
        dest = self.destinations.get(dest_key)
        if dest is None:
            if len(self.destinations) >= self.max_destinations:
                self.overflow[column] += 1
                parent = label.partition(".")[2] if kind == "name" else kind
                _bump(self.overflow_domains, parent or label, MAX_GLOBAL)
                self._tick(ts, column, None)
                return None
            dest = self.destinations[dest_key] = Destination(kind, label, port, ts)
        dest.counts[column] += 1
        if ts < dest.first:
            dest.first = ts
        elif ts > dest.last:
            dest.last = ts
        for counter, key in ((dest.ops, op), (dest.protocols, proto), (dest.reasons, reason)):
            if key in counter:
                counter[key] += 1
            elif len(counter) < MAX_SMALL:
                counter[key] = 1
        rule = obj.get("rule")
        if rule is not None:
            _bump(dest.rules, _text(rule), MAX_SMALL)
        if category is not None:
            dest.categories.add(category)
        if address is not None:
            shown, category = self._address(address)
            if category is None:
                dest.public = True
            else:
                dest.categories.add(category)
            if not _bump(dest.addresses, shown, MAX_ADDRESSES):
                dest.address_more += 1
        pair = dest.callers.get(caller)
        if pair is None:
            if len(dest.callers) < MAX_CALLERS:
                dest.callers[caller] = [1, int(blocked)]
            else:
                dest.caller_more += 1
        else:
            pair[0] += 1
            pair[1] += blocked
        self._tick(ts, column, dest)
        return None

    def _tick(self, ts: float, column: int, dest: Destination | None) -> None:
        clock = self.clock
        i = clock.index(ts)
        self.series.add(i, clock.level, column)
        if dest is not None:
            dest.series.add(i, clock.level, column)

    def _destination(self, host: str | None, address: str | None, reason: str) -> tuple[str, str, str | None]:
        """(kind, label, internal category of a raw-IP label)."""
        if reason == _UNIX:
            return "unix", _short(host or address or "?"), None
        if reason == _FAMILY:
            return "other", _short(host or address or "?"), None
        if host is not None:
            found = self._hosts.get(host)
            if found is None:
                try:
                    name = normalize_host(host)
                    found = ("name", name) if parse_address(name) is None else ("ip", "")
                except InvalidHost:
                    found = ("invalid", _short(host) or "?")
                if len(self._hosts) >= _CACHE_MAX:
                    self._hosts.clear()
                self._hosts[host] = found
            if found[0] != "ip":
                return found[0], found[1], None
            address = host
        if address is None:
            return "other", "?", None
        shown, category = self._address(address)
        return ("ip" if category != "invalid" else "invalid"), shown, category

    def _address(self, address: str) -> tuple[str, str | None]:
        """(canonical text, internal category or None). Loopback counts as internal."""
        found = self._addrs.get(address)
        if found is None:
            parsed = parse_address(address)
            found = (_short(address), "invalid") if parsed is None else (format_address(parsed), classify(parsed))
            if len(self._addrs) >= _CACHE_MAX:
                self._addrs.clear()
            self._addrs[address] = found
        return found

    def _other(self, kind: str, obj: dict[str, Any]) -> None:
        kind = _text(kind) or "?"
        if not _bump(self.other, kind, MAX_SMALL * 4):
            self.other_more += 1
            return
        what = " ".join(t for t in (_text(obj.get("reason")), _text(obj.get("state"))) if t)
        if what:
            _bump(self.other_detail.setdefault(kind, {}), what, MAX_SMALL)
        if len(self.other_samples) < MAX_SAMPLES:
            sample = {
                _short(str(k)): v
                if v is None or v.__class__ in (int, bool) or (v.__class__ is float and math.isfinite(v))
                else _text(v)
                for k, v in list(obj.items())[:MAX_SMALL]
            }
            self.other_samples.append(sample)

    # -- results -----------------------------------------------------------

    def finish(self) -> Summary:
        """Align the global timeline to the final buckets and look for patterns."""
        self.timeline = self.dense(self.series)
        self.patterns = find_patterns(self)
        self.requests.finish()
        return self

    def dense(self, series: Series) -> list[tuple[int, int, int]]:
        """A destination's (or the global) counts per final bucket; computed on
        demand so 5000 destinations do not each hold an expanded copy."""
        clock = self.clock
        if clock.lo is None:
            return []
        return series.dense(clock.level, clock.lo, clock.hi - clock.lo + 1)

    @property
    def bucket_seconds(self) -> float:
        return self.clock.width

    @property
    def timeline_start(self) -> float | None:
        return None if self.clock.lo is None else self.clock.lo * self.clock.width

    def ranked(self) -> list[Destination]:
        """Destinations, most blocked first, then busiest."""
        return sorted(self.destinations.values(), key=lambda d: (-d.blocked, -d.events, d.label))

    @property
    def overflow_events(self) -> int:
        return sum(self.overflow)

    def to_json(self, destinations: bool = True) -> dict[str, Any]:
        """The whole report as plain data (see json_chunks() to stream it instead)."""
        return {
            "files": self.files,
            "lines": self.lines,
            "events": self.events,
            "blank_lines": self.blank,
            "malformed": {
                "count": self.malformed,
                "first": [{"line": p.where, "problem": p.problem} for p in self.malformed_samples],
            },
            "truncated_last_lines": self.truncated,
            "other_events": {
                "kinds": self.other,
                "detail": self.other_detail,
                "unlisted": self.other_more,
                "samples": self.other_samples,
            },
            "first_seen": self.first,
            "last_seen": self.last,
            "decisions": dict(zip(DECISIONS, self.counts, strict=True)),
            "reasons": {r: dict(zip(DECISIONS, row, strict=True)) for r, row in self.reasons.items()},
            "ops": self.ops,
            "protocols": self.protocols,
            "modes": self.modes,
            "processes": len(self.pids),
            "processes_more": self.pids_more,
            "blocked_callers": [
                {"caller": c, "events": n} for c, n in sorted(self.blocked_callers.items(), key=_by_count)
            ],
            "unlisted_blocked_caller_events": self.blocked_callers_more,
            "overflow": {
                "max_destinations": self.max_destinations,
                "events": dict(zip(DECISIONS, self.overflow, strict=True)),
                "domains": dict(sorted(self.overflow_domains.items(), key=_by_count)),
            },
            "patterns": [p.to_json() for p in self.patterns],
            "requests": self.requests.to_json(),
            "timeline": {
                "start": self.timeline_start,
                "bucket_seconds": self.bucket_seconds,
                "columns": list(DECISIONS),
                "buckets": [list(row) for row in self.timeline],
            },
        } | ({"destinations": [d.to_json(self.dense(d.series)) for d in self.ranked()]} if destinations else {})

    def json_chunks(self) -> Iterator[str]:
        """The JSON report, streamed: one destination per line, so thousands of
        destinations never exist as one big object tree or string."""
        head = json.dumps(self.to_json(destinations=False), indent=1)
        yield head[:-2] + ',\n "destinations": ['
        for i, dest in enumerate(self.ranked()):
            yield ("," if i else "") + "\n  " + json.dumps(dest.to_json(self.dense(dest.series)))
        yield "\n ]\n}\n"


def _json_problem(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return f"not JSON ({str(exc).split(':')[0]})"


# -- patterns ----------------------------------------------------------------------

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
                "(credential theft and SSRF targets): " + _list(d.label for d in sensitive),
                [d.label for d in sensitive],
            )
        )
    raw = [d for d in dests if d.kind == "ip" and not d.categories]
    if raw:
        found.append(
            Pattern(
                "raw-ip",
                f"{len(raw)} destination(s) were reached by raw IP, without a name: " + _list(d.label for d in raw),
                [d.label for d in raw],
            )
        )
    denied = [d for d in dests if _DENIED in d.reasons]
    if denied:
        found.append(
            Pattern(
                "denied",
                f"{len(denied)} destination(s) hit a deny rule: " + _list(d.label for d in denied),
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
        found.append(Pattern("alerts", f"{alerts:,} breaker alert(s)" + (f": {_counts(detail)}" if detail else "")))
    if len(summary.modes) > 1:
        found.append(Pattern("modes", "the log mixes modes: " + _counts(summary.modes)))
    return found


def _sensitive(dest: Destination) -> bool:
    if dest.kind == "name" and dest.host in METADATA_NAMES:
        return True
    return bool(dest.categories - {"loopback", "invalid"}) or _METADATA in dest.reasons or _INTERNAL in dest.reasons


def _list(labels: Iterable[str], limit: int = 8) -> str:
    items = list(labels)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {n:,}" for k, n in sorted(counter.items(), key=_by_count))


# -- suggestions --------------------------------------------------------------------

RAW_IP_NOTE = (
    "raw IP, no name was used: the rule outlives the service's address, and whoever holds the address "
    "next inherits the access; prefer connecting by name"
)
# Second-level labels under which a two-label domain is a public suffix (co.uk, com.au ...).
_PUBLIC_SECOND = frozenset(
    ("ac", "co", "com", "edu", "gov", "go", "gob", "ltd", "mil", "ne", "net", "nic", "or", "org")
)


@dataclass
class Suggested:
    rule: str
    notes: list[str]
    covers: list[str]  # destination labels

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "notes": self.notes, "covers": self.covers}


@dataclass
class Withheld:
    rules: list[str]  # the rules one would need (emitted commented out)
    why: str
    covers: list[str]
    warning: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"rules": self.rules, "why": self.why, "covers": self.covers, "warning": self.warning}


@dataclass
class Suggestion:
    allow: list[Suggested]
    withheld: list[Withheld]
    loopback_events: int
    loopback_blocked: int  # would-block loopback events: the monitored config had allow_loopback = false
    port_limit: int
    wildcard_threshold: int
    incomplete_events: int  # events to destinations that were not itemised

    def to_json(self) -> dict[str, Any]:
        return {
            "allow": [s.to_json() for s in self.allow],
            "withheld": [w.to_json() for w in self.withheld],
            "loopback_events": self.loopback_events,
            "loopback_blocked": self.loopback_blocked,
            "port_limit": self.port_limit,
            "wildcard_threshold": self.wildcard_threshold,
            "incomplete_events": self.incomplete_events,
        }


def _rule_for(host: str, port: int | None) -> str:
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _scoped(host: str, ports: set[int], port_limit: int) -> list[str]:
    """Port-scoped rules when a host used at most port_limit ports, else any port."""
    if ports and len(ports) <= port_limit:
        return [_rule_for(host, p) for p in sorted(ports)]
    return [host]


def _public_suffix_like(domain: str) -> bool:
    labels = domain.split(".")
    return len(labels) < 2 or (len(labels) == 2 and len(labels[1]) == 2 and labels[0] in _PUBLIC_SECOND)


def _about(dests: list[Destination]) -> str:
    counts = [sum(d.counts[i] for d in dests) for i in range(3)]
    shown = ", ".join(f"{name} {n:,}" for name, n in zip(DECISIONS, counts, strict=True) if n)
    callers: dict[str, int] = {}
    for dest in dests:
        for caller, (n, _b) in dest.callers.items():
            callers[caller] = callers.get(caller, 0) + n
    top = sorted(callers.items(), key=_by_count)[:2]
    by = f"; from {', '.join(c for c, _ in top)}" if top else ""
    return f"{shown}{by}"


def suggest(summary: Summary, port_limit: int = 3, wildcard_threshold: int = 0) -> Suggestion:
    """The narrowest allowlist covering every allowed and would-block destination.

    Exact names for names, IP rules only for raw-IP destinations, port-scoped when
    a host used at most ``port_limit`` ports, ``*.parent`` only when more than
    ``wildcard_threshold`` (>0) sibling names were seen. Internal, metadata,
    loopback and denied destinations are withheld: emitted commented out with why.
    Destinations only ever blocked in enforce mode are listed commented out too."""
    hosts: dict[tuple[str, str], list[Destination]] = {}
    for dest in summary.destinations.values():
        hosts.setdefault((dest.kind, dest.host), []).append(dest)
    allow: list[Suggested] = []
    withheld: list[Withheld] = []
    names: dict[str, tuple[set[int], list[Destination]]] = {}
    loopback = loopback_blocked = 0
    for (kind, host), group in sorted(hosts.items(), key=lambda kv: _domain_order(kv[0][1])):
        wanted = [d for d in group if d.counts[0] or d.counts[1]]  # allowed or would-block
        enforced = [d for d in group if not (d.counts[0] or d.counts[1])]
        if enforced:
            ports = {d.port for d in enforced if d.port is not None}
            risk = _risk(kind, host, enforced)
            denied = any(_DENIED in d.reasons for d in enforced)
            withheld.append(
                Withheld(
                    _scoped(host, ports, port_limit) if kind in ("name", "ip") and not denied else [],
                    f"only ever blocked (enforce mode){'; ' + risk if risk else ''}; {_about(enforced)}: "
                    "add it deliberately if it is needed",
                    [d.label for d in enforced],
                    warning=risk is not None,
                )
            )
        denied_dests = [d for d in wanted if _DENIED in d.reasons]
        if denied_dests:
            why = "matches a deny rule, which the allowlist cannot override"
            withheld.append(Withheld([], why, [d.label for d in denied_dests]))
            wanted = [d for d in wanted if _DENIED not in d.reasons]
        if not wanted:
            continue
        labels = [d.label for d in wanted]
        ports = {d.port for d in wanted if d.port is not None}
        categories = set().union(*(d.categories for d in wanted)) - {"invalid"}
        reasons = set().union(*(d.reasons for d in wanted))
        if kind not in ("name", "ip"):
            kinds = {"unix": "an AF_UNIX socket (see allow_unix)", "invalid": "not a valid host"}
            withheld.append(Withheld([], kinds.get(kind, "not a network destination"), labels))
        elif kind == "name" and host in METADATA_NAMES:
            withheld.append(
                Withheld(
                    _scoped(host, ports, port_limit),
                    f"cloud metadata name (instance credentials): allow only if required; {_about(wanted)}",
                    labels,
                )
            )
        elif (categories == {"loopback"} and not any(d.public for d in wanted)) or (
            not categories and _LOOPBACK in reasons
        ):
            loopback += sum(d.events for d in wanted)  # covered by allow_loopback, never a rule
            loopback_blocked += sum(d.counts[1] for d in wanted)
        elif kind == "ip" and categories:
            why = f"internal address ({', '.join(sorted(categories))}): an SSRF target; allow only if needed"
            withheld.append(Withheld(_scoped(host, ports, port_limit), f"{why}; {_about(wanted)}", labels))
        elif kind == "ip":
            allow += [Suggested(r, [RAW_IP_NOTE, _about(wanted)], labels) for r in _scoped(host, ports, port_limit)]
        elif categories - {"loopback"}:
            internal = sorted({a for d in wanted for a in d.addresses if _category(a) not in (None, "loopback")})
            what = ", ".join(sorted(categories - {"loopback"}))
            rules = [r for a in internal for r in _scoped(a, ports, port_limit)]
            more = "; more addresses were seen than listed" if any(d.address_more for d in wanted) else ""
            if any(d.public for d in wanted):
                names[host] = (ports, wanted)
                why = (
                    f"{host} also resolved to internal addresses ({what}){more}: the name rule above does not "
                    "reach them (enforce mode drops internal answers); each needs an IP rule, and an "
                    "allowlisted internal address is an SSRF target"
                )
                withheld.append(Withheld(rules, why, labels))
            else:
                why = (
                    f"resolves only to internal addresses ({what}){more}: it needs the name AND an IP rule per "
                    f"address, and an allowlisted internal address is an SSRF target; {_about(wanted)}"
                )
                withheld.append(Withheld(_scoped(host, ports, port_limit) + rules, why, labels))
        else:
            names[host] = (ports, wanted)
    allow = _name_rules(names, port_limit, wildcard_threshold) + allow  # names first, raw IPs last
    suggestion = Suggestion(
        allow, withheld, loopback, loopback_blocked, port_limit, wildcard_threshold, summary.overflow_events
    )
    _verify(suggestion, summary)
    return suggestion


def _name_rules(
    names: dict[str, tuple[set[int], list[Destination]]], port_limit: int, threshold: int
) -> list[Suggested]:
    out: list[Suggested] = []
    collapsed: set[str] = set()
    if threshold > 0:
        siblings: dict[str, list[str]] = {}
        for name in names:
            parent = name.partition(".")[2]
            if parent and not _public_suffix_like(parent):
                siblings.setdefault(parent, []).append(name)
        for parent, children in sorted(siblings.items(), key=lambda kv: _domain_order(kv[0])):
            if len(children) <= threshold:
                continue
            ports = set().union(*(names[c][0] for c in children))
            dests = [d for c in children for d in names[c][1]]
            note = (
                f"wildcard: {len(children)} sibling names seen (> --wildcard-threshold {threshold}); it also allows "
                f"names under {parent} that were never seen"
            )
            out += [
                Suggested(r, [note, _about(dests)], [d.label for d in dests])
                for r in _scoped(f"*.{parent}", ports, port_limit)
            ]
            collapsed.update(children)
    for name, (ports, dests) in names.items():
        if name not in collapsed:
            out += [Suggested(r, [_about(dests)], [d.label for d in dests]) for r in _scoped(name, ports, port_limit)]
    out.sort(key=lambda s: _domain_order(s.rule))
    return out


def _risk(kind: str, host: str, dests: list[Destination]) -> str | None:
    """Why allowing these destinations would be dangerous or pointless, if it would."""
    categories = set().union(*(d.categories for d in dests)) - {"invalid", "loopback"}
    if kind == "name" and host in METADATA_NAMES:
        return "cloud metadata name (instance credentials)"
    if categories:
        return f"internal address ({', '.join(sorted(categories))}): an SSRF target"
    if any(_DENIED in d.reasons for d in dests):
        return f"{_DENIED}: matches a deny rule, which the allowlist cannot override"
    return None


def _category(address: str) -> str | None:
    parsed = parse_address(address)
    return "invalid" if parsed is None else classify(parsed)


def _domain_order(text: str) -> tuple[int, list[str]]:
    """Sort names by domain (example.test before a.example.test), IPs last."""
    if text.startswith("[") or text.count(":") > 1:
        return 1, [text]
    head = text.split(":")[0].strip("*.")
    if parse_address(head) is not None:
        return 1, [text]
    return 0, list(reversed(head.split(".")))


def _verify(suggestion: Suggestion, summary: Summary) -> None:
    """Every rule must parse, and the allowlist must allow what it claims to
    cover; anything else is moved to the withheld list with the reason."""
    from sockguard.policy import Policy

    good = []
    for item in suggestion.allow:
        try:
            parse_rule(item.rule)
            good.append(item)
        except RuleError as exc:
            suggestion.withheld.append(Withheld([], f"cannot be written as a rule: {exc}", item.covers))
    suggestion.allow = good
    policy = Policy([s.rule for s in good], allow_loopback=True)
    by_label = {d.label: d for d in summary.destinations.values()}
    for item in good:
        for label in item.covers:
            dest = by_label[label]
            if dest.kind == "ip":
                decision = policy.check_address(dest.host, dest.port)
            else:
                decision = policy.check_name(dest.host, dest.port)
                for address in dest.addresses:
                    if decision.allowed and _category(address) is None:
                        decision = policy.check_address(address, dest.port, dest.host)
            if not decision.allowed:  # pragma: no cover - a bug in suggest(), reported not hidden
                item.notes.append(f"WARNING: does not allow {label} ({decision.reason})")


def render_toml(suggestion: Suggestion, summary: Summary, sources: list[str]) -> str:
    out = [
        f"# sockguard allowlist suggested by `sockguard report --suggest` from {safe(', '.join(sources))}",
        f"# {summary.events:,} decisions, {iso(summary.first)} .. {iso(summary.last)}, modes: "
        f"{safe(_counts(summary.modes)) or '-'}",
        "# Covers every destination the log shows allowed or would-block. Review it, run it in monitor",
        "# mode for a while, then enforce.",
        f"# Port-scoped when a host used at most {suggestion.port_limit} ports (--port-limit); wildcards: "
        + (
            f"*.parent when more than {suggestion.wildcard_threshold} sibling names were seen"
            if suggestion.wildcard_threshold
            else "off (--wildcard-threshold)"
        ),
    ]
    if suggestion.incomplete_events:
        out += [
            f"# WARNING: INCOMPLETE. {suggestion.incomplete_events:,} events went to destinations past the first "
            f"{summary.max_destinations:,}",
            "# that were not itemised; rerun with a larger --max-destinations.",
        ]
    out.append('mode = "enforce"')
    if suggestion.loopback_events:
        why = f"{suggestion.loopback_events:,} loopback events seen"
        if suggestion.loopback_blocked:
            why += f", {suggestion.loopback_blocked:,} would-block: the monitored config had allow_loopback = false"
        out.append(f"allow_loopback = true  # {why}")
    out.append("allow = [")
    for item in suggestion.allow:
        for note in item.notes:
            out += _comment(note)
        out.append(f"    {_toml_string(item.rule)},")
    if suggestion.withheld:
        out.append("")
        out.append("    # ---- not suggested: uncomment deliberately, after review ----")
        for held in suggestion.withheld:
            head = "WARNING: " if held.warning else ""
            out += _comment(f"{head}{_list(held.covers, 4)}: {held.why}")
            out += [f"    # {_toml_string(rule)}," for rule in held.rules]
    out.append("]")
    return "\n".join(out) + "\n"


def _comment(text: str, width: int = 100) -> list[str]:
    """A TOML comment, wrapped; log text is made safe first so it cannot end the comment."""
    import textwrap

    return textwrap.wrap(safe(text), width, initial_indent="    # ", subsequent_indent="    #   ") or ["    #"]


def _toml_string(text: str) -> str:
    return json.dumps(text)  # rules are ASCII names/addresses; JSON escaping is valid TOML


# -- text output -----------------------------------------------------------------------


def render_text(summary: Summary, top: int) -> str:
    s = summary
    out = [f"sockguard report: {safe(', '.join(f['path'] for f in s.files))} ({_size(s.bytes)})"]
    read = f"{s.lines:,} lines: {s.events:,} decisions"
    if s.requests.requests:
        read += f", {s.requests.requests:,} HTTP requests"
    if s.other:
        read += f", {sum(s.other.values()) + s.other_more:,} other events ({safe(_counts(s.other))})"
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
        out.append(f"  reasons    {safe(_counts(reasons))}")
    ranked = s.ranked()
    shown = ranked if top <= 0 else ranked[:top]
    out.append("")
    more = f" (showing {len(shown)}; --top 0 for all)" if len(shown) < len(ranked) else ""
    out.append(f"Destinations: {len(ranked):,}{more}, most blocked first")
    for d in shown:
        decisions = ", ".join(f"{n} {c:,}" for n, c in zip(DECISIONS, d.counts, strict=True) if c)
        out.append(f"  {safe(d.label)}  [{d.kind}]  {d.events:,} events: {decisions}")
        out.append(f"      ops {safe(_counts(d.ops))} | proto {safe(_counts(d.protocols))}")
        out.append(f"      reasons {safe(_counts(d.reasons))}")
        if d.addresses:
            extra = f" (+{d.address_more:,} events to unlisted addresses)" if d.address_more else ""
            internal = f" [internal: {', '.join(sorted(d.categories))}]" if d.categories - {"invalid"} else ""
            listed = ", ".join(f"{a} ({n:,})" for a, n in sorted(d.addresses.items(), key=_by_count))
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
            + safe(_counts(dict(zip(DECISIONS, s.overflow, strict=True))))
        )
    blocked = [d for d in ranked if d.blocked]
    if blocked:
        out.append("")
        out.append(f"Blocked and would-block: {s.counts[1] + s.counts[2]:,} events to {len(blocked):,} destinations")
        for d in blocked[: top if top > 0 else None]:
            why = ", ".join(r for r in d.reasons if r not in ("allowed-name", "allowed-ip", _LOOPBACK))
            out.append(f"  {d.counts[1]:>9,} would-block {d.counts[2]:>9,} block  {safe(d.label)}  ({safe(why)})")
        out.append("  by calling code:")
        for caller, n in sorted(s.blocked_callers.items(), key=_by_count)[:10]:
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
        out.append(f"Other events: {safe(_counts(s.other))}")
        for kind, detail in s.other_detail.items():
            out.append(f"  {safe(kind)}: {safe(_counts(detail))}")
        for sample in s.other_samples[:5]:
            out.append(f"  {safe(json.dumps(sample))[:300]}")
    if s.malformed:
        out.append("")
        out.append(f"Malformed lines: {s.malformed:,} (skipped)")
        out += [f"  {safe(p.where)}: {safe(p.problem)}" for p in s.malformed_samples[:10]]
    return "\n".join(out) + "\n"


def _modes(modes: dict[str, int]) -> str:
    return next(iter(modes)) if len(modes) == 1 else _counts(modes)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


# -- progress ------------------------------------------------------------------------


class Progress:
    """Progress on stderr: redrawn in place on a terminal, a line every few
    seconds otherwise (--progress); silent for inputs that finish quickly."""

    def __init__(self, stream: IO[str], tty: bool, total: int | None) -> None:
        self.stream = stream
        self.tty = tty
        self.total = total  # bytes over all files, if known
        self.before = 0  # bytes in files already read
        self.start = time.monotonic()
        self.next = self.start + (0.5 if tty else 2.0)
        self.shown = False

    def update(self, name: str, done: int, lines: int) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + (0.25 if self.tty else 2.0)
        at = self.before + done
        share = f" ({100 * at / self.total:.0f}%)" if self.total else ""
        text = f"sockguard report: {safe(name)}: {lines:,} lines, {_size(at)}{share}, {now - self.start:.1f} s"
        self._write(text)

    def file_done(self, size: int) -> None:
        self.before += size

    def _write(self, text: str, end: str = "") -> None:
        self.shown = True
        try:
            self.stream.write(f"\r{text}\x1b[K{end}" if self.tty else text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def close(self, lines: int) -> None:
        elapsed = time.monotonic() - self.start
        if self.tty:
            if self.shown:
                self._write(f"sockguard report: {lines:,} lines in {elapsed:.1f} s", "\n")
        else:
            self._write(f"sockguard report: done, {lines:,} lines in {elapsed:.1f} s")


# -- command line ----------------------------------------------------------------------


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logs", nargs="+", metavar="LOG.jsonl", help="decision log(s) to read; - for stdin")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    parser.add_argument(
        "--suggest", action="store_true", help="print the narrowest allowlist (TOML) covering what the log saw"
    )
    parser.add_argument(
        "--port-limit",
        type=_non_negative,
        default=3,
        metavar="N",
        help="--suggest: port-scope a host's rule when it used at most N ports (default 3; 0 = never)",
    )
    parser.add_argument(
        "--wildcard-threshold",
        type=_non_negative,
        default=0,
        metavar="N",
        help="--suggest: use *.parent when MORE than N sibling names were seen (default 0 = never)",
    )
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page to FILE")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the text/JSON/TOML output to FILE, not stdout")
    parser.add_argument(
        "--fail-on-block", action="store_true", help="exit 1 if the log holds any block or would-block decision"
    )
    parser.add_argument(
        "--top", type=_non_negative, default=30, metavar="N", help="text: destinations listed (default 30; 0 = all)"
    )
    parser.add_argument(
        "--max-destinations",
        type=_positive,
        default=MAX_DESTINATIONS,
        metavar="N",
        help=f"itemise at most N destinations, count the rest (default {MAX_DESTINATIONS}; bounds memory)",
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="progress on stderr (default: if a TTY)"
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no progress output"
    )


def _error(message: str) -> int:
    print(f"sockguard report: {message}", file=sys.stderr)
    return EXIT_USAGE


def _open_inputs(paths: list[str]) -> list[tuple[str, IO[bytes], int | None]]:
    opened: list[tuple[str, IO[bytes], int | None]] = []
    try:
        for path in paths:
            if path == "-":
                opened.append(("<stdin>", sys.stdin.buffer, None))
                continue
            if os.path.isdir(path):
                raise OSError(f"{path} is a directory, not a decision log")
            stream = open(path, "rb")  # noqa: SIM115 - closed by the caller
            size = os.fstat(stream.fileno()).st_size
            opened.append((path, stream, size if size else None))
    except OSError:
        for _, done, _ in opened:
            if done is not sys.stdin.buffer:
                done.close()
        raise
    return opened


def build(args: argparse.Namespace) -> Summary:
    """Read the logs named on the command line into a finished Summary. Raises OSError."""
    inputs = _open_inputs(args.logs)
    summary = Summary(args.max_destinations)
    tty = sys.stderr.isatty()
    show = args.progress if args.progress is not None else tty
    sizes = [size for _, _, size in inputs]
    progress = Progress(sys.stderr, tty, sum(s for s in sizes if s) if all(sizes) else None) if show else None
    try:
        for name, stream, _ in inputs:
            summary.read(name, stream, progress)
            if progress is not None:
                progress.file_done(summary.files[-1]["bytes"])
    finally:
        for _, stream, _ in inputs:
            if stream is not sys.stdin.buffer:
                stream.close()
    if progress is not None:
        progress.close(summary.lines)
    return summary.finish()


def main(args: argparse.Namespace) -> int:
    try:
        summary = build(args)
    except OSError as exc:
        return _error(f"cannot read {_describe(exc)}")
    if summary.malformed and not summary.events and not summary.other and not summary.requests.requests:
        first = summary.malformed_samples[0] if summary.malformed_samples else None
        detail = f" ({first.where}: {first.problem})" if first else ""
        return _error(f"{', '.join(args.logs)} holds no sockguard events{detail}; is it a decision log?")
    sources = [f["path"] for f in summary.files]
    if args.suggest:
        suggestion = suggest(summary, args.port_limit, args.wildcard_threshold)
        if suggestion.incomplete_events:
            print(
                f"sockguard report: warning: the suggestion is INCOMPLETE, {suggestion.incomplete_events:,} events "
                f"went to destinations past --max-destinations {summary.max_destinations:,}",
                file=sys.stderr,
            )
        if args.format == "json":
            text: Iterable[str] = _json_chunks(suggestion.to_json())
        else:
            text = [render_toml(suggestion, summary, sources)]
    elif args.format == "json":
        text = summary.json_chunks()
    else:
        text = [render_text(summary, args.top)]
    if args.html:
        from sockguard.report_html import render_html

        try:
            write_atomically(args.html, render_html(summary))
        except OSError as exc:
            return _error(f"cannot write HTML to {_describe(exc)}")
    try:
        if args.output:
            write_atomically(args.output, text)
        else:
            for chunk in text:
                sys.stdout.write(chunk)
            sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        return _error(f"cannot write output to {_describe(exc)}")
    if args.fail_on_block and (summary.counts[1] or summary.counts[2]):
        return EXIT_BLOCKS
    return EXIT_OK


def _describe(exc: OSError) -> str:
    if exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def _json_chunks(data: Any) -> Iterable[str]:
    """JSON written piecewise: a large report is never one big string in memory."""
    yield from json.JSONEncoder(indent=1).iterencode(data)
    yield "\n"
