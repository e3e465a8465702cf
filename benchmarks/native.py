"""The native layer (the LD_PRELOAD library): added cost of an allowed interposed connect, the cost of a blocked
one, and start-up of /bin/true with the library preloaded.

A small C program (compiled here with the system compiler) times N connects of a UDP socket (no packet leaves)
with CLOCK_PROCESS_CPUTIME_ID and prints ns per call; it runs with and without the library preloaded, the
variants interleaved round by round. The allowed connect goes to 127.0.0.1:9, allowed by an IP rule (loopback
off); the blocked one to 203.0.113.9:9 (raw IP, refused before the system call; the stderr line is printed once
per destination). Start-up: fork + exec + exit of /bin/true, timed by the parent (wall clock).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

from benchmarks.harness import ROOT, Context, Row, Stats, clean_env, interleave_calls, paired, timed, verdict

PROGRAM = r"""
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int n = atoi(argv[2]);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(9)};
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    connect(fd, (struct sockaddr *)&sa, sizeof sa); /* first call: loads the policy */
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    for (int i = 0; i < n; i++) connect(fd, (struct sockaddr *)&sa, sizeof sa);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    printf("%.3f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"""


def _library() -> str | None:
    sys.path.insert(0, ROOT)
    from sockguard.native import library_path

    return library_path()


def _prepare(ctx: Context) -> tuple[str, str, str] | None:
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    library = _library()
    if compiler is None or library is None:
        return None
    source = os.path.join(ctx.tmp, "connect_bench.c")
    binary = os.path.join(ctx.tmp, "connect_bench")
    with open(source, "w") as f:
        f.write(PROGRAM)
    subprocess.run([compiler, "-O2", "-o", binary, source], check=True)
    from sockguard.native.blob import compile_policy
    from sockguard.policy import Policy

    policy = os.path.join(ctx.tmp, "native-policy.bin")
    rules = ["127.0.0.1", "api.allowed.test:443", "*.example.test", "10.0.0.0/8", "[2001:db8::/32]:443"]
    with open(policy, "wb") as f:
        f.write(compile_policy(Policy(rules, ["bad.example.test"], allow_loopback=False)))
    return binary, library, policy


def _per_call(argv: list[str], env: dict[str, str]) -> float:
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    return float(out.strip()) / 1000.0  # µs


def run(ctx: Context) -> list[Row]:
    prepared = _prepare(ctx)
    if prepared is None:
        return [Row("native/skipped", "native layer", "-", "-", verdict="skipped", note="no compiler or library")]
    binary, library, policy = prepared
    bare = clean_env()
    bare.pop("PYTHONPATH", None)
    preloaded = {**bare, "LD_PRELOAD": library, "SOCKGUARD_NATIVE_POLICY": policy}
    n = str(ctx.pick(200_000, 20_000))
    rows = []
    for key, address, label, target, limit in (
        ("native/connect-allowed", "127.0.0.1", "native layer: allowed UDP connect (IP rule), added per call",
         "added ≤ 0.1 µs", 0.1),
        ("native/connect-blocked", "203.0.113.9", "native layer: blocked UDP connect (raw IP), whole call",
         "≤ 2 µs, nothing sent", 2.0),
    ):  # fmt: skip
        calls = {
            "bare": functools.partial(_per_call, [binary, address, n], bare),
            "native": functools.partial(_per_call, [binary, address, n], preloaded),
        }
        samples = interleave_calls(calls, rounds=ctx.pick(15, 4), warmup=1)
        added, ratio = paired(samples["native"], samples["bare"])
        guarded = Stats.of(samples["native"])
        ok = added <= limit if key.endswith("allowed") else guarded.median <= limit
        rows.append(
            Row(
                key,
                label,
                target,
                "µs",
                baseline=Stats.of(samples["bare"]),
                guarded=guarded,
                added=added,
                ratio=ratio,
                verdict=verdict(ok),
            )
        )
        if key.endswith("blocked"):
            rows[-1].note = "baseline: the same connect without the library (it reaches the kernel)"
    true = shutil.which("true") or "/bin/true"
    start = {
        "bare": functools.partial(timed, functools.partial(subprocess.run, [true], env=bare, check=True)),
        "native": functools.partial(timed, functools.partial(subprocess.run, [true], env=preloaded, check=True)),
    }
    samples = interleave_calls(start, rounds=ctx.pick(200, 20), warmup=5)
    added, ratio = paired(samples["native"], samples["bare"], 1e6)
    rows.append(
        Row(
            "native/startup",
            "native layer: start-up of /bin/true with the library preloaded (fork+exec+exit)",
            "added ≤ 1 ms",
            "ms",
            baseline=Stats.of(samples["bare"], 1e6),
            guarded=Stats.of(samples["native"], 1e6),
            added=added,
            ratio=ratio,
            verdict=verdict(added <= 1.0),
        )
    )
    return rows
