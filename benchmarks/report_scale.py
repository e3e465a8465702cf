"""Time and peak RSS of `sockguard report` on generated million-line decision logs.

    .venv/bin/python benchmarks/report_scale.py [--lines 1000000] [--keep DIR]

Three logs: "typical" (a few hundred destinations, a retry storm, the usual mix of
resolve/connect/allow/would-block), "adversarial" (every line a new destination,
caller and address) and "saturated" (5000 destinations, each with its caller and
address lists full of long strings: the largest the aggregates can get). Each runs `sockguard report` in a
fresh process per output mode; peak RSS comes from wait4(), so it is the report's
own high-water mark. Writes nothing to the network: the logs are synthetic.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

T0 = 1_700_000_000.0
_ENCODE = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str).encode


def _event(ts, op, proto, host, port, address, decision, reason, rule, caller, pid):
    # Field order and encoding as sockguard.events.make_event + Sinks write them.
    return _ENCODE(
        {
            "event": "decision",
            "ts": round(ts, 6),
            "pid": pid,
            "op": op,
            "proto": proto,
            "host": host,
            "port": port,
            "address": address,
            "decision": decision,
            "reason": reason,
            "rule": rule,
            "detail": None,
            "mode": "monitor",
            "caller": caller,
            "correlation_id": None,
        }
    )


def typical(path: str, lines: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    names = [f"svc{i}.api.example.test" for i in range(150)] + [f"n{i}.cdn.example.test" for i in range(40)]
    allowed = set(names[:120])
    raw_ips = [f"203.0.113.{i}" for i in range(1, 11)]
    callers = [f"app.module{i % 40}:func{i % 13}:{10 + i}" for i in range(300)]
    pids = [4000 + i for i in range(8)]
    ts = T0
    with open(path, "w") as fh:
        n = 0
        while n < lines:
            ts += rng.expovariate(1 / 0.01)  # ~100 events/s: a 1M-line log spans ~3 hours
            caller = rng.choice(callers)
            pid = rng.choice(pids)
            if rng.random() < 0.001:
                fh.write('{"event":"decision","ts":' + str(ts)[:6] + "\n")  # malformed
                n += 1
                continue
            if rng.random() < 0.0005:
                fh.write(_ENCODE({"event": "alert", "ts": ts, "kind": "breaker-open", "host": rng.choice(names)}))
                fh.write("\n")
                n += 1
                continue
            if rng.random() < 0.05:  # raw-IP connect
                fh.write(
                    _event(
                        ts,
                        "connect",
                        "tcp",
                        None,
                        8443,
                        rng.choice(raw_ips),
                        "would-block",
                        "raw-ip",
                        None,
                        caller,
                        pid,
                    )
                    + "\n"
                )
                n += 1
                continue
            if rng.random() < 0.02:  # the health-check retry storm
                host, caller = "health.vendor.example", "app.health:probe:42"
            else:
                host = rng.choice(names)
            port = 443 if rng.random() < 0.9 else 80
            ok = host in allowed
            decision, reason = ("allow", "allowed-name") if ok else ("would-block", "not-allowed")
            rule = host if ok else None
            address = f"198.51.100.{hash(host) % 250 + 1}"
            fh.write(_event(ts, "resolve", "dns", host, port, None, decision, reason, rule, caller, pid) + "\n")
            fh.write(_event(ts + 0.001, "connect", "tcp", host, port, address, decision, reason, rule, caller, pid))
            fh.write("\n")
            n += 2
        fh.write('{"event":"decision","ts":17')  # killed mid-write


def adversarial(path: str, lines: int, seed: int = 2) -> None:
    """Every line a new destination, caller and address: exercises every cap."""
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(lines):
            host = f"x{i:x}{rng.getrandbits(32):08x}.tunnel{i % 50}.example.test"
            address = f"2001:db8::{i & 0xFFFF:x}:{i >> 16:x}"
            caller = f"app.generated{i}:f{i}:{i % 1000}"
            fh.write(
                _event(
                    T0 + i * 0.001,
                    "connect",
                    "udp",
                    host,
                    53,
                    address,
                    "would-block",
                    "not-allowed",
                    None,
                    caller,
                    1000 + i % 50000,
                )
                + "\n"
            )


def saturated(path: str, lines: int, seed: int = 3) -> None:
    """5000 destinations (the default cap), each filling its caller and address
    lists with long strings: the largest the aggregates can get."""
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(lines):
            d = i % 5000
            caller = f"app.{'m' * 150}{rng.getrandbits(40):x}:f:{i}"
            address = f"2001:db8:{rng.getrandbits(16):x}::{rng.getrandbits(16):x}"
            host = f"{'h' * 60}{d}.example.test"
            ts = T0 + i * 0.01
            fh.write(_event(ts, "connect", "tcp", host, 443, address, "would-block", "not-allowed", None, caller, 1))
            fh.write("\n")


def measure(argv: list[str]) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds, peak RSS in MiB, exit status) of one run in a fresh process.
    CPU time is the steadier number on a shared machine."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--keep", metavar="DIR", help="write the logs here and keep them")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    workdir = args.keep or tempfile.mkdtemp(prefix="sockguard-report-bench-")
    os.makedirs(workdir, exist_ok=True)
    base = [sys.executable, "-m", "sockguard", "report", "--no-progress"]
    results = []
    tiny = os.path.join(workdir, "tiny.jsonl")
    typical(tiny, 10)
    seconds, cpu, rss, _ = measure([*base, tiny])
    results.append(
        {"log": "10 lines (baseline)", "mode": "text", "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": rss}
    )
    for name, generate in (("typical", typical), ("adversarial", adversarial), ("saturated", saturated)):
        path = os.path.join(workdir, f"{name}.jsonl")
        start = time.perf_counter()
        generate(path, args.lines)
        size = os.path.getsize(path)
        print(f"generated {name}: {args.lines:,} lines, {size / 2**20:.0f} MiB in {time.perf_counter() - start:.1f} s")
        for mode, extra in (
            ("text", []),
            ("json", ["--format", "json"]),
            ("suggest", ["--suggest"]),
            ("html", ["--html", os.path.join(workdir, f"{name}.html")]),
        ):
            seconds, cpu, rss, code = measure([*base, path, *extra])
            row = {
                "log": f"{name} {args.lines:,} lines ({size / 2**20:.0f} MiB)",
                "mode": mode,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "peak_rss_mib": rss,
                "exit": code,
            }
            results.append(row)
            print(f"  {mode:8s} {seconds:6.1f} s wall {cpu:6.1f} s CPU {rss:5d} MiB  exit {code}")
        if not args.keep:
            os.unlink(path)
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| log | output | wall (s) | CPU (s) | peak RSS (MiB) |")
    print("|---|---|---:|---:|---:|")
    for row in results:
        cells = [row["log"], row["mode"], f"{row['seconds']:.1f}", f"{row['cpu_seconds']:.1f}", row["peak_rss_mib"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
