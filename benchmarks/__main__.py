"""Run the benchmark suite: ``python -m benchmarks [--quick] [--only NAME,...] [--out PREFIX] [--no-netns]``.

Writes ``PREFIX.json`` (every sample statistic) and ``PREFIX.md`` (the table for the README); the prefix is
``benchmarks/results`` for a full run and ``benchmarks/results-quick`` for ``--quick``. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from benchmarks import audit_tax, connect, decision_log, decisions, http_requests, memory, native, resolve, startup, web
from benchmarks.harness import ROOT, BenchError, Context, Row, Stats

SCENARIOS: dict[str, tuple[str, Callable[[Context], list[Row]]]] = {
    "connect-ip": ("loopback connect allowed by an IP rule", lambda ctx: connect.run_allowed(ctx, "connect-ip")),
    "connect-cidr": ("loopback connect allowed by a CIDR rule", lambda ctx: connect.run_allowed(ctx, "connect-cidr")),
    "connect-name": ("connect through a name the guard resolved", lambda ctx: connect.run_allowed(ctx, "connect-name")),
    "rules": ("decision time at 10 / 1,000 / 100,000 rules", decisions.run),
    "blocked": ("blocked connect and sendto", connect.run_blocked),
    "getaddrinfo": ("getaddrinfo of an allowed name", resolve.run),
    "requests": ("requests, new connection per request", web.run_requests),
    "httpx-async": ("1,000 concurrent httpx.AsyncClient requests", web.run_async),
    "startup": ("interpreter start-up", startup.run),
    "audit-tax": ("open()/import with the guard installed", audit_tax.run),
    "log": ("JSONL decision log", decision_log.run),
    "http-requests": ("request events per HTTP request (http.client, httpcore)", http_requests.run),
    "memory": ("RSS of activation; address map after 1M lookups", memory.run),
    "native": ("the LD_PRELOAD layer: allowed and blocked connect, start-up", native.run),
}


def _enter_namespace(wanted: bool) -> tuple[bool, str]:
    """A private network namespace (only ``lo``, lab addresses, lab /etc/hosts), as the test suite uses."""
    if not wanted:
        return False, "host network namespace (--no-netns): loopback only; connect-name skipped"
    sys.path.insert(0, ROOT)
    from tests import netlab

    status = netlab.enter_isolated_namespace()
    if status.active and netlab.only_loopback():
        return True, f"private network namespace ({status.mode}): only lo"
    return False, f"host network namespace: {status.reason}; loopback only; connect-name skipped"


def _machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        commit += " (with uncommitted changes)" if dirty.strip() else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    load = os.getloadavg()
    return {
        "cpu": cpu,
        "nproc": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "load_before": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    }


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def markdown(machine: dict[str, str], rows: list[Row], quick: bool, seconds: float) -> str:
    lines = [
        f"Measured {machine['date']} on {machine['nproc']} x {machine['cpu']}, {machine['python']}, "
        f"commit {machine['commit']}; {machine['network']}; load average before the run {machine['load_before']}; "
        f"{'QUICK run (fewer samples)' if quick else 'full run'} in {seconds / 60:.1f} min "
        "(`.venv/bin/python -m benchmarks`).",
        "",
        "Baseline and guarded: median (min-max) of the per-batch means; added and ratio: median of the per-round "
        "guarded - baseline differences and ratios (batches interleaved). Accelerator off: the guard's added cost "
        "and ratio with SOCKGUARD_ACCELERATOR=0 (the pure-Python floor), same run. pytest-socket: its added cost. "
        "Times are the measuring process's CPU time, except the HTTP rows (wall clock) and the start-up rows (the "
        "child process's CPU time); see docs/performance.md.",
        "",
        "| scenario | target | unit | baseline | guarded | added | ratio | accelerator off | pytest-socket | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        digits = 3 if row.unit == "µs" else 2
        cells = [
            row.scenario,
            row.target,
            row.unit,
            row.baseline.text(digits) if row.baseline else "-",
            row.guarded.text(digits) if row.guarded else "-",
            _cell(row.added, digits),
            "-" if row.ratio is None else f"{row.ratio:.3f}x",
            "-" if row.accel_off is None else f"{_cell(row.accel_off, digits)} ({row.accel_off_ratio:.3f}x)",
            _cell(row.pytest_socket, digits),
            f"**{row.verdict}**" if row.verdict == "MISS" else row.verdict,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    notes = [f"- {row.scenario}: {row.note}" for row in rows if row.note]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def _render(path: str) -> int:
    with open(path) as f:
        result = json.load(f)
    rows = []
    for data in result["rows"]:
        for key in ("baseline", "guarded"):
            if data[key] is not None:
                data[key] = Stats(**data[key])
        rows.append(Row(**data))
    target = path.removesuffix(".json") + ".md"
    with open(target, "w") as f:
        f.write(markdown(result["machine"], rows, result["quick"], result["seconds"]))
    print(f"wrote {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke run of every scenario")
    parser.add_argument("--only", help="comma-separated scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--out", help="output prefix (default benchmarks/results or benchmarks/results-quick)")
    parser.add_argument("--no-netns", action="store_true", help="do not enter a private network namespace")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--render", metavar="JSON", help="only rewrite the markdown table from a results JSON")
    args = parser.parse_args(argv)
    if args.render:
        return _render(args.render)
    if args.list:
        for name, (label, _) in SCENARIOS.items():
            print(f"{name:14s} {label}")
        return 0
    selected = list(SCENARIOS)
    if args.only:
        selected = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in selected if s not in SCENARIOS]
        if unknown:
            parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    prefix = args.out or os.path.join(ROOT, "benchmarks", "results-quick" if args.quick else "results")

    netns, network = _enter_namespace(not args.no_netns)
    machine = _machine()
    machine["network"] = network
    tmp = tempfile.mkdtemp(prefix="sockguard-bench-")
    # Bytecode caches as an installed package has them (this environment sets PYTHONDONTWRITEBYTECODE), kept out
    # of the source tree; the first process of each variant fills them, during warm-up.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
    ctx = Context(quick=args.quick, netns=netns, tmp=tmp, log=lambda text: print(text, file=sys.stderr, flush=True))
    started = time.perf_counter()
    rows: list[Row] = []
    failures = 0
    try:
        for name in selected:
            label, run = SCENARIOS[name]
            ctx.log(f"[{time.perf_counter() - started:6.1f}s] {name}: {label}")
            try:
                new = run(ctx)
            except BenchError as exc:
                failures += 1
                new = [Row(name, label, "", "", verdict="error", note=str(exc).splitlines()[0])]
                ctx.log(str(exc))
            for row in new:
                ctx.log(
                    f"    {row.verdict:7s} {row.scenario}: "
                    + (f"{row.guarded.median:.3f} {row.unit}" if row.guarded else "")
                    + (f", added {row.added:+.3f}" if row.added is not None else "")
                    + (f", ratio {row.ratio:.3f}" if row.ratio is not None else "")
                )
            rows.extend(new)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - started
    result = {
        "machine": machine,
        "quick": args.quick,
        "scenarios": selected,
        "seconds": round(seconds, 1),
        "rows": [row.to_json() for row in rows],
    }
    with open(prefix + ".json", "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    with open(prefix + ".md", "w") as f:
        f.write(markdown(machine, rows, args.quick, seconds))
    misses = [row.scenario for row in rows if row.verdict == "MISS"]
    ctx.log(f"wrote {prefix}.json and {prefix}.md in {seconds:.0f} s; {len(misses)} missed, {failures} errors")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
