"""Interpreter start-up with the sitecustomize active and a 20-rule config file, against a plain interpreter.

Each sample is one ``python -c ...`` subprocess timed by the parent (fork + exec + start-up + exit), the variants
alternating. ``pass`` is the target row. ``import socket`` additionally loads the guard (the post-import hook
patches ``socket``) and the first lookup compiles the policy from the file: shown for information. The modules
each start-up leaves in ``sys.modules`` are compared too: nothing heavy may load before a socket is used.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

from benchmarks.harness import SITE_DIR, Context, Row, Stats, clean_env, interleave_calls, paired, timed, verdict
from benchmarks.rulesets import FILLER, generated

MS = 1e6
FORBIDDEN = ("wrapt", "dns", "logging", "tomllib", "ipaddress", "typing", "asyncio", "ssl", "importlib.metadata")
PROGRAMS = {
    "pass": "pass",
    "import socket + first lookup": "import socket; socket.getaddrinfo('127.0.0.1', 80)",
}


def _config(ctx: Context) -> str:
    path = os.path.join(ctx.tmp, "sockguard.toml")
    rules = ["127.0.0.1", *FILLER]
    assert len(rules) == 20
    with open(path, "w") as f:
        f.write("mode = 'enforce'\nallow = [\n" + "".join(f"  {r!r},\n" for r in rules) + "]\n")
    return path


def _big_config(ctx: Context, count: int) -> str:
    import json

    path = os.path.join(ctx.tmp, f"sockguard-{count}.toml")
    with open(path, "w") as f:
        f.write("allow = " + json.dumps(generated(count)) + "\n")
    return path


def _scaling_row(ctx: Context, cwd: str) -> Row:
    """Start-up plus the first decision (which reads the file and compiles the policy) with 10,000 and with
    100,000 rules: ten times the rules must cost at most ten times as much (no quadratic step anywhere on the
    load path: TOML, rule parsing, Settings, the policy, the sinks)."""
    argv = [sys.executable, "-c", PROGRAMS["import socket + first lookup"]]
    envs = {str(n): clean_env(PYTHONPATH=SITE_DIR, SOCKGUARD_CONFIG=_big_config(ctx, n)) for n in (10_000, 100_000)}
    calls = {name: functools.partial(_run, argv, env, cwd) for name, env in envs.items()}
    samples = interleave_calls(calls, rounds=ctx.pick(8, 2), warmup=1)
    added, ratio = paired(samples["100000"], samples["10000"], MS)
    row = Row(
        "startup/100k-rules",
        "start-up + first decision, 10,000 → 100,000 rules (file read, rules parsed, policy compiled)",
        "≤ 10x for 10x the rules",
        "ms",
        baseline=Stats.of(samples["10000"], MS),
        guarded=Stats.of(samples["100000"], MS),
        added=added,
        ratio=ratio,
    )
    row.verdict = verdict(ratio <= 10.0)
    row.note = "baseline column = 10,000 rules, guarded column = 100,000 (python -c 'import socket; getaddrinfo')"
    return row


def _envs(ctx: Context) -> dict[str, dict[str, str]]:
    bare = clean_env()
    bare.pop("PYTHONPATH")
    guarded = clean_env(PYTHONPATH=SITE_DIR, SOCKGUARD_CONFIG=_config(ctx))
    return {"bare": bare, "guard": guarded}


def _modules(env: dict[str, str], cwd: str) -> set[str]:
    code = "import sys; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def _run(argv: list[str], env: dict[str, str], cwd: str) -> float:
    return timed(lambda: subprocess.run(argv, env=env, cwd=cwd, check=True))


def run(ctx: Context) -> list[Row]:
    envs = _envs(ctx)
    cwd = ctx.tmp  # no sockguard.toml / pyproject.toml to pick up by accident
    modules = {name: _modules(env, cwd) for name, env in envs.items()}
    added_modules = sorted(modules["guard"] - modules["bare"])
    heavy = sorted(m for m in added_modules if m.split(".")[0] in FORBIDDEN or m in FORBIDDEN)
    active = "sockguard._hook" in modules["guard"]
    rows = []
    for label, code in PROGRAMS.items():
        argv = [sys.executable, "-c", code]
        calls = {name: functools.partial(_run, argv, env, cwd) for name, env in envs.items()}
        samples = interleave_calls(calls, rounds=ctx.pick(60, 10), warmup=2)
        added, ratio = paired(samples["guard"], samples["bare"], MS)
        judged = code == "pass"
        row = Row(
            f"startup/{label.split()[0]}",
            f"interpreter start-up: python -c {code!r} with sitecustomize + 20-rule config",
            "added ≤ 5 ms; no heavy imports" if judged else "info",
            "ms",
            baseline=Stats.of(samples["bare"], MS),
            guarded=Stats.of(samples["guard"], MS),
            added=added,
            ratio=ratio,
        )
        if judged:
            row.verdict = verdict(added <= 5.0 and not heavy and active)
            row.note = f"modules added at start-up: {', '.join(added_modules) or 'none'}" + (
                f"; HEAVY: {', '.join(heavy)}" if heavy else ""
            )
            if not active:
                row.note += "; sitecustomize NOT active"
            row.extra = {"modules_added": added_modules, "heavy": heavy, "samples": len(samples["bare"])}
        else:
            row.note = "loads the guard on import socket and compiles the policy from the file"
        rows.append(row)
    rows.append(_scaling_row(ctx, cwd))
    return rows
