"""Soak: the guard and its decision log under sustained concurrent load with log rotation (issue 18).

    python -m benchmarks.soak [--duration 600] [--rotate-every 60] [--rotation create|copytruncate|alternate]
                              [--pace 1.0] [--out benchmarks/soak-results]

On demand only (not part of ``python -m benchmarks`` nor of the test suite). As root it enters the test lab's
private network namespace (tests/netlab.py: only ``lo``, the lab's ``/etc/hosts``) and refuses to run without it:
it resolves names, and nothing may leave the machine even if the guard were broken.

One guarded process (activated through the sitecustomize, with ``SOCKGUARD_LOG``) runs, for ``--duration``
seconds: 8 forked workers and, in the parent, 64 threads and 10,000 asyncio tasks. Each does allowed and blocked
operations in turn (TCP connects to an allowed and a blocked address; asyncio lookups of an allowed and a blocked
name, then a UDP connect to the answer) and checks every outcome. Meanwhile this process rotates the decision log
every ``--rotate-every`` seconds (logrotate's ``create``: rename and a new file; or ``copytruncate``) and samples
every process's RSS. Reported: misdecisions (must be 0), what reached the blocked servers (must be 0), invalid
lines in the log files (must be 0), for each process the lines written vs in the files vs counted as dropped, and
RSS at the first and the last sample.

Every line is accounted for with ``create`` rotation: in the files, or counted in a ``log-dropped`` event. With
``copytruncate``, lines written between logrotate's copy and its truncate are lost (logrotate's own caveat,
docs/decision-log.md): reported as "lost in copytruncate windows".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from benchmarks.harness import ROOT, SITE_DIR, clean_env

THREADS = 64
TASKS = 10_000
FORKS = 8
ALLOWED_NAME = "static.netlab.test"  # in the lab's /etc/hosts: resolved without DNS
BLOCKED_NAME = "blocked.soak.test"  # refused before any lookup


# -- the guarded workload (runs with the sitecustomize active) --------------------------------------------------


def _workload(params: dict[str, Any]) -> None:
    import asyncio
    import itertools
    import random
    import socket
    import threading

    import sockguard
    from sockguard import logfile

    # Every line the log is asked to write, counted exactly (next() on itertools.count is atomic).
    attempted = itertools.count()
    original_write = logfile.LogFile.write

    def counted_write(self: Any, data: bytes, now: int) -> None:
        next(attempted)
        original_write(self, data, now)

    logfile.LogFile.write = counted_write  # type: ignore[method-assign]

    stop_at = time.monotonic() + params["duration"]
    pace = params["pace"]
    allowed = (params["allowed_host"], params["allowed_port"])
    blocked = (params["blocked_host"], params["blocked_port"])
    results = params["results"]
    tally: Counter[str] = Counter()
    misdecisions: list[str] = []

    def check(what: str, expect_allowed: bool, action: Any) -> None:
        try:
            action()
            ok = expect_allowed
        except sockguard.EgressBlocked as exc:
            ok = not expect_allowed
            if not ok:
                misdecisions.append(f"{what}: blocked ({exc.reason})")
        except OSError as exc:  # a refused/reset TCP connect to an allowed server is not a decision
            ok = expect_allowed
            tally["os-errors"] += 1
            if not expect_allowed:
                misdecisions.append(f"{what}: not blocked ({exc!r})")
        else:
            if not ok:
                misdecisions.append(f"{what}: not blocked")
        tally["ops"] += 1

    def tcp(address: tuple[str, int]) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect(address)
        finally:
            sock.close()

    def sync_loop(pause: float) -> None:
        while time.monotonic() < stop_at:
            check("tcp allowed", True, lambda: tcp(allowed))
            check("tcp blocked", False, lambda: tcp(blocked))
            check("lookup blocked", False, lambda: socket.getaddrinfo(BLOCKED_NAME, 443))
            time.sleep(pause * pace)

    def report(role: str) -> None:
        data = {"pid": os.getpid(), "role": role, "attempted_lines": next(attempted), "tally": dict(tally),
                "misdecisions": misdecisions[:20], "misdecision_count": len(misdecisions)}  # fmt: skip
        with open(os.path.join(results, f"{os.getpid()}.json"), "w") as f:
            json.dump(data, f)

    check("warm-up", True, lambda: tcp(allowed))  # the guard loads and the log opens before the forks
    pids = []
    for _ in range(FORKS):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                tally.clear()
                misdecisions.clear()
                attempted = itertools.count()  # this process's own lines
                sync_loop(0.005)
                logfile._at_exit()  # os._exit skips atexit: count what the log could not take
                report("fork")
            except BaseException as exc:
                sys.stderr.write(f"fork worker failed: {exc!r}\n")
                code = 1
            os._exit(code)
        pids.append(pid)
    with open(os.path.join(results, "pids"), "w") as f:
        f.write(" ".join(map(str, [os.getpid(), *pids])))

    threads = [threading.Thread(target=sync_loop, args=(0.010,), daemon=True) for _ in range(THREADS)]
    for thread in threads:
        thread.start()

    async def task(n: int) -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random(n)
        await asyncio.sleep(rng.uniform(0, 5 * pace))
        while time.monotonic() < stop_at:
            try:
                infos = await loop.getaddrinfo(ALLOWED_NAME, allowed[1], type=socket.SOCK_DGRAM)
                sock = socket.socket(infos[0][0], socket.SOCK_DGRAM)
                try:
                    sock.connect(infos[0][4])
                finally:
                    sock.close()
                tally["ops"] += 1
            except sockguard.EgressBlocked as exc:
                misdecisions.append(f"asyncio allowed name: blocked ({exc.reason})")
            try:
                await loop.getaddrinfo(BLOCKED_NAME, 443)
                misdecisions.append("asyncio blocked name: resolved")
            except sockguard.EgressBlocked as exc:
                if ":task:" not in (exc.caller or ""):
                    tally["asyncio-misattributed"] += 1
            tally["ops"] += 1
            await asyncio.sleep(rng.uniform(2, 8) * pace)

    async def tasks() -> None:
        await asyncio.gather(*(task(n) for n in range(TASKS)))

    asyncio.run(tasks())
    for thread in threads:
        thread.join(30)
    for pid in pids:
        os.waitpid(pid, 0)
    logfile._at_exit()  # (atexit would do it too; the report below must include it)
    report("main")


# -- the harness (unguarded) ------------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _rotate(path: str, number: int, mode: str) -> None:
    rotated = f"{path}.{number}"
    if mode == "create":
        os.rename(path, rotated)
        with open(path, "a"):
            pass
    else:
        shutil.copyfile(path, rotated)
        os.truncate(path, 0)


def _read_logs(paths: list[str]) -> dict[str, Any]:
    lines = invalid = 0
    per_pid: Counter[int] = Counter()
    dropped: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    samples: list[str] = []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        if data and not data.endswith(b"\n"):
            invalid += 1
            samples.append(f"{os.path.basename(path)} ends in a fragment")
        for line in data.splitlines():
            lines += 1
            try:
                event = json.loads(line)
                pid = int(event["pid"])
            except (ValueError, KeyError, TypeError):
                invalid += 1
                if len(samples) < 5:
                    samples.append(f"{os.path.basename(path)}: {line[:100]!r}")
                continue
            kinds[event.get("event")] += 1
            if event.get("event") == "log-dropped":
                dropped[pid] += int(event["dropped"])
            else:
                per_pid[pid] += 1
    return {"lines": lines, "invalid": invalid, "invalid_samples": samples, "per_pid": per_pid, "dropped": dropped,
            "kinds": dict(kinds)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--rotate-every", type=float, default=60.0, help="seconds between rotations (default 60)")
    parser.add_argument("--rotation", choices=("create", "copytruncate", "alternate"), default="create")
    parser.add_argument("--pace", type=float, default=1.0, help="multiplies every pause (2.0: half the load)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "soak-results"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _workload(json.loads(args.worker))
        return 0

    sys.path.insert(0, ROOT)
    from tests import netlab
    from tests.loopback import CountingTCPServer, CountingUDPServer

    status = netlab.enter_isolated_namespace()
    if not (status.active and netlab.only_loopback()):
        print(f"soak: needs the private network namespace (run as root): {status.reason}", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="sockguard-soak-")
    log = os.path.join(tmp, "decisions.jsonl")
    results = os.path.join(tmp, "results")
    os.mkdir(results)
    allowed = CountingTCPServer("127.0.0.2")
    lab_udp = CountingUDPServer("198.51.100.30")  # the allowed name's address (UDP connects send nothing)
    blocked_tcp = CountingTCPServer("127.0.0.3")
    blocked_udp = CountingUDPServer("127.0.0.3", blocked_tcp.port)
    params = {
        "duration": args.duration, "pace": args.pace, "results": results, "allowed_host": allowed.host,
        "allowed_port": allowed.port, "blocked_host": blocked_tcp.host, "blocked_port": blocked_tcp.port,
    }  # fmt: skip
    env = clean_env(
        PYTHONPATH=os.pathsep.join([SITE_DIR, ROOT]),
        SOCKGUARD_ALLOW=f"127.0.0.2,{ALLOWED_NAME}",
        SOCKGUARD_ALLOW_LOOPBACK="0",
        SOCKGUARD_LOG=log,
    )
    started = time.monotonic()
    stderr_path = os.path.join(tmp, "stderr")
    with open(stderr_path, "w") as stderr_file:  # a file, not a pipe: nobody reads it until the end
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.soak", "--worker", json.dumps(params)], cwd=ROOT, env=env,
            stderr=stderr_file,
        )  # fmt: skip
    rss: dict[int, list[tuple[float, int]]] = {}
    rotated: list[str] = []
    next_rotation = started + args.rotate_every
    next_sample = started + 2
    while proc.poll() is None:
        time.sleep(0.2)
        now = time.monotonic()
        if now >= next_sample:
            next_sample = now + 5
            pids = [proc.pid]
            try:
                with open(os.path.join(results, "pids")) as f:
                    pids = [int(p) for p in f.read().split()]
            except (OSError, ValueError):
                pass
            for pid in pids:
                value = _rss_kib(pid)
                if value is not None:
                    rss.setdefault(pid, []).append((round(now - started, 1), value))
        if now >= next_rotation and now < started + args.duration - 1:
            next_rotation = now + args.rotate_every
            number = len(rotated) + 1
            mode = args.rotation
            if mode == "alternate":
                mode = "create" if number % 2 else "copytruncate"
            _rotate(log, number, mode)
            rotated.append(f"{log}.{number} ({mode})")
    with open(stderr_path) as f:
        stderr = f.read()
    elapsed = time.monotonic() - started
    files = [path.split(" ")[0] for path in rotated] + [log]
    logs = _read_logs(files)
    reports = []
    for name in os.listdir(results):
        if name.endswith(".json"):
            with open(os.path.join(results, name)) as f:
                reports.append(json.load(f))
    allowed.close()
    lab_udp.close()
    blocked_tcp.close()
    blocked_udp.close()
    processes = []
    for report in sorted(reports, key=lambda r: (r["role"] != "main", r["pid"])):
        pid = report["pid"]
        in_files, counted = logs["per_pid"].get(pid, 0), logs["dropped"].get(pid, 0)
        samples = rss.get(pid, [])
        warm = [v for t, v in samples if t >= min(60.0, args.duration / 3)]  # after the tasks and caches have grown
        processes.append({
            "pid": pid, "role": report["role"], "ops": report["tally"].get("ops", 0),
            "misdecisions": report["misdecision_count"], "misdecision_samples": report["misdecisions"],
            "asyncio_misattributed": report["tally"].get("asyncio-misattributed", 0),
            "lines_attempted": report["attempted_lines"], "lines_in_files": in_files, "lines_counted_dropped": counted,
            "lines_unaccounted": report["attempted_lines"] - in_files - counted,
            "rss_first_kib": samples[0][1] if samples else None, "rss_last_kib": samples[-1][1] if samples else None,
            "rss_max_kib": max((s[1] for s in samples), default=None), "rss_samples": samples,
            "rss_after_warmup_kib": warm[0] if warm else None,
            "rss_growth_after_warmup_kib": warm[-1] - warm[0] if warm else None,
        })  # fmt: skip
    summary = {
        "duration_s": args.duration, "elapsed_s": round(elapsed, 1), "rotate_every_s": args.rotate_every,
        "rotation": args.rotation, "rotations": rotated, "pace": args.pace, "threads": THREADS, "tasks": TASKS,
        "forks": FORKS, "exit_code": proc.returncode, "ops": sum(p["ops"] for p in processes),
        "misdecisions": sum(p["misdecisions"] for p in processes),
        "reached_blocked_servers": blocked_tcp.count + blocked_udp.count,
        "log_lines": logs["lines"], "invalid_lines": logs["invalid"], "invalid_samples": logs["invalid_samples"],
        "event_kinds": logs["kinds"], "lines_counted_dropped": sum(p["lines_counted_dropped"] for p in processes),
        "lines_unaccounted": sum(p["lines_unaccounted"] for p in processes), "processes": processes,
        "stderr_lines": stderr.count("\n"), "stderr_tail": stderr[-3000:], "load_average": os.getloadavg(),
    }  # fmt: skip
    with open(args.out + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(_markdown(summary))
    print(_markdown(summary))
    shutil.rmtree(tmp, ignore_errors=True)
    ok = summary["misdecisions"] == 0 and summary["invalid_lines"] == 0 and summary["reached_blocked_servers"] == 0
    return 0 if ok and proc.returncode == 0 else 1


def _markdown(s: dict[str, Any]) -> str:
    window = " (lost in copytruncate windows)" if s["rotation"] != "create" else ""
    lines = [
        f"Soak: {s['duration_s']:g} s of load ({s['elapsed_s']:g} s elapsed), {s['threads']} threads + {s['tasks']:,} "
        f"asyncio tasks + {s['forks']} forked workers, log rotated ({s['rotation']}) every {s['rotate_every_s']:g} s "
        f"({len(s['rotations'])} rotations), pace {s['pace']:g}; load average after: "
        + " ".join(f"{x:.2f}" for x in s["load_average"]),
        "",
        f"- operations checked: {s['ops']:,}; misdecisions: **{s['misdecisions']}**; "
        f"connections/datagrams that reached the blocked servers: **{s['reached_blocked_servers']}**",
        f"- log lines: {s['log_lines']:,} in {len(s['rotations']) + 1} files; invalid lines: **{s['invalid_lines']}**; "
        f"events: {s['event_kinds']}",
        f"- lines dropped and counted (log-dropped events): {s['lines_counted_dropped']:,}; "
        f"lines unaccounted{window}: {s['lines_unaccounted']:,}",
        f"- lines on stderr (blocks and alerts held back to one per destination per 5 s): {s['stderr_lines']:,}",
        "",
        "| process | ops | misdecisions | lines written | in files | counted dropped | unaccounted | RSS first → last "
        "(max) MiB | RSS growth after warm-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in s["processes"]:
        rss = growth = "-"
        if p["rss_first_kib"] is not None:
            rss = f"{p['rss_first_kib'] / 1024:.1f} → {p['rss_last_kib'] / 1024:.1f} ({p['rss_max_kib'] / 1024:.1f})"
        if p["rss_growth_after_warmup_kib"] is not None:
            growth = f"{p['rss_growth_after_warmup_kib'] / 1024:+.1f} MiB"
        lines.append(
            f"| {p['role']} {p['pid']} | {p['ops']:,} | {p['misdecisions']} | {p['lines_attempted']:,} | "
            f"{p['lines_in_files']:,} | {p['lines_counted_dropped']:,} | {p['lines_unaccounted']:,} | {rss} | "
            f"{growth} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
