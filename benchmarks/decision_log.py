"""The JSON-lines decision log: cost per logged (allowed) decision, and many threads writing at once.

Variants: ``bare``, ``guard`` (no log), ``guard-log`` (log file enabled: every allowed connect is written, with
its caller). The workload is the UDP connect of :mod:`benchmarks.connect`. ``threads``: 4 threads connect at the
same time; afterwards every line of the file must be one complete JSON object, and the count must match.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import socket
import textwrap
import threading
import token
import tokenize
from typing import Any

from benchmarks import variants
from benchmarks.harness import Context, Row, Stats, Workers, copies_of, interleave, paired, verdict
from benchmarks.worker import Bench, Elapsed, elapsed, stamp

US = 1000.0
THREADS = 4


def setup(variant: str, *, log: str) -> Bench:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    address = receiver.getsockname()
    variants.apply(variant, ["127.0.0.1"], log=log)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def udp(n: int) -> Elapsed:
        connect = client.connect
        start = stamp()
        for _ in range(n):
            connect(address)
        return elapsed(start)

    def threads(n: int) -> Elapsed:
        per = n // THREADS
        barrier = threading.Barrier(THREADS + 1)

        def work() -> None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            barrier.wait()
            for _ in range(per):
                sock.connect(address)
            sock.close()

        pool = [threading.Thread(target=work) for _ in range(THREADS)]
        for thread in pool:
            thread.start()
        barrier.wait()
        start = stamp()
        for thread in pool:
            thread.join()
        wall, cpu = elapsed(start)
        return wall * n // (per * THREADS), cpu * n // (per * THREADS)

    def info() -> dict[str, Any]:
        if variant != "guard-log":
            return {}
        lines = bad = 0
        with open(log, "rb") as f:
            for line in f:
                lines += 1
                try:
                    event = json.loads(line)
                    if event.get("event") != "decision" or not line.endswith(b"\n"):
                        bad += 1
                except ValueError:
                    bad += 1
        return {"lines": lines, "bad_lines": bad, "bytes": os.path.getsize(log)}

    return Bench({"udp": udp, "threads": threads}, info)


def run(ctx: Context) -> list[Row]:
    from sockguard.logfile import LogFile
    from sockguard.sinks import Sinks

    names = ("bare", "guard", "guard-log")
    params = {v: {"log": os.path.join(ctx.tmp, f"decisions-{v}.jsonl")} for v in names}
    (n, rounds), (n_threads, rounds_threads) = ctx.pick(((2000, 50), (4000, 8)), ((500, 5), (1000, 2)))
    copies = ctx.pick(2, 1)  # both guard-log processes append to the same file, as forked workers would
    with Workers("decision_log", params, copies=copies) as workers:
        udp = interleave(workers, "udp", n=n, rounds=rounds)
        threads = interleave(workers, "threads", n=n_threads, rounds=rounds_threads, warmup=1)
        written = copies_of(workers, "guard-log")[0].call(op="info")
    expected = copies * (n * (rounds + 2) + n_threads * (rounds_threads + 1))  # every batch, warm-up included
    # The write path, read from the source: a lock there would serialise every logging thread.
    write_path = (Sinks.emit, Sinks.write, Sinks.write_decision, Sinks._line, Sinks._decision_line, LogFile.write)
    source = "".join(textwrap.dedent(inspect.getsource(fn)) for fn in write_path)
    words = {tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == token.NAME}
    locks = sorted(w for w in words if "lock" in w.lower() or w in ("acquire", "Condition", "Semaphore"))
    rows = []
    added, ratio = paired(udp["guard-log"], udp["guard"], US)
    row = Row(
        "log/udp",
        "JSONL decision log enabled: added per allowed decision (vs the guard without log)",
        "≤ 5 µs added; no lock while writing",
        "µs",
        baseline=Stats.of(udp["guard"], US),
        guarded=Stats.of(udp["guard-log"], US),
        added=added,
        ratio=ratio,
    )
    intact = written["bad_lines"] == 0 and written["lines"] == expected
    row.verdict = verdict(added <= 5.0 and not locks and intact)
    row.note = (
        f"baseline column = guard without log (bare: {Stats.of(udp['bare'], US).median:.2f} µs); "
        f"the write path takes {'a lock: ' + ', '.join(locks) if locks else 'no lock'} (one O_APPEND write per line); "
        f"{written['lines']:,} lines written ({expected:,} decisions), {written['bad_lines']} malformed"
    )
    row.extra = {"log_file": written, "expected_lines": expected}
    rows.append(row)
    added_t, ratio_t = paired(threads["guard-log"], threads["guard"], US)
    rows.append(
        Row(
            "log/threads",
            f"JSONL decision log, {THREADS} threads connecting at once: per decision",
            "info",
            "µs",
            baseline=Stats.of(threads["guard"], US),
            guarded=Stats.of(threads["guard-log"], US),
            added=added_t,
            ratio=ratio_t,
            note="wall time per decision with 4 threads (GIL-bound); baseline column = guard without log",
        )
    )
    return rows
