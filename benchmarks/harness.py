"""Parent side: worker processes, interleaved batches, statistics, results.

Every variant of a scenario (``bare``, ``guard``, ``pytest-socket``, ...) runs in its own fresh interpreter with
the same code (the audit hook cannot be removed, so an unguarded baseline cannot share a process with the guard).
Batches alternate between the variants, in a shuffled order each round, so slow phases of a shared, noisy machine
hit every variant. Reported: per variant the median and min-max of the per-round means; between a variant and the
baseline the median of the per-round differences and ratios (paired, so drift between rounds cancels).
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITE_DIR = os.path.join(ROOT, "sitecustomize")


class BenchError(RuntimeError):
    """A worker failed; the message carries its traceback and the tail of its stderr."""


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of an unguarded process: no SOCKGUARD_* and no sockguard sitecustomize on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_")}
    env.pop("PYTHONPATH", None)
    env["PYTHONPATH"] = ROOT  # benchmarks importable from any cwd; holds no sitecustomize.py
    env["PYTHONHASHSEED"] = "0"  # the same dict layouts in every variant's process
    env.update(extra)
    return env


class Worker:
    """One measuring subprocess (benchmarks/worker.py) for one variant."""

    def __init__(self, variant: str, module: str, params: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.variant = variant
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=ROOT,
            env=env or clean_env(),
            text=True,
            bufsize=1,
        )
        self.setup_info = self.call(op="setup", module=module, variant=variant, params=params).get("info", {})

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise BenchError(f"worker {self.variant!r} died ({cmd.get('op')}):\n{self.stderr_tail()}")
        reply = json.loads(line)
        if "error" in reply:
            raise BenchError(f"worker {self.variant!r} failed on {cmd}:\n{reply['error']}\n{self.stderr_tail()}")
        return reply

    def run(self, workload: str, n: int) -> dict[str, float]:
        """Mean nanoseconds per operation over one batch of ``n``: {"cpu": ..., "wall": ...}."""
        reply = self.call(op="run", workload=workload, n=n)
        return {"cpu": reply["cpu"] / n, "wall": reply["wall"] / n}

    def stderr_tail(self, chars: int = 2000) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()[-chars:]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


class Workers:
    """Context manager: one worker per variant (``copies`` > 1: that many, named ``variant#k``), closed on exit.

    Several processes per variant average out what is fixed for the life of one process (where the allocator
    and the kernel put things): for workloads that allocate a lot, like 1,000 concurrent connections, that alone
    moves one process's mean by a few percent."""

    def __init__(
        self, module: str, variants: dict[str, dict[str, Any]], env: dict[str, str] | None = None, copies: int = 1
    ) -> None:
        self.workers: dict[str, Worker] = {}
        try:
            for variant, params in variants.items():
                for k in range(copies):
                    name = variant if copies == 1 else f"{variant}#{k}"
                    self.workers[name] = Worker(variant, module, params, env)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> dict[str, Worker]:
        return self.workers

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()


def copies_of(workers: dict[str, Worker], variant: str) -> list[Worker]:
    """The worker(s) of one variant, whatever ``copies`` was."""
    return [w for name, w in workers.items() if name.partition("#")[0] == variant]


def interleave(
    workers: dict[str, Worker],
    workload: str,
    n: int,
    rounds: int,
    warmup: int = 2,
    seed: int = 0,
    clock: str = "cpu",
    other: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Per variant, ``rounds`` samples of ns/op; one batch of each variant per round, order shuffled.

    ``cpu`` (the default) is the worker's CPU time: on a shared machine it leaves out the time the worker waited for
    a core, which wall-clock time cannot. Workloads that wait for another process (HTTP) use ``wall``.
    ``other``, if given, receives the samples of the other clock. Copies of a variant (``variant#k``) are
    averaged within each round."""
    rng = random.Random(seed)
    names = list(workers)
    variants = {name.partition("#")[0] for name in names}
    samples: dict[str, list[float]] = {variant: [] for variant in variants}
    second = "wall" if clock == "cpu" else "cpu"
    for i in range(warmup + rounds):
        rng.shuffle(names)
        this_round: dict[str, list[dict[str, float]]] = {variant: [] for variant in variants}
        for name in names:
            this_round[name.partition("#")[0]].append(workers[name].run(workload, n))
        if i < warmup:
            continue
        for variant, values in this_round.items():
            samples[variant].append(statistics.fmean(v[clock] for v in values))
            if other is not None:
                other.setdefault(variant, []).append(statistics.fmean(v[second] for v in values))
    return samples


def interleave_calls(
    calls: Mapping[str, Callable[[], float]], rounds: int, warmup: int = 1, seed: int = 0
) -> dict[str, list[float]]:
    """Like :func:`interleave` for measurements the parent makes itself (e.g. timing a subprocess)."""
    rng = random.Random(seed)
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + rounds):
        rng.shuffle(names)
        for name in names:
            value = calls[name]()
            if i >= warmup:
                samples[name].append(value)
    return samples


# -- statistics ----------------------------------------------------------------------


@dataclass
class Stats:
    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float], scale: float = 1.0) -> Stats:
        data = [v / scale for v in values]
        return cls(statistics.median(data), min(data), max(data), len(data))

    def text(self, digits: int = 2) -> str:
        return f"{self.median:.{digits}f} ({self.min:.{digits}f}-{self.max:.{digits}f})"


def paired(guarded: list[float], baseline: list[float], scale: float = 1.0) -> tuple[float, float]:
    """Median per-round difference (in ``1/scale`` units) and median per-round ratio."""
    diffs = [(g - b) / scale for g, b in zip(guarded, baseline, strict=True)]
    ratios = [g / b for g, b in zip(guarded, baseline, strict=True) if b > 0]
    return statistics.median(diffs), statistics.median(ratios)


def paired_interval(
    guarded: list[float], baseline: list[float], scale: float = 1.0, z: float = 1.96
) -> tuple[float, float]:
    """A distribution-free ~95% confidence interval of the median per-round difference (order statistics of the
    differences, binomial normal approximation): how far the paired median could move with other rounds."""
    diffs = sorted((g - b) / scale for g, b in zip(guarded, baseline, strict=True))
    n = len(diffs)
    half = z * math.sqrt(n) / 2
    low, high = math.floor(n / 2 - half), math.ceil(n / 2 + half)  # 1-based ranks
    return diffs[max(low, 1) - 1], diffs[min(high, n) - 1]


# -- results ---------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table. ``baseline``/``guarded`` are in ``unit``; ``added`` is paired."""

    key: str
    scenario: str
    target: str
    unit: str
    baseline: Stats | None = None
    guarded: Stats | None = None
    added: float | None = None
    ratio: float | None = None
    pytest_socket: float | None = None  # pytest-socket's own added cost, same unit, where it applies
    accel_off: float | None = None  # the guard's added cost with SOCKGUARD_ACCELERATOR=0 (pure Python), same unit
    accel_off_ratio: float | None = None
    verdict: str = "info"  # "pass", "MISS", "info", "skipped"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def accelerator_off(row: Row, samples: dict[str, list[float]], baseline: str = "bare", scale: float = 1.0) -> None:
    """Fill ``row``'s accelerator-off column from the ``<variant>-python`` samples, paired with ``baseline``."""
    for name, values in samples.items():
        if name.endswith("-python"):
            row.accel_off, row.accel_off_ratio = paired(values, samples[baseline], scale)
            return


def verdict(ok: bool) -> str:
    return "pass" if ok else "MISS"


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter_ns()
    fn()
    return float(time.perf_counter_ns() - start)


@dataclass
class Context:
    """What every scenario's ``run()`` gets."""

    quick: bool
    netns: bool  # running inside the private network namespace (lab addresses and /etc/hosts names exist)
    tmp: str  # a scratch directory, removed after the run
    log: Callable[[str], None] = print

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full
