"""Activation surfaces end to end, in real child processes: sitecustomize,
``sockguard run`` (scripts, -m, executables, grandchildren), fail-closed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sockguard.paths import sitecustomize_dir
from tests.install_support import regular_install, run_tree_environment
from tests.loopback import CountingTCPServer

PY = sys.executable

# A probe: connects to the given raw loopback address, prints what happened,
# and optionally starts itself again as a grandchild.
PROBE = textwrap.dedent(
    """
    import json, os, socket, subprocess, sys
    host, port, depth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    try:
        socket.create_connection((host, port), timeout=2).close()
        outcome = "connected"
    except OSError as exc:
        outcome = type(exc).__name__ + ":" + str(getattr(exc, "reason", ""))
    print(json.dumps({"pid": os.getpid(), "depth": depth, "outcome": outcome}), flush=True)
    if depth > 0:
        subprocess.run([sys.executable, __file__, host, str(port), str(depth - 1)], check=True)
    """
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


@pytest.fixture
def probe(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text(PROBE)
    return str(path)


@pytest.fixture
def target():
    with CountingTCPServer("127.0.0.3") as server:
        yield server


def outcomes(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_run_guards_the_program_and_its_python_grandchild(probe, target, tmp_path):
    log = tmp_path / "run.jsonl"
    result = subprocess.run(
        [PY, "-m", "sockguard", "run", "--log", str(log), "--", probe, target.host, str(target.port), "1"],
        env=clean_env(SOCKGUARD_ALLOW_LOOPBACK="0"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    seen = outcomes(result.stdout)
    assert [s["outcome"] for s in seen] == ["EgressBlocked:raw-ip", "EgressBlocked:raw-ip"]
    assert target.settle() == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    blocks = [e for e in events if e["decision"] == "block"]
    assert {e["pid"] for e in blocks} == {s["pid"] for s in seen}  # both processes logged
    assert all(e["caller"].startswith("__main__:<module>:") for e in blocks)


def test_run_allow_flag_and_exit_status(probe, target, tmp_path):
    allowed = subprocess.run(
        [
            PY,
            "-m",
            "sockguard",
            "run",
            "--allow",
            f"127.0.0.3:{target.port}",
            probe,
            target.host,
            str(target.port),
            "0",
        ],
        env=clean_env(SOCKGUARD_ALLOW_LOOPBACK="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert outcomes(allowed.stdout)[0]["outcome"] == "connected"
    assert target.settle(1) == 1
    status = subprocess.run([PY, "-m", "sockguard", "run", "-c", "raise SystemExit(7)"], env=clean_env(), timeout=60)
    assert status.returncode == 7


def test_run_module_and_executable(tmp_path, target):
    pkg = tmp_path / "probe_mod.py"
    pkg.write_text(PROBE)
    result = subprocess.run(
        [PY, "-m", "sockguard", "run", "-m", "probe_mod", target.host, str(target.port), "0"],
        env=clean_env(SOCKGUARD_ALLOW_LOOPBACK="0", PYTHONPATH=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert outcomes(result.stdout)[0]["outcome"] == "EgressBlocked:raw-ip", result.stderr
    script = tmp_path / "tool"
    script.write_text(f"#!{PY}\n" + PROBE)
    script.chmod(0o755)
    result = subprocess.run(
        [PY, "-m", "sockguard", "run", str(script), target.host, str(target.port), "0"],
        env=clean_env(SOCKGUARD_ALLOW_LOOPBACK="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert outcomes(result.stdout)[0]["outcome"] == "EgressBlocked:raw-ip", result.stderr
    assert target.settle() == 0


def test_run_refuses_to_start_with_a_broken_config(tmp_path):
    marker = tmp_path / "started"
    (tmp_path / "sockguard.toml").write_text('allow = ["10.0.0.1/8"]\n')
    result = subprocess.run(
        [PY, "-m", "sockguard", "run", "-c", f"open({str(marker)!r}, 'w')"],
        env=clean_env(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert "sockguard.toml" in result.stderr and "10.0.0.1/8" in result.stderr and "host bits" in result.stderr
    assert not marker.exists()


def test_run_warns_about_isolated_python(tmp_path):
    result = subprocess.run(
        [PY, "-m", "sockguard", "run", PY, "-I", "-c", "pass"], env=clean_env(), capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "-I (isolated mode)" in result.stderr and "NOT be guarded" in result.stderr


def test_run_reports_missing_program():
    result = subprocess.run(
        [PY, "-m", "sockguard", "run", "no-such-program-sockguard"], env=clean_env(), capture_output=True, text=True
    )
    assert result.returncode == 127 and "not found" in result.stderr


def test_sitecustomize_fails_closed_on_a_broken_config(probe, target, tmp_path):
    (tmp_path / "sockguard.toml").write_text('mode = "sideways"\n')
    result = subprocess.run(
        [PY, probe, target.host, str(target.port), "0"],
        env=clean_env(PYTHONPATH=sitecustomize_dir()),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert outcomes(result.stdout)[0]["outcome"] == "LookupBlocked:config-error"  # create_connection resolves first
    assert "mode must be one of" in result.stderr and "blocking all network traffic" in result.stderr
    assert target.settle() == 0


def test_sitecustomize_chains_to_the_next_one(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import builtins\nbuiltins.NEXT_SITECUSTOMIZE_RAN = True\n")
    code = (
        "import builtins, sys; "
        "print(getattr(builtins, 'NEXT_SITECUSTOMIZE_RAN', False), sys.modules['sitecustomize'].__file__)"
    )
    result = subprocess.run(
        [PY, "-c", code],
        env=clean_env(PYTHONPATH=os.pathsep.join([sitecustomize_dir(), str(other)])),
        capture_output=True,
        text=True,
    )
    ran, module_file = result.stdout.split()
    assert ran == "True"
    assert module_file.startswith(sitecustomize_dir())
    # An ImportError raised *inside* the next sitecustomize is not swallowed.
    (other / "sitecustomize.py").write_text("import no_such_module_sockguard_test\n")
    result = subprocess.run(
        [PY, "-c", "pass"],
        env=clean_env(PYTHONPATH=os.pathsep.join([sitecustomize_dir(), str(other)])),
        capture_output=True,
        text=True,
    )
    assert "no_such_module_sockguard_test" in result.stderr


#: What the activation adds to a process that never touches the network: nothing else (not sockguard.errors, not
#: ``__future__``: every guarded Python process pays for each module here).
STARTUP_MODULES = {"sitecustomize", "sockguard", "sockguard._hook", "sockguard.source"}
STARTUP_MODULES |= {"sockguard.accelerator", "sockguard._accel"}  # the C floor (issue 16): one small module, one .so
#: What the first connect of a guarded process adds (the guard: policy, floor, wrappers, breaker, sinks, the
#: configuration). A module that joins this path must be added here on purpose: each costs every process.
FIRST_CONNECT_MODULES = STARTUP_MODULES | {
    "__future__",
    "_bisect",
    "_contextvars",
    "gc",
    *(f"sockguard.{name}" for name in ["active", "addresses", "addrmap", "alerts", "breaker", "breaker_settings",
      "caller", "canonical", "config", "console", "errors", "events", "floor", "guard", "policy", "rawsockets",
      "refusal", "rules", "sinks", "values", "wrappers"]),
}  # fmt: skip
#: ... and the first lookup of a name: the search list glibc would apply, and the admission of its answers.
NAME_LOOKUP_MODULES = {"sockguard.resolvconf", "sockguard.admission"}
#: Never on the start-up or first-connect path (module or package).
HEAVY = {"typing", "logging", "tomllib", "ipaddress", "dns", "dataclasses", "inspect", "wrapt", "json", "re",
         "contextlib", "weakref", "struct", "bisect", "contextvars", "datetime", "importlib.metadata", "asyncio",
         "ssl", "sockguard.reverse", "sockguard.host_addresses", "sockguard.resolver_settings"}  # fmt: skip

FIRST_CONNECT = (
    "import sys, socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.connect(('127.0.0.1', 9))\n"
)


@pytest.fixture(scope="module")
def regular(tmp_path_factory) -> tuple[str, str]:
    """``(python, sitecustomize dir)`` of a regular install (tests/install_support.py): an editable install loads
    ``re``, ``contextlib`` and ``__future__`` into every process and would hide a regression."""
    return regular_install(str(tmp_path_factory.mktemp("install")))


def modules_of(python: str, cwd, code: str, **env: str) -> set[str]:
    """The modules ``python -c code`` has at its end."""
    code += "\nimport sys; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [python, "-c", code], env=clean_env(**env), capture_output=True, text=True, cwd=cwd, check=True
    )
    return set(result.stdout.split())


def added_modules(regular, cwd, code: str, expected: set[str], **env: str) -> tuple[set[str], set[str]]:
    """The modules a guarded ``python -c code`` (``PYTHONPATH``: the install's sitecustomize) has that a plain one
    has not, and ``expected`` less the plain one's."""
    python, site = regular
    plain = modules_of(python, cwd, code)
    return modules_of(python, cwd, code, PYTHONPATH=site, **env) - plain, expected - plain


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m in HEAVY or m.split(".")[0] in HEAVY}


def test_startup_path_stays_light(tmp_path, regular):
    """With a config file present, start-up adds only sockguard's small start-up modules: the policy is compiled
    at the first socket event, socket is patched when imported, and nothing heavy is imported on the way."""
    (tmp_path / "sockguard.toml").write_text('allow = ["api.partner.test"]\n')
    added, expected = added_modules(regular, tmp_path, "pass", STARTUP_MODULES)
    assert added == expected


def test_startup_path_in_a_run_tree_stays_light(tmp_path, regular):
    """A process of a ``sockguard run`` tree (the pinned configuration) starts with the same modules."""
    found = run_tree_environment(regular[0], str(tmp_path), clean_env())
    variables = {k: v for k, v in found.items() if k.startswith("SOCKGUARD")}
    added, expected = added_modules(regular, tmp_path, "pass", STARTUP_MODULES, **variables)
    assert added == expected
    # The pinned file is read with json's C scanner: not json, not re.
    wanted = FIRST_CONNECT_MODULES | {"_json"}
    added, expected = added_modules(regular, tmp_path, FIRST_CONNECT, wanted, **variables)
    assert not heavy(added), sorted(heavy(added))
    assert added == expected, f"new on the path: {sorted(added - expected)}; gone: {sorted(expected - added)}"


@pytest.mark.parametrize("config", ["environment", "file"])
def test_first_socket_use_imports_nothing_heavy(tmp_path, regular, config):
    """The first connect of a guarded process loads the guard, and exactly the modules of FIRST_CONNECT_MODULES:
    not ``typing``, ``logging``, ``tomllib`` (a config file in the plain TOML subset is read without it: the
    file's toml_subset is the one module more), ``json``, ``re``, ``ipaddress``, ``dns`` or ``dataclasses``. Every
    Python process of a container pays this once."""
    if config == "file":
        (tmp_path / "sockguard.toml").write_text(
            'allow = [\n  "api.partner.test:443",  # the partner\n  "10.0.0.0/8",\n]\n[breaker]\nthreshold = 4\n'
        )
        env: dict[str, str] = {}
        wanted = FIRST_CONNECT_MODULES | {"sockguard.toml_subset"}
    else:
        env = {"SOCKGUARD_ALLOW": "api.partner.test", "SOCKGUARD_CONFIG": "none"}
        wanted = FIRST_CONNECT_MODULES
    added, expected = added_modules(regular, tmp_path, FIRST_CONNECT, wanted, **env)
    assert not heavy(added), sorted(heavy(added))
    assert added == expected, f"new on the path: {sorted(added - expected)}; gone: {sorted(expected - added)}"


_FIRST_LOOKUPS = """
import sys, threading, socket, _socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", 9))
loaded = sorted(m for m in ("sockguard.resolvconf", "sockguard.admission") if m in sys.modules)
if BREAK:
    sys.modules["sockguard.resolvconf"] = sys.modules["sockguard.admission"] = None  # their import fails
ready = threading.Barrier(2)
answers = []
def look():
    ready.wait()
    try:
        answers.append(sorted({i[4][0] for i in LOOKUP("static.netlab.test", 80, socket.AF_INET)}))
    except ImportError:
        answers.append("ImportError")
threads = [threading.Thread(target=look) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print(loaded, answers, sorted(m for m in ("sockguard.resolvconf", "sockguard.admission") if sys.modules.get(m)))
"""


@pytest.mark.netlab
@pytest.mark.parametrize("lookup", ["socket.getaddrinfo", "_socket.getaddrinfo"])
@pytest.mark.parametrize("broken", [False, True], ids=["loads", "import-fails"])
def test_name_lookup_modules_load_at_the_first_lookup(tmp_path, lookup, broken):
    """sockguard.resolvconf and sockguard.admission are off the first connect's path: the first lookup of a name
    loads them (through the wrappers, and through the audit hook when ``_socket`` is called directly), two threads'
    first lookups at once alike. An import that fails blocks the lookup (nothing resolved), never lets it through."""
    code = _FIRST_LOOKUPS.replace("BREAK", str(broken)).replace("LOOKUP", lookup)
    env = clean_env(PYTHONPATH=sitecustomize_dir(), SOCKGUARD_CONFIG="none", SOCKGUARD_ALLOW="static.netlab.test")
    result = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path, check=True)
    if broken:
        assert result.stdout.strip() == "[] ['ImportError', 'ImportError'] []"
    else:
        expected = ["198.51.100.30"]
        # (C's own getaddrinfo has no answers to admit: the audit hook decides the name only)
        loaded = sorted(NAME_LOOKUP_MODULES) if lookup == "socket.getaddrinfo" else ["sockguard.resolvconf"]
        assert result.stdout.strip() == f"[] [{expected}, {expected}] {loaded}"


def test_the_exceptions_are_plain_attributes_once_loaded(tmp_path):
    """``sockguard.EgressBlocked`` is named lazily (sockguard.errors is not loaded at start-up), and is a plain
    attribute of the package from the first socket use on: ``except sockguard.EgressBlocked:`` never runs Python
    code (where a signal handler's exception could land)."""
    code = (
        "import sys, sockguard\n"
        "before = 'EgressBlocked' in vars(sockguard) or 'sockguard.errors' in sys.modules\n"
        + FIRST_CONNECT
        + "print(before, all(n in vars(sockguard) for n in ('EgressBlocked', 'ConfigError', 'BreakerOpen')))\n"
    )
    result = subprocess.run(
        [PY, "-c", code],
        env=clean_env(PYTHONPATH=sitecustomize_dir(), SOCKGUARD_CONFIG="none"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert result.stdout.split() == ["False", "True"]


def test_mode_off_in_environment_skips_activation(tmp_path):
    probe_code = (
        "import socket\n"
        "s = socket.socket()\n"
        "try:\n    s.connect(('127.0.0.3', 9))\nexcept OSError as e:\n    print(type(e).__name__)\n"
    )
    result = subprocess.run(
        [PY, "-c", probe_code],
        env=clean_env(PYTHONPATH=sitecustomize_dir(), SOCKGUARD_MODE="off", SOCKGUARD_ALLOW_LOOPBACK="0"),
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() == "ConnectionRefusedError"


def test_check_command_exit_codes():
    ok = subprocess.run(
        [PY, "-m", "sockguard", "check", "--allow", "api.partner.test:443", "https://api.partner.test/x"],
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "allowed" in ok.stdout and "api.partner.test:443" in ok.stdout
    blocked = subprocess.run(
        [PY, "-m", "sockguard", "check", "--format", "json", "http://203.0.113.9/health", "localhost:80"],
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert blocked.returncode == 1
    data = json.loads(blocked.stdout)
    assert [d["reason"] for d in data] == ["raw-ip", "loopback"]
    broken = subprocess.run(
        [PY, "-m", "sockguard", "check", "x.test"], env=clean_env(SOCKGUARD_MODE="nope"), capture_output=True, text=True
    )
    assert broken.returncode == 2 and "SOCKGUARD_MODE" in broken.stderr


def test_pythonpath_command_prints_the_activation_directory():
    result = subprocess.run([PY, "-m", "sockguard", "pythonpath"], capture_output=True, text=True, env=clean_env())
    assert result.stdout.strip() == sitecustomize_dir()
    assert os.path.isfile(os.path.join(result.stdout.strip(), "sitecustomize.py"))


def test_status_shows_the_configuration_in_force_and_fails_on_a_broken_one(tmp_path):
    (tmp_path / "sockguard.toml").write_text('allow = ["api.partner.test:443"]\n[breaker]\nthreshold = 4\n')
    result = subprocess.run(
        [PY, "-m", "sockguard", "status", "--format", "json"],
        env=clean_env(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["source"] == str(tmp_path / "sockguard.toml")
    assert (data["allow"], data["resolver"], data["breaker"]["threshold"]) == (["api.partner.test:443"], "system", 4)
    http = (data["http_events"], data["http_log_level"], data["log_query"])
    assert http == ("when a sink takes them", "debug", False)
    (tmp_path / "sockguard.toml").write_text("[breaker]\nthreshold = -1\n")
    broken = subprocess.run(
        [PY, "-m", "sockguard", "status"], env=clean_env(), capture_output=True, text=True, cwd=tmp_path
    )
    assert broken.returncode == 2 and "threshold" in broken.stderr
