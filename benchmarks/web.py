"""HTTP through real clients to a local server (unguarded, in its own process).

``requests``: ``requests.get`` per request, a new session and so a new connection each time (urllib3 underneath),
against http.server's ThreadingHTTPServer. ``httpx-async``: one batch is ``n`` concurrent requests from a fresh
``httpx.AsyncClient`` (connection limit ``n``, no keep-alive) in a fresh event loop, against an asyncio server.
"""

from __future__ import annotations

import subprocess
import sys

from benchmarks import variants
from benchmarks.harness import ROOT, Context, Row, Stats, Workers, clean_env, interleave, paired, verdict
from benchmarks.rulesets import FILLER
from benchmarks.worker import Bench, Elapsed, elapsed, stamp

HOST = "127.0.0.1"


def setup(variant: str, *, port: int, kind: str) -> Bench:
    url = f"http://{HOST}:{port}/"
    if kind == "requests":
        import requests

        variants.apply(variant, [HOST, *FILLER])

        def run(n: int) -> Elapsed:
            get = requests.get
            start = stamp()
            for _ in range(n):
                response = get(url, timeout=30)
                if response.status_code != 200 or response.content != b"ok":
                    raise RuntimeError(f"bad response {response.status_code} {response.content!r}")
            return elapsed(start)

    elif kind == "httpx-async":
        import asyncio

        import httpx

        variants.apply(variant, [HOST, *FILLER])

        async def batch(n: int) -> None:
            limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
            async with httpx.AsyncClient(limits=limits, timeout=60) as client:
                responses = await asyncio.gather(*(client.get(url) for _ in range(n)))
            bad = [r for r in responses if r.status_code != 200 or r.content != b"ok"]
            if bad:
                raise RuntimeError(f"{len(bad)} bad responses, e.g. {bad[0]!r}")

        def run(n: int) -> Elapsed:
            start = stamp()
            asyncio.run(batch(n))
            return elapsed(start)

    else:
        raise ValueError(f"unknown kind {kind!r}")
    return Bench({kind: run})


class _Server:
    def __init__(self, kind: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.servers", kind, HOST],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=clean_env(),
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"{kind} server did not start (said {line!r})")
        self.port = int(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rows(
    key: str, label: str, samples: dict[str, list[float]], cpu: dict[str, list[float]], total: int, note: str
) -> Row:
    unit_ns = 1e6
    added, ratio = paired(samples["guard"], samples["bare"], unit_ns)
    cpu_added, cpu_ratio = paired(cpu["guard"], cpu["bare"], unit_ns)
    row = Row(
        key,
        label,
        "≤ 1.03x unguarded",
        "ms",
        baseline=Stats.of(samples["bare"], unit_ns),
        guarded=Stats.of(samples["guard"], unit_ns),
        added=added,
        ratio=ratio,
        verdict=verdict(ratio <= 1.03),
        note=f"{note}; client CPU time: {cpu_ratio:.3f}x ({cpu_added:+.3f} ms)",
    )
    if "pytest-socket" in samples:
        row.pytest_socket = paired(samples["pytest-socket"], samples["bare"], unit_ns)[0]
    row.extra = {"requests_per_variant": total, "client_cpu_ratio": cpu_ratio, "client_cpu_added_ms": cpu_added}
    return row


def run_requests(ctx: Context) -> list[Row]:
    per_batch, rounds, copies = ctx.pick((25, 40, 2), (50, 3, 1))
    cpu: dict[str, list[float]] = {}
    with _Server("threaded") as server:
        params = {"port": server.port, "kind": "requests"}
        names = ("bare", "pytest-socket", "guard")
        with Workers("web", {v: params for v in names}, copies=copies) as workers:
            samples = interleave(workers, "requests", per_batch, rounds, warmup=1, clock="wall", other=cpu)
    # per-request ms (interleave returns ns per operation)
    return [
        _rows(
            "http/requests",
            f"requests.get, new connection per request, local server ({per_batch * rounds * copies:,} requests)",
            samples,
            cpu,
            per_batch * rounds * copies,
            f"per request; {rounds} interleaved rounds of {copies} x {per_batch} per variant ({copies} processes each)",
        )
    ]


def run_async(ctx: Context) -> list[Row]:
    concurrent, rounds, copies = ctx.pick((1000, 16, 3), (300, 2, 1))
    cpu: dict[str, list[float]] = {}
    with _Server("asyncio") as server:
        params = {"port": server.port, "kind": "httpx-async"}
        names = ("bare", "guard")
        with Workers("web", {v: params for v in names}, copies=copies) as workers:
            samples = interleave(workers, "httpx-async", concurrent, rounds, warmup=1, clock="wall", other=cpu)
    # one sample = one batch of `concurrent` requests; show the batch time in ms
    batch = {k: [v * concurrent for v in values] for k, values in samples.items()}
    batch_cpu = {k: [v * concurrent for v in values] for k, values in cpu.items()}
    row = _rows(
        "http/httpx-async",
        f"asyncio: {concurrent:,} concurrent httpx.AsyncClient requests, local asyncio server",
        batch,
        batch_cpu,
        concurrent * rounds * copies,
        f"time per batch of {concurrent:,}; {rounds} rounds of {copies} batches per variant ({copies} processes each), "
        "interleaved",
    )
    return [row]
