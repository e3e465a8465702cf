"""A measuring process: one variant (bare, guard, pytest-socket, ...) of one scenario.

The parent starts one worker per variant, with identical code, and drives them over stdin/stdout with JSON
lines, one batch at a time, alternating between variants so drift on a noisy machine hits all of them alike.
Commands::

    {"op": "setup", "module": "connect", "variant": "guard", "params": {...}}  -> {"ok": true, "info": {...}}
    {"op": "run", "workload": "udp", "n": 5000}                               -> {"wall": ns, "cpu": ns}
    {"op": "info", "args": {...}}                                             -> {...}

A workload function times itself with :func:`stamp` / :func:`elapsed` and returns the wall-clock and the CPU
nanoseconds (``perf_counter_ns``, ``process_time_ns``) for ``n`` operations, so per-batch housekeeping (draining an
accept queue, unloading modules) stays out of the measurement. The garbage collector is off during a batch and run
before it. Nothing from sockguard is imported unless a variant asks.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

Elapsed = tuple[int, int]  # (wall ns, CPU ns)


def stamp(_wall=time.perf_counter_ns, _cpu=time.process_time_ns) -> Elapsed:
    return _wall(), _cpu()


def elapsed(start: Elapsed, _wall=time.perf_counter_ns, _cpu=time.process_time_ns) -> Elapsed:
    return _wall() - start[0], _cpu() - start[1]


class Bench:
    """What a scenario's ``setup()`` returns: named workloads and an optional ``info(**args)``."""

    def __init__(
        self,
        workloads: dict[str, Callable[[int], Elapsed]],
        info: Callable[..., dict[str, Any]] | None = None,
        setup_info: dict[str, Any] | None = None,
    ) -> None:
        self.workloads = workloads
        self.info = info or (lambda **_: {})
        self.setup_info = setup_info or {}


def rss_kib() -> int:
    """Resident set size of this process (VmRSS), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    # Replies go to a private copy of stdout; anything else printing to fd 1 lands on stderr instead.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    bench: Bench | None = None
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.get("op")
        try:
            if op == "quit":
                break
            if op == "setup":
                module = importlib.import_module(f"benchmarks.{cmd['module']}")
                bench = module.setup(cmd["variant"], **cmd.get("params", {}))
                reply: dict[str, Any] = {"ok": True, "info": bench.setup_info}
            elif bench is None:
                raise RuntimeError(f"{op!r} before setup")
            elif op == "run":
                workload = bench.workloads[cmd["workload"]]
                gc.collect()
                gc.disable()
                try:
                    wall, cpu = workload(int(cmd["n"]))
                    reply = {"wall": wall, "cpu": cpu}
                finally:
                    gc.enable()
            elif op == "info":
                reply = bench.info(**cmd.get("args", {}))
            else:
                raise ValueError(f"unknown command {op!r}")
        except BaseException:
            reply = {"error": traceback.format_exc()}
        out.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
