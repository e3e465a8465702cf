"""Request events (sockguard/http/): what the HTTP hooks add per request on a kept-alive connection.

The request runs through the real client code, but its connection is canned, so the network's jitter (tens of
µs per loopback round trip on a shared VM) does not bury a 1 µs difference:

* ``http.client``: ``HTTPConnection.request`` + ``getresponse`` + ``read`` on a connection whose socket is an
  in-memory object answering ``200 OK`` (the path urllib, xmlrpc and urllib3/requests take; the peer address it
  reports is allowed by an IP rule, so the event carries the address and the rule);
* ``httpcore``: ``ConnectionPool.request`` (httpx's transport) on one kept-alive connection whose network stream
  is canned the same way (httpcore's ``NetworkStream`` interface; it reports the same peer address).

Variants: ``bare`` (unguarded), ``guard`` (no sink wants request events: the logger at its default WARNING, no
log file -- the hooks decide the Host header and return), ``guard-log`` (the JSON-lines log on: every request is
one event, caller found, one line written). The request target carries a query string, dropped from the event.

Two measurements per row (docs/performance.md, "How the request rows are measured"): CPU time, the paired median
against ``bare`` over many short interleaved batches, with its 95% interval; and the instructions per request
(valgrind's callgrind, load-independent, information): ``python -m benchmarks.http_requests VARIANT KIND LOW HIGH
LOG MARKS_DIR`` is one counted run.
"""

from __future__ import annotations

import gc
import importlib
import io
import json
import os
import statistics
import sys
import time
from typing import Any

from benchmarks import callgrind, variants
from benchmarks.harness import Context, Row, Stats, Workers, copies_of, interleave, paired, paired_interval, verdict
from benchmarks.worker import Bench, Elapsed, elapsed, stamp

US = 1000.0
PEER = ("198.51.100.10", 80)  # what the canned socket says it is connected to (never used for traffic)
HOST = "api.bench.test"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
KINDS = ("http.client", "httpcore")
VARIANTS = ("bare", "guard", "guard-log")
SINKS = {"guard": "no sink wants request events", "guard-log": "JSONL log on: one event per request"}
# Timed: (requests per batch, rounds, processes per variant). Short batches, many rounds: on a shared machine a
# batch's time swings by ±30% whatever its length, so more rounds (pairs) narrow the median more than longer
# batches do; two processes per variant average out what one process's memory layout adds or saves.
TIMED_FULL, TIMED_QUICK = (200, 150, 2), (200, 15, 1)
WARMUP = 100  # requests before a counted run's measured parts
COUNTED_FULL, COUNTED_QUICK = (100, 300), (50, 150)  # requests in the two measured parts of a counted run


class _Reader(io.BytesIO):
    def close(self) -> None:  # every response's makefile() is this one stream: closing one must not end it
        pass


class _CannedSocket:
    """Enough of a connected socket for http.client: sends go nowhere, every response is ``RESPONSE``."""

    def __init__(self) -> None:
        self.reader = _Reader()

    def refill(self, n: int) -> None:
        self.reader = _Reader(RESPONSE * n)

    def sendall(self, data: Any) -> None:
        pass

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BytesIO:
        return self.reader

    def getpeername(self) -> tuple[str, int]:
        return PEER

    def settimeout(self, timeout: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _canned(httpcore: Any) -> tuple[Any, Any]:
    """An httpcore network stream answering ``RESPONSE`` to the next ``left`` reads, connected to ``PEER``, and a
    network backend whose every connection is that stream.

    Like httpcore's ``MockStream``, with two differences: it reports its peer (``server_addr``, as a real socket's
    stream does, so the request event carries the address and its rule, as the http.client rows' does), and a
    read costs the same whatever the batch size (MockStream pops the first item of a list)."""

    class CannedStream(httpcore.NetworkStream):  # type: ignore[misc]
        left = 0

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            if self.left <= 0:
                return b""
            self.left -= 1
            return RESPONSE

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            pass

        def close(self) -> None:
            pass

        def get_extra_info(self, info: str) -> Any:
            return PEER if info == "server_addr" else None

    stream = CannedStream()

    class CannedBackend(httpcore.NetworkBackend):  # type: ignore[misc]
        def connect_tcp(self, *args: Any, **kwargs: Any) -> Any:
            return stream

    return stream, CannedBackend()


def setup(variant: str, *, log: str, kind: str) -> Bench:
    stem, ext = os.path.splitext(log)
    log = f"{stem}-{os.getpid()}{ext}"  # one file per process (copies of a variant get the same parameters)
    variants.apply(variant, [PEER[0], HOST], log=log)
    if kind == "http.client":
        import http.client

        conn = http.client.HTTPConnection(HOST, 80)
        sock = _CannedSocket()
        conn.sock = sock  # type: ignore[assignment]

        def run(n: int) -> Elapsed:
            sock.refill(n)
            request, getresponse = conn.request, conn.getresponse
            start = stamp()
            for _ in range(n):
                request("GET", "/v1/orders?page=2")
                response = getresponse()
                if response.read() != b"ok":
                    raise RuntimeError("bad response")
            return elapsed(start)

    elif kind == "httpcore":
        import httpcore

        stream, backend = _canned(httpcore)
        pool = httpcore.ConnectionPool(network_backend=backend)  # one pool, one connection, kept alive
        request, url = pool.request, f"http://{HOST}/v1/orders?page=2"

        def run(n: int) -> Elapsed:
            stream.left = n
            start = stamp()
            for _ in range(n):
                if request("GET", url).content != b"ok":
                    raise RuntimeError("bad response")
            return elapsed(start)

    else:
        raise ValueError(f"unknown kind {kind!r}")

    def info() -> dict[str, Any]:
        if variant != "guard-log":
            return {}
        lines = requests = 0
        with open(log, "rb") as f:
            for line in f:
                lines += 1
                event = json.loads(line)
                if event.get("event") == "request" and event.get("status") == 200 and "?" not in event["path"]:
                    requests += 1
        return {"lines": lines, "request_events": requests}

    # The set-up's objects (the client library, the guard) out of the collector's reach: the worker collects
    # before every batch, and need not walk httpcore's and its async libraries' objects each time (every variant
    # alike; nothing these requests allocate is cyclic garbage).
    gc.collect()
    gc.freeze()
    return Bench({kind: run}, info)


def run(ctx: Context) -> list[Row]:
    rows = []
    n, rounds, copies = ctx.pick(TIMED_FULL, TIMED_QUICK)
    times: dict[str, float] = {}  # the bare request's median CPU µs per kind, for the instruction rows' rate
    for kind in KINDS:
        params = {v: {"log": os.path.join(ctx.tmp, f"requests-{kind}-{v}.jsonl"), "kind": kind} for v in VARIANTS}
        started = time.perf_counter()
        with Workers("http_requests", params, copies=copies) as workers:
            samples = interleave(workers, kind, n=n, rounds=rounds)
            written = [w.call(op="info") for w in copies_of(workers, "guard-log")]
        ctx.log(f"    {kind}: timed in {time.perf_counter() - started:.0f} s")
        times[kind] = statistics.median(samples["bare"]) / US
        expected = n * (rounds + 2) * copies  # every batch, warm-up included
        events = sum(w["request_events"] for w in written)
        for variant, target, limit in (("guard", "added ≤ 1 µs", 1.0), ("guard-log", "added ≤ 5 µs", 5.0)):
            added, ratio = paired(samples[variant], samples["bare"], US)
            low, high = paired_interval(samples[variant], samples["bare"], US)
            row = Row(
                f"request/{kind}/{variant}",
                f"{kind} request on a kept-alive connection, {SINKS[variant]}",
                target,
                "µs",
                baseline=Stats.of(samples["bare"], US),
                guarded=Stats.of(samples[variant], US),
                added=added,
                ratio=ratio,
            )
            ok = added <= limit
            row.note = f"added: 95% interval {low:+.2f} to {high:+.2f} µs ({rounds} rounds of {n} requests x {copies})"
            row.extra = {"added_interval_95": [low, high], "batch": n, "rounds": rounds, "copies": copies}
            if variant == "guard-log":
                ok = ok and events == expected
                row.note += f"; {events:,} request events written for {expected:,} requests"
                row.extra |= {"log_files": written, "expected_events": expected}
            row.verdict = verdict(ok)
            rows.append(row)
    rows.extend(_instruction_rows(ctx, times))
    return rows


# --- instruction counts (load-independent) -------------------------------------------------------------------

TARGETS = {"guard": 1.0, "guard-log": 5.0}  # µs added per request (issue 15)


def _instruction_rows(ctx: Context, times: dict[str, float]) -> list[Row]:
    """Instructions added per request, counted by callgrind in one run per variant: (the part of HIGH requests -
    the part of LOW) / (HIGH - LOW), after the set-up and a warm-up; the interpreter's start-up is not counted."""
    marks = callgrind.build(ctx.tmp, "callgrind_marks") if callgrind.valgrind() else None
    if marks is None:
        why = "valgrind is not installed" if callgrind.valgrind() is None else "callgrind_marks.c did not build"
        return [Row("request/instructions", "instructions per request (valgrind)", "info", "instr",
                    verdict="skipped", note=why)]  # fmt: skip
    low, high = ctx.pick(COUNTED_FULL, COUNTED_QUICK)

    def args(job: str) -> tuple[str, ...]:
        kind, variant = job.split("/")
        return variant, kind, str(low), str(high), os.path.join(ctx.tmp, f"counted-{kind}-{variant}.jsonl"), marks

    started = time.perf_counter()
    jobs = [f"{kind}/{variant}" for kind in reversed(KINDS) for variant in VARIANTS]  # httpcore's (longer) first
    counted = callgrind.per_op_in_parts("http_requests", args, jobs, low, high)
    ctx.log(f"    instructions counted in {time.perf_counter() - started:.0f} s")
    rows = []
    for kind in KINDS:
        counts = {variant: counted[f"{kind}/{variant}"] for variant in VARIANTS}
        bare = counts["bare"]
        for variant in ("guard", "guard-log"):
            guarded = counts[variant]
            key, label = f"request/instructions-{kind}/{variant}", f"{kind} request, {SINKS[variant]}"
            if bare is None or guarded is None:
                rows.append(Row(key, f"{label}: instructions (valgrind)", "info", "instr", verdict="skipped",
                                note="a counted run failed"))  # fmt: skip
                continue
            rate = bare / times[kind]  # instructions per µs of the bare request, this run, this machine
            budget = TARGETS[variant] * rate
            row = Row(
                key,
                f"{label}: instructions per request (valgrind; load-independent)",
                f"info (≤ {TARGETS[variant]:g} µs ≈ {budget:,.0f} at this run's rate)",
                "instr",
                baseline=Stats(bare, bare, bare, 1),
                guarded=Stats(guarded, guarded, guarded, 1),
                added=guarded - bare,
                ratio=guarded / bare,
                verdict="info",
                note=f"≈ {(guarded - bare) / rate:.2f} µs at the bare request's {rate:,.0f} instructions per CPU µs "
                f"in this run's time rows ({bare:,.0f} instructions in {times[kind]:.2f} µs); counted: "
                f"({high:,} - {low:,} requests) after a warm-up, collector off as in the time rows"
                + ("; the write() system call (one per line) is not counted" if variant == "guard-log" else ""),
            )
            row.extra = {"instructions": counts, "rate_per_us": rate, "budget_instructions": budget, "low": low,
                         "high": high}  # fmt: skip
            rows.append(row)
    return rows


def _counted_run(variant: str, kind: str, low: int, high: int, log: str, marks: str) -> None:
    """One run for callgrind: the set-up of ``variant`` (not instrumented) and a warm-up, then two measured parts of
    ``low`` and ``high`` requests, the collector off (as in a timed batch; these requests leave no cyclic garbage)."""
    sys.path.insert(0, marks)
    callgrind_marks = importlib.import_module("callgrind_marks")
    work = setup(variant, log=log, kind=kind).workloads[kind]
    callgrind_marks.start()  # instrumented from here: the warm-up fills callgrind's translations too
    work(WARMUP)
    gc.collect()
    gc.disable()
    for n in (low, high):
        callgrind_marks.zero()
        work(n)
        callgrind_marks.dump(f"{n} requests")


if __name__ == "__main__":
    _counted_run(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6])
