"""Decision events streamed into bounded aggregates: per destination (host or address, port) and overall,
with a timeline whose memory does not grow with the log. The log is untrusted input: every field is
checked, strings are bounded, and malformed lines are counted, never fatal."""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from sockguard.addresses import classify, format_address, parse_address
from sockguard.errors import InvalidHost
from sockguard.report.fields import (
    BUCKETS,
    CACHE_MAX,
    COLUMN,
    DECISIONS,
    FAMILY,
    MAX_ADDRESSES,
    MAX_CALLERS,
    MAX_DESTINATIONS,
    MAX_GLOBAL,
    MAX_LINE,
    MAX_SAMPLES,
    MAX_SMALL,
    MAX_TEXT,
    MAX_TS,
    UNIX,
    bounded_text,
    bump,
    by_count,
    short,
)
from sockguard.report.patterns import Pattern, find_patterns
from sockguard.report.requests import RequestSummary
from sockguard.rules import normalize_host

if TYPE_CHECKING:
    from sockguard.report.cli import Progress

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
            "addresses": [{"address": a, "events": n} for a, n in sorted(self.addresses.items(), key=by_count)],
            "unlisted_address_events": self.address_more,
            "internal_categories": sorted(self.categories),
            "callers": [{"caller": c, "events": n, "blocked": b} for c, n, b in self.top_callers()],
            "unlisted_caller_events": self.caller_more,
            "first_seen": self.first,
            "last_seen": self.last,
            "timeline": [[i, *row] for i, row in enumerate(timeline) if any(row)],
        }


@dataclass
class Problem:
    where: str  # "file:line"
    problem: str


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
            return f"'ts' is not an epoch time: {bounded_text(ts)!r}"
        decision = obj.get("decision")
        column = COLUMN.get(decision) if decision.__class__ is str else None
        if column is None:
            return f"unknown decision {bounded_text(decision)!r}"
        host = obj.get("host")
        if host is not None and host.__class__ is not str:
            return f"'host' is not a string: {bounded_text(host)!r}"
        address = obj.get("address")
        if address is not None and address.__class__ is not str:
            return f"'address' is not a string: {bounded_text(address)!r}"
        port = obj.get("port")
        if port is not None and (port.__class__ is not int or not 0 <= port <= 65535):
            return f"'port' is not a port number: {bounded_text(port)!r}"
        # Descriptive fields: strings as written (bounded), anything else stringified.
        reason = obj.get("reason")
        if reason.__class__ is not str or len(reason) > MAX_TEXT:
            reason = bounded_text(reason) or "?"
        op = obj.get("op")
        if op.__class__ is not str or len(op) > MAX_TEXT:
            op = bounded_text(op) or "?"
        proto = obj.get("proto")
        if proto.__class__ is not str or len(proto) > MAX_TEXT:
            proto = bounded_text(proto) or "?"
        caller = obj.get("caller")
        if caller.__class__ is not str or len(caller) > MAX_TEXT:
            caller = bounded_text(caller) or "unknown"
        mode = obj.get("mode")
        if mode.__class__ is not str or len(mode) > MAX_TEXT:
            mode = bounded_text(mode) or "?"
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
        if blocked and not bump(self.blocked_callers, caller, MAX_GLOBAL):
            self.blocked_callers_more += 1

        kind, label, category = self._destination(host, address, reason)
        dest_key = (kind, label, port)
        dest = self.destinations.get(dest_key)
        if dest is None:
            if len(self.destinations) >= self.max_destinations:
                self.overflow[column] += 1
                parent = label.partition(".")[2] if kind == "name" else kind
                bump(self.overflow_domains, parent or label, MAX_GLOBAL)
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
            bump(dest.rules, bounded_text(rule), MAX_SMALL)
        if category is not None:
            dest.categories.add(category)
        if address is not None:
            shown, category = self._address(address)
            if category is None:
                dest.public = True
            else:
                dest.categories.add(category)
            if not bump(dest.addresses, shown, MAX_ADDRESSES):
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
        if reason == UNIX:
            return "unix", short(host or address or "?"), None
        if reason == FAMILY:
            return "other", short(host or address or "?"), None
        if host is not None:
            found = self._hosts.get(host)
            if found is None:
                try:
                    name = normalize_host(host)
                    found = ("name", name) if parse_address(name) is None else ("ip", "")
                except InvalidHost:
                    found = ("invalid", short(host) or "?")
                if len(self._hosts) >= CACHE_MAX:
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
            found = (short(address), "invalid") if parsed is None else (format_address(parsed), classify(parsed))
            if len(self._addrs) >= CACHE_MAX:
                self._addrs.clear()
            self._addrs[address] = found
        return found

    def _other(self, kind: str, obj: dict[str, Any]) -> None:
        kind = bounded_text(kind) or "?"
        if not bump(self.other, kind, MAX_SMALL * 4):
            self.other_more += 1
            return
        what = " ".join(t for t in (bounded_text(obj.get("reason")), bounded_text(obj.get("state"))) if t)
        if what:
            bump(self.other_detail.setdefault(kind, {}), what, MAX_SMALL)
        if len(self.other_samples) < MAX_SAMPLES:
            sample = {
                short(str(k)): v
                if v is None or v.__class__ in (int, bool) or (v.__class__ is float and math.isfinite(v))
                else bounded_text(v)
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
                {"caller": c, "events": n} for c, n in sorted(self.blocked_callers.items(), key=by_count)
            ],
            "unlisted_blocked_caller_events": self.blocked_callers_more,
            "overflow": {
                "max_destinations": self.max_destinations,
                "events": dict(zip(DECISIONS, self.overflow, strict=True)),
                "domains": dict(sorted(self.overflow_domains.items(), key=by_count)),
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
