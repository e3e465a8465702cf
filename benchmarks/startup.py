"""What every guarded Python process pays: interpreter start-up and its first socket use, against a plain interpreter.

Measured on a regular install: :func:`regular_install` copies the files pip installs into a scratch venv's
site-packages and byte-compiles them, as pip does (tests/install_support.py: an editable install adds an import
finder to every process, guarded or not, and hides the real cost). Each sample
is one subprocess of that venv's interpreter, the variants alternating in a shuffled order; the judged figure is the
child's CPU time (user + system, from ``wait4``), which a busy machine disturbs far less than the wall clock (also
recorded). Rows:

- ``pass``: ``python -c pass`` with the sitecustomize and a 20-rule config file, and with the environment a
  ``sockguard run`` tree gives its processes (the pinned configuration): target +1 ms each.
- ``first-connect``: ``import socket`` and one UDP connect to 127.0.0.1 (no packet leaves; the guard loads the
  configuration, compiles the policy and decides): the config file, ``SOCKGUARD_ALLOW`` alone, and a
  ``sockguard run`` tree. Target +5 ms each.
- the modules each adds (``sys.modules`` at the end), checked against :data:`FORBIDDEN`.
- the instructions each variant executes (valgrind's callgrind, when installed): a load-independent figure for
  the same comparisons, information only.
- scaling: start-up + first decision with 10,000 and with 100,000 rules in the config file.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time

from benchmarks.harness import ROOT, Context, Row, Stats, clean_env, paired, verdict
from benchmarks.rulesets import FILLER, generated

MS = 1e6
#: Never loaded by the activation, nor by a first connect (modules and packages: "dns" covers dns.*).
FORBIDDEN = ("wrapt", "dns", "logging", "tomllib", "ipaddress", "typing", "asyncio", "ssl", "importlib.metadata",
             "json", "re", "dataclasses", "inspect", "contextlib", "weakref", "datetime", "struct")  # fmt: skip
#: ... and not by the activation alone either.
FORBIDDEN_AT_START = (*FORBIDDEN, "__future__", "sockguard.errors", "sockguard.config", "sockguard.guard")
FIRST_CONNECT = (
    "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.connect(('127.0.0.1', 9))\ns.close()\n"
)
FIRST_LOOKUP = "import socket; socket.getaddrinfo('127.0.0.1', 80)"


def _config(ctx: Context) -> str:
    path = os.path.join(ctx.tmp, "sockguard.toml")
    rules = ["127.0.0.1", *FILLER]
    assert len(rules) == 20
    with open(path, "w") as f:
        f.write("mode = 'enforce'\nallow = [\n" + "".join(f"  {r!r},\n" for r in rules) + "]\n")
    return path


def _big_config(ctx: Context, count: int) -> str:
    path = os.path.join(ctx.tmp, f"sockguard-{count}.toml")
    with open(path, "w") as f:
        f.write("allow = " + json.dumps(generated(count)) + "\n")
    return path


@functools.cache
def _installed(tmp: str) -> tuple[str, str]:
    sys.path.insert(0, ROOT)
    from tests.install_support import regular_install as install

    return install(tmp)


def regular_install(ctx: Context) -> tuple[str, str]:
    """``(python, sitecustomize directory)`` of a regular (non-editable, byte-compiled) install of this checkout
    (tests/install_support.py)."""
    return _installed(ctx.tmp)


def _plain_env() -> dict[str, str]:
    env = clean_env()
    env.pop("PYTHONPATH")
    env.pop("PYTHONPYCACHEPREFIX", None)  # the install's own __pycache__, as pip leaves it
    return env


def _run_env(python: str, cwd: str) -> dict[str, str]:
    """The environment ``sockguard run --allow 127.0.0.1`` gives the processes of its tree."""
    from tests.install_support import run_tree_environment

    env = run_tree_environment(python, cwd, _plain_env())
    env.pop("PYTHONPYCACHEPREFIX", None)
    return env


def _envs(ctx: Context, python: str, site: str, cwd: str) -> dict[str, dict[str, str]]:
    plain = _plain_env()
    return {
        "bare": plain,
        "file": {**plain, "PYTHONPATH": site, "SOCKGUARD_CONFIG": _config(ctx)},
        "env": {**plain, "PYTHONPATH": site, "SOCKGUARD_CONFIG": "none", "SOCKGUARD_ALLOW": "127.0.0.1"},
        "run": _run_env(python, cwd),
    }


def _spawn(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """(CPU ns, wall ns) of one run of ``argv``: the child's own user + system time, and the parent's clock."""
    start = time.perf_counter_ns()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter_ns() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv)
    return (usage.ru_utime + usage.ru_stime) * 1e9, float(wall)


def _samples(argv: list[str], envs: dict[str, dict[str, str]], cwd: str, rounds: int) -> dict[str, list[tuple]]:
    rng = random.Random(0)
    names = list(envs)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for i in range(rounds + 2):
        rng.shuffle(names)
        for name in names:
            value = _spawn(argv, envs[name], cwd)
            if i >= 2:  # two warm-up rounds: page cache, bytecode
                samples[name].append(value)
    return samples


def _modules(python: str, code: str, env: dict[str, str], cwd: str) -> set[str]:
    probe = code + "\nimport sys; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([python, "-c", probe], env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def _heavy(added: list[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in added if m in forbidden or m.split(".")[0] in forbidden)


_LABELS = {"file": "sitecustomize + 20-rule config file", "env": "sitecustomize + SOCKGUARD_ALLOW",
           "run": "a sockguard run tree (pinned configuration)"}  # fmt: skip


def _rows(ctx: Context, python: str, envs: dict[str, dict[str, str]], cwd: str, kind: str) -> list[Row]:
    code, limit, forbidden = ("pass", 1.0, FORBIDDEN_AT_START) if kind == "pass" else (FIRST_CONNECT, 5.0, FORBIDDEN)
    variants = {"bare": envs["bare"]} | {k: envs[k] for k in (("file", "run") if kind == "pass" else _LABELS)}
    samples = _samples([python, "-c", code], variants, cwd, ctx.pick(60, 12))
    plain = _modules(python, code, envs["bare"], cwd)
    rows = []
    for name in variants:
        if name == "bare":
            continue
        cpu = [s[0] for s in samples[name]]
        base = [s[0] for s in samples["bare"]]
        added, ratio = paired(cpu, base, MS)
        wall_added, _ = paired([s[1] for s in samples[name]], [s[1] for s in samples["bare"]], MS)
        modules = _modules(python, code, envs[name], cwd)
        new = sorted(modules - plain)
        heavy = _heavy(new, forbidden)
        active = "sockguard._hook" in modules
        what = "python -c pass" if kind == "pass" else "import socket + first connect (UDP, 127.0.0.1)"
        row = Row(
            f"startup/{kind}-{name}",
            f"{what}: {_LABELS[name]} (regular install, child CPU time)",
            f"added ≤ {limit:g} ms; no heavy imports",
            "ms",
            baseline=Stats.of(base, MS),
            guarded=Stats.of(cpu, MS),
            added=added,
            ratio=ratio,
        )
        row.verdict = verdict(added <= limit and not heavy and active)
        ours = [m for m in new if m.startswith("sockguard")]
        others = [m for m in new if not m.startswith("sockguard") and m != "sitecustomize"]
        row.note = (
            f"wall clock +{wall_added:.2f} ms; {len(ours)} sockguard modules"
            + (f" ({', '.join(ours)})" if kind == "pass" else "")
            + f"; other modules added: {', '.join(others) or 'none'}"
            + (f"; HEAVY: {', '.join(heavy)}" if heavy else "")
            + ("" if active else "; sitecustomize NOT active")
        )
        row.extra = {"modules_added": new, "heavy": heavy, "samples": len(cpu), "wall_added_ms": wall_added}
        rows.append(row)
    return rows


def _scaling_row(ctx: Context, python: str, site: str, cwd: str) -> Row:
    """Start-up plus the first decision (which reads the file and compiles the policy) with 10,000 and with
    100,000 rules: ten times the rules must cost at most ten times as much (no quadratic step anywhere on the
    load path: TOML, rule parsing, Settings, the policy, the sinks)."""
    envs = {
        str(n): {**_plain_env(), "PYTHONPATH": site, "SOCKGUARD_CONFIG": _big_config(ctx, n)} for n in (10_000, 100_000)
    }
    samples = _samples([python, "-c", FIRST_LOOKUP], envs, cwd, ctx.pick(6, 2))
    small, large = [s[0] for s in samples["10000"]], [s[0] for s in samples["100000"]]
    added, ratio = paired(large, small, MS)
    row = Row(
        "startup/100k-rules",
        "start-up + first decision, 10,000 → 100,000 rules (file read, rules parsed, policy compiled)",
        "≤ 10x for 10x the rules",
        "ms",
        baseline=Stats.of(small, MS),
        guarded=Stats.of(large, MS),
        added=added,
        ratio=ratio,
    )
    row.verdict = verdict(ratio <= 10.0)
    row.note = (
        "baseline column = 10,000 rules, guarded column = 100,000 (child CPU time of python -c 'import socket; "
        f"getaddrinfo'); wall clock medians {statistics.median(s[1] for s in samples['10000']) / MS:.0f} / "
        f"{statistics.median(s[1] for s in samples['100000']) / MS:.0f} ms"
    )
    return row


def _instructions(argv: list[str], env: dict[str, str], cwd: str) -> int | None:
    """Instructions executed by one run of ``argv`` (valgrind's callgrind): the same figure on a busy machine and a
    quiet one, so a change to the start-up path shows in it whatever the load. None without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    out = subprocess.run(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    return int(found.group(1)) if found and out.returncode == 0 else None


def _instruction_rows(python: str, envs: dict[str, dict[str, str]], cwd: str) -> list[Row]:
    rows = []
    for kind, code in (("pass", "pass"), ("connect", FIRST_CONNECT)):
        argv = [python, "-c", code]
        bare = _instructions(argv, envs["bare"], cwd)
        if bare is None:
            return [Row("startup/instructions", "instructions executed (valgrind)", "info", "M", verdict="skipped",
                        note="valgrind is not installed")]  # fmt: skip
        for name in ("file", "run") if kind == "pass" else ("file", "env", "run"):
            guarded = _instructions(argv, envs[name], cwd)
            if guarded is None:
                continue
            what = "python -c pass" if kind == "pass" else "import socket + first connect"
            row = Row(
                f"startup/instructions-{kind}-{name}",
                f"{what}: {_LABELS[name]}: instructions executed (valgrind; load-independent)",
                "info",
                "M instr",
                baseline=Stats(bare / 1e6, bare / 1e6, bare / 1e6, 1),
                guarded=Stats(guarded / 1e6, guarded / 1e6, guarded / 1e6, 1),
                added=(guarded - bare) / 1e6,
                ratio=guarded / bare,
            )
            rows.append(row)
    return rows


def run(ctx: Context) -> list[Row]:
    python, site = regular_install(ctx)
    cwd = os.path.join(ctx.tmp, "startup-cwd")  # no sockguard.toml / pyproject.toml to pick up by accident
    os.makedirs(cwd, exist_ok=True)
    envs = _envs(ctx, python, site, cwd)
    return [*_rows(ctx, python, envs, cwd, "pass"), *_rows(ctx, python, envs, cwd, "connect"),
            *_instruction_rows(python, envs, cwd), _scaling_row(ctx, python, site, cwd)]  # fmt: skip
