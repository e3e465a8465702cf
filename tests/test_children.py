"""Child processes and lifecycle (docs/children.md): every way a guarded Python starts another Python keeps the
guard, proven from the server's side (zero connections) and from the decision log (the child's own pid);
python -I/-E/-S and env -i escape it, and sockguard says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from sockguard import children
from sockguard.paths import sitecustomize_dir
from tests.netlab import Lab

PY = sys.executable
BLOCKED = "EgressBlocked:raw-ip"

# Connects to a raw "remote" address (blocked by default: raw-ip) in the way named by argv[1], from this process
# or from a child; prints one JSON line per attempt: {"how", "pid", "outcome"}.
PROBE = textwrap.dedent(
    """
    import json, os, shlex, socket, subprocess, sys

    def attempt(host, port):
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
            return "connected"
        except OSError as exc:
            return type(exc).__name__ + ":" + str(getattr(exc, "reason", ""))

    def remote(host, port):
        return os.getpid(), attempt(host, port)

    def say(how, pid, outcome):
        print(json.dumps({"how": how, "pid": pid, "outcome": outcome}), flush=True)

    def main(how, host, port):
        me = os.path.abspath(__file__)
        again = [me, "direct", host, port]
        if how == "direct":
            say(how, *remote(host, port))
        elif how == "subprocess":
            subprocess.run([sys.executable, *again], check=True)
        elif how == "system":  # through /bin/sh and PATH, like os.system("python ...")
            assert os.system("python " + " ".join(map(shlex.quote, again))) == 0
        elif how == "execv":
            os.execv(sys.executable, [sys.executable, *again])
        elif how == "execvp":
            os.execvp("python", ["python", *again])
        elif how.startswith("mp-"):
            import multiprocessing

            with multiprocessing.get_context(how[3:]).Pool(1) as pool:
                say(how, *pool.apply(remote, (host, port)))
        elif how.startswith("executor"):
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context(how.partition("-")[2] or None)
            with ProcessPoolExecutor(1, mp_context=context) as executor:
                say(how, *executor.submit(remote, host, port).result())
        elif how in ("fork", "fork-after"):
            if how == "fork-after":
                say(how, *remote(host, port))  # the parent's policy is loaded before the fork
            pid = os.fork()
            if pid == 0:
                say(how, *remote(host, port))
                os._exit(0)
            assert os.waitpid(pid, 0)[1] == 0
        elif how == "isolated-child":
            subprocess.run([sys.executable, "-I", *again], check=True)
        elif how == "bare-env-child":
            subprocess.run([sys.executable, *again], env={"PATH": os.environ["PATH"]}, check=True)
        else:
            raise SystemExit("unknown how " + how)

    if __name__ == "__main__":
        main(*sys.argv[1:4])
    """
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_") and k != "PYTHONPATH"}
    env["PATH"] = os.pathsep.join([os.path.dirname(PY), env.get("PATH", "")])  # `python` = this venv's
    env["SOCKGUARD_ALLOW_LOOPBACK"] = "0"  # strict: nothing but the allowlist
    env.update(extra)
    return env


def outcomes(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def run_guarded(
    args: list[str], cwd: Path, log: Path | None = None, allow: str | None = None, native: bool = True
) -> subprocess.CompletedProcess:
    options = (["--log", str(log)] if log else []) + (["--allow", allow] if allow else [])
    options += [] if native else ["--no-native"]  # the Python layer alone (the native layer: docs/native.md)
    return subprocess.run(
        [PY, "-m", "sockguard", "run", *options, "--", *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def blocks_by_pid(log: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "decision" and event["decision"] == "block" and event["op"] == "connect":
            counts[event["pid"]] = counts.get(event["pid"], 0) + 1
    return counts


@pytest.fixture
def probe(tmp_path: Path) -> str:
    path = tmp_path / "probe.py"
    path.write_text(PROBE)
    return str(path)


@pytest.fixture
def remote(netlab: Lab):
    return netlab.tcp("203.0.113.10")


# --- every way to start a Python child keeps the guard ---------------------------------------------

HOWS = [
    "subprocess",
    "system",
    "execv",
    "execvp",
    "mp-spawn",
    "mp-forkserver",
    "mp-fork",
    "executor",  # ProcessPoolExecutor, default context (fork on Linux)
    "executor-spawn",
    "executor-forkserver",
    "fork",
    "fork-after",
]


@pytest.mark.parametrize("how", HOWS)
def test_children_of_sockguard_run_are_guarded(how: str, probe: str, remote, tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    result = run_guarded([probe, how, remote.host, str(remote.port)], tmp_path, log)
    assert result.returncode == 0, result.stderr
    seen = outcomes(result.stdout)
    assert seen and all(s["outcome"] == BLOCKED for s in seen), result.stdout + result.stderr
    assert remote.accepted == 0
    # The block was decided inside the child: its own pid is in the decision log.
    logged = blocks_by_pid(log)
    assert {s["pid"] for s in seen} <= set(logged), (seen, logged)
    if how not in ("execv", "execvp", "fork-after"):  # exec keeps the pid; fork-after's parent attempted too
        assert len({s["pid"] for s in seen}) == len(seen) == 1


@pytest.mark.parametrize("how", ["subprocess", "mp-forkserver", "executor"])
def test_the_allowlist_reaches_children_too(how: str, probe: str, remote, tmp_path: Path) -> None:
    """The control: the same children connect when the policy allows it (so a zero above means blocked)."""
    result = run_guarded([probe, how, remote.host, str(remote.port)], tmp_path, allow=f"{remote.host}:{remote.port}")
    assert result.returncode == 0, result.stderr
    assert [s["outcome"] for s in outcomes(result.stdout)] == ["connected"]
    assert remote.accepted == 1


def test_pythonpath_activation_without_sockguard_run(probe: str, remote, tmp_path: Path) -> None:
    result = subprocess.run(
        [PY, probe, "subprocess", remote.host, str(remote.port)],
        env=clean_env(PYTHONPATH=sitecustomize_dir()),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert [s["outcome"] for s in outcomes(result.stdout)] == [BLOCKED], result.stderr
    assert remote.accepted == 0


# --- a pip-installed console script ----------------------------------------------------------------


def build_wheel(directory: Path) -> Path:
    """A tiny wheel with a console_scripts entry point (built by hand: fully offline, no build backend)."""
    files = {
        "sgprobe.py": PROBE + "\ndef cli():\n    main(*sys.argv[1:4])\n",
        "sgprobe-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: sgprobe\nVersion: 0.1\n",
        "sgprobe-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "sgprobe-0.1.dist-info/entry_points.txt": "[console_scripts]\nsgprobe = sgprobe:cli\n",
    }
    files["sgprobe-0.1.dist-info/RECORD"] = "".join(f"{name},,\n" for name in [*files, "sgprobe-0.1.dist-info/RECORD"])
    wheel = directory / "sgprobe-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


def test_pip_installed_console_script_is_guarded(remote, tmp_path: Path) -> None:
    """pip installs the script into a separate venv (without sockguard); the PYTHONPATH entry guards it."""
    venv = tmp_path / "venv"
    subprocess.run([PY, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    pip = [PY, "-m", "pip", "--python", str(venv / "bin" / "python"), "--disable-pip-version-check", "-q"]
    install = [*pip, "install", "--no-deps", "--no-index", "--no-build-isolation", str(build_wheel(tmp_path))]
    subprocess.run(install, check=True, timeout=120, env=clean_env())
    script = venv / "bin" / "sgprobe"
    assert script.read_text().startswith(f"#!{venv}/bin/python")
    via_run = run_guarded([str(script), "direct", remote.host, str(remote.port)], tmp_path)
    via_env = subprocess.run(  # the script, and a Python it starts
        [str(script), "subprocess", remote.host, str(remote.port)],
        env=clean_env(PYTHONPATH=sitecustomize_dir()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    for result in (via_run, via_env):
        assert [s["outcome"] for s in outcomes(result.stdout)] == [BLOCKED], result.stderr
    assert remote.accepted == 0
    unguarded = subprocess.run([str(script), "direct", remote.host, str(remote.port)], env=clean_env(), text=True,
                               capture_output=True, timeout=60)  # fmt: skip
    assert [s["outcome"] for s in outcomes(unguarded.stdout)] == ["connected"]  # the control
    assert remote.accepted == 1


# --- fork: the child keeps enforcing, log lines stay whole ------------------------------------------

FORKER = textwrap.dedent(
    """
    import os, socket, sys
    host, port = sys.argv[1], int(sys.argv[2])

    def hammer(n):
        blocked = 0
        for _ in range(n):
            try:
                socket.create_connection((host, port), timeout=2).close()
            except OSError as exc:
                blocked += any(c.__name__ == "EgressBlocked" for c in type(exc).__mro__)
        return blocked

    def forked(n):
        pids = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                os._exit(0 if hammer(n) == n else 3)
            pids.append(pid)
        return pids

    pids = forked(50)  # before this process touched a socket: each child loads the policy itself
    assert hammer(10) == 10  # the parent's policy and log file are now open...
    pids += forked(50)  # ...and inherited by these children
    print(all(os.waitpid(pid, 0)[1] == 0 for pid in pids), flush=True)
    """
)


def test_fork_in_a_sockguard_run_process(remote, tmp_path: Path) -> None:
    script = tmp_path / "forker.py"
    script.write_text(FORKER)
    log = tmp_path / "fork.jsonl"
    result = run_guarded([str(script), remote.host, str(remote.port)], tmp_path, log)
    assert result.stdout.strip() == "True", result.stderr
    lines = log.read_text().splitlines()
    assert all(line.startswith("{") and line.endswith("}") for line in lines)  # whole lines...
    events = [json.loads(line) for line in lines]  # ...that parse
    per_pid = sorted(blocks_by_pid(log).values())
    assert per_pid == [10, 50, 50, 50, 50]
    assert all(e["decision"] == "block" for e in events if e["event"] == "decision" and e["op"] == "connect")
    assert remote.accepted == 0


# --- python -I / -E / -S and env -i: NOT guarded, and sockguard says so ----------------------------


@pytest.mark.parametrize(
    ("flag", "meaning"), [("-I", "isolated mode"), ("-E", "ignore PYTHON* variables"), ("-S", "no site import")]
)
def test_isolating_flags_escape_the_guard_and_run_warns(
    flag: str, meaning: str, probe: str, remote, tmp_path: Path
) -> None:
    result = run_guarded([PY, flag, probe, "direct", remote.host, str(remote.port)], tmp_path, native=False)
    assert f"{flag} ({meaning})" in result.stderr and "will NOT be guarded" in result.stderr
    assert [s["outcome"] for s in outcomes(result.stdout)] == ["connected"]  # honest: not guarded
    assert remote.accepted == 1


@pytest.mark.parametrize("flag", ["-I", "-E", "-S"])
def test_the_native_layer_still_holds_a_python_that_skips_site(flag: str, probe: str, remote, tmp_path: Path) -> None:
    """The Python layer is not loaded there (and run says so), but the preload library is: the connect is
    refused in C (PermissionError, no EgressBlocked) and never arrives."""
    from sockguard.native import library_path

    if library_path() is None:
        pytest.skip("native layer not built")
    result = run_guarded([PY, flag, probe, "direct", remote.host, str(remote.port)], tmp_path)
    assert "will NOT be guarded" in result.stderr  # by the Python layer
    assert [s["outcome"] for s in outcomes(result.stdout)] == ["PermissionError:"]
    assert "(native layer)" in result.stderr
    assert remote.accepted == 0


def test_env_i_and_shebang_flags_are_detected(probe: str, remote, tmp_path: Path) -> None:
    env_i = run_guarded(["env", "-i", PY, probe, "direct", remote.host, str(remote.port)], tmp_path, native=False)
    assert "env -i starts it with an empty environment" in env_i.stderr
    assert [s["outcome"] for s in outcomes(env_i.stdout)] == ["connected"]
    script = tmp_path / "tool"
    script.write_text(f"#!/usr/bin/env -S {PY} -E\n" + PROBE)
    script.chmod(0o755)
    shebang = run_guarded([str(script), "direct", remote.host, str(remote.port)], tmp_path, native=False)
    assert "-E (ignore PYTHON* variables)" in shebang.stderr
    assert [s["outcome"] for s in outcomes(shebang.stdout)] == ["connected"]
    assert remote.accepted == 2


@pytest.mark.parametrize(
    ("how", "warning"),
    [("isolated-child", "-I (isolated mode)"), ("bare-env-child", "no PYTHONPATH entry for sockguard")],
)
def test_a_guarded_parent_warns_when_it_starts_an_unguarded_python(
    how: str, warning: str, probe: str, remote, tmp_path: Path
) -> None:
    log = tmp_path / "decisions.jsonl"
    result = run_guarded([probe, how, remote.host, str(remote.port)], tmp_path, log, native=False)
    assert result.returncode == 0, result.stderr
    assert [s["outcome"] for s in outcomes(result.stdout)] == ["connected"]  # the child is not guarded...
    assert remote.accepted == 1
    assert warning in result.stderr and "will NOT be guarded" in result.stderr  # ...and the parent said so
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["reason"] for e in events if e["event"] == "unguarded-child"] == ["unguarded-child"]


# --- the detector itself -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([PY, "-I", "app.py"], "-I (isolated mode)"),
        ([PY, "-W", "ignore", "-E", "app.py"], "-E (ignore PYTHON* variables)"),
        ([PY, "-Wignore", "-S", "app.py"], "-S (no site import)"),
        ([PY, "-X", "dev", "-uI", "app.py"], "-I (isolated mode)"),
        ([PY, "-bIc", "pass"], "-I (isolated mode)"),
        (["python3.11", "-I", "-m", "pip"], "-I (isolated mode)"),
        ([PY, "-s", "-P", "app.py"], None),  # no user site / safe path: sitecustomize still loads
        ([PY, "app.py", "-I"], None),  # the script's own argument
        ([PY, "-c", "pass", "-E"], None),
        ([PY, "-m", "mod", "-S"], None),
        ([PY, "-Xfrozen_modules=off", "app.py"], None),
        (["env", "-i", PY, "app.py"], "env -i starts it with an empty environment"),
        (["env", "--ignore-environment", "PATH=/bin", "python3", "app.py"], "env -i"),
        (["env", "-u", "PYTHONPATH", PY, "app.py"], "env -u PYTHONPATH"),
        (["env", "--unset=SOCKGUARD_MODE", PY, "app.py"], "env -u SOCKGUARD_MODE"),
        (["env", "PYTHONPATH=/opt/lib", PY, "app.py"], "env PYTHONPATH=... replaces"),
        (["env", "DEBUG=1", PY, "-E", "app.py"], "-E (ignore PYTHON* variables)"),
        (["env", "-S", f"{PY} -I", "app.py"], "-I (isolated mode)"),
        (["env", "DEBUG=1", PY, "app.py"], None),
        (["env", "-i", "ls"], None),  # not a Python
        (["sh", "-c", f"{PY} -S app.py"], "-S (no site import)"),
        (["git", "status"], None),
    ],
)
def test_isolation_warning(argv: list[str], expected: str | None) -> None:
    warning = children.isolation_warning(argv)
    if expected is None:
        assert warning is None
    else:
        assert warning is not None and expected in warning and "will NOT be guarded" in warning


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"#!{PY} -I", "-I (isolated mode)"),
        ("#!/usr/bin/env -S python3 -E -u", "-E (ignore PYTHON* variables)"),
        ("#!/usr/bin/env python3", None),
        (f"#!{PY}", None),
        ("#!/bin/sh", None),
    ],
)
def test_isolation_warning_reads_the_shebang(tmp_path: Path, line: str, expected: str | None) -> None:
    script = tmp_path / "tool"
    script.write_text(line + "\nprint('hi')\n")
    script.chmod(0o755)
    warning = children.isolation_warning([str(script), "arg"])
    assert (warning is None) if expected is None else (warning is not None and expected in warning)


def test_child_warning_checks_the_environment_it_is_given() -> None:
    guarded_env = {"PYTHONPATH": sitecustomize_dir(), "PATH": "/usr/bin"}
    assert children.child_warning([PY, "app.py"], None) is None  # inherits this environment
    assert children.child_warning([PY, "app.py"], guarded_env) is None
    assert "no PYTHONPATH entry" in (children.child_warning([PY, "app.py"], {"PATH": "/usr/bin"}) or "")
    assert children.child_warning([PY, "app.py"], {"SOCKGUARD_MODE": "off"}) is None  # explicit opt-out
    assert children.child_warning(["ls", "-l"], {}) is None  # not a Python
    assert "-I" in (children.child_warning(f"{PY} -I app.py", None) or "")  # a shell command line (os.system)
    assert "-E" in (children.child_warning([b"python3", b"-E", b"x.py"], None) or "")
    assert "-S" in (children.child_warning(["ignored", "-S", "x.py"], None, PY) or "")  # Popen(executable=...)
