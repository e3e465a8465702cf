"""Instruction counts (valgrind's callgrind): the load-independent figure next to the timed rows.

On a shared machine a few µs per operation drown in the clocks' noise; the instructions a run executes are the
same on a busy machine and a quiet one. A scenario runs its own module as a program (``python -m
benchmarks.<module> ARGS``) under callgrind, with a small and a large number of operations after the same set-up
and warm-up; the difference divided by the difference in operations is the count per operation, with the
start-up, the set-up and the warm-up cancelled. Either as two runs (:func:`per_op`), or as two measured parts of
one run (:func:`per_op_in_parts`: the program zeroes and dumps callgrind's counters around each part through
``benchmarks/callgrind_marks.c``, and its start-up, which can cost more than the parts, runs uninstrumented).
Counted runs go two at a time (the counts do not depend on what else runs).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from benchmarks.harness import ROOT

PARALLEL = 2


def valgrind() -> str | None:
    return shutil.which("valgrind")


def build(tmp: str, name: str) -> str | None:
    """Build the extension ``benchmarks/<name>.c`` into a directory of its own under ``tmp`` and return that
    directory (None without a C compiler, or when it does not compile: e.g. valgrind's headers missing)."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return None
    directory = os.path.join(tmp, name)
    os.makedirs(directory, exist_ok=True)
    output = os.path.join(directory, name + str(sysconfig.get_config_var("EXT_SUFFIX")))
    command = [compiler, "-O2", "-fPIC", "-shared", f"-I{sysconfig.get_paths()['include']}", "-o", output,
               os.path.join(ROOT, "benchmarks", f"{name}.c")]  # fmt: skip
    built = subprocess.run(command, capture_output=True, text=True, check=False)
    return directory if built.returncode == 0 else None


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": ROOT}
    env.pop("SOCKGUARD_ACCELERATOR", None)
    return env


def count(module: str, args: Sequence[str]) -> int | None:
    """Instructions executed by ``python -m benchmarks.<module> ARGS`` (None: valgrind missing or the run failed).

    ``PYTHONHASHSEED=0`` as in the timed workers (the same dict probes in every run); the accelerator as
    installed (``SOCKGUARD_ACCELERATOR`` unset: a ``-python`` variant sets it itself)."""
    tool = valgrind()
    if tool is None:
        return None
    argv = [tool, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m",
            f"benchmarks.{module}", *args]  # fmt: skip
    out = subprocess.run(argv, env=_env(), cwd=ROOT, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", out.stderr)
    return int(found.group(1)) if found and out.returncode == 0 else None


def per_op(
    module: str, args: Callable[[str, int], Sequence[str]], variants: Sequence[str], low: int, high: int
) -> dict[str, float | None]:
    """Per variant, instructions per operation: (count at ``high`` operations - count at ``low``) / (high - low).

    ``args(variant, n)`` is the command line of one counted run. None where a counted run failed."""
    jobs = [(variant, n) for variant in variants for n in (low, high)]
    with ThreadPoolExecutor(PARALLEL) as pool:
        counted = dict(zip(jobs, pool.map(lambda job: count(module, args(*job)), jobs), strict=True))
    result: dict[str, float | None] = {}
    for variant in variants:
        small, large = counted[(variant, low)], counted[(variant, high)]
        result[variant] = None if small is None or large is None else (large - small) / (high - low)
    return result


def parts(module: str, args: Sequence[str]) -> list[int] | None:
    """The instructions of each part that ``python -m benchmarks.<module> ARGS`` measures between
    ``callgrind_marks.zero()`` and ``callgrind_marks.dump(label)``, in order (None: the run failed). The program
    calls ``callgrind_marks.start()`` first, before its warm-up."""
    tool = valgrind()
    if tool is None:
        return None
    with tempfile.TemporaryDirectory(prefix="callgrind-") as out:
        # Not instrumented until the program calls callgrind_marks.start() (after its imports and set-up): the
        # uninstrumented start-up runs several times faster, and only the parts are counted anyway.
        argv = [tool, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}/counted",
                sys.executable, "-m", f"benchmarks.{module}", *args]  # fmt: skip
        done = subprocess.run(argv, env=_env(), cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return None
        totals = []
        # One file per dump, numbered in order (counted.1, counted.2, ...); counted itself holds what ran after.
        for path in sorted(glob.glob(f"{out}/counted.*"), key=lambda p: int(p.rpartition(".")[2])):
            with open(path) as f:
                found = re.search(r"^(?:totals|summary): (\d+)", f.read(), re.MULTILINE)
            if found is None:
                return None
            totals.append(int(found.group(1)))
        return totals


def per_op_in_parts(
    module: str, args: Callable[[str], Sequence[str]], variants: Sequence[str], low: int, high: int
) -> dict[str, float | None]:
    """Per variant, instructions per operation from one run whose two measured parts are ``low`` and ``high``
    operations: (high part - low part) / (high - low). None where the run failed."""
    with ThreadPoolExecutor(PARALLEL) as pool:
        counted = dict(zip(variants, pool.map(lambda variant: parts(module, args(variant)), variants), strict=True))
    result: dict[str, float | None] = {}
    for variant, totals in counted.items():
        result[variant] = None if totals is None or len(totals) != 2 else (totals[1] - totals[0]) / (high - low)
    return result
