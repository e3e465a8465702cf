"""The sockguard pytest plugin in real pytest processes: under pytest-xdist (every worker guards its tests,
swallowed blocks fail in the worker's report, the controller prints and writes one summary for the run) and
at interpreter exit (atexit handlers stay under the session policy).

Only loopback addresses are used, so nothing in these runs can reach a resolver.
"""

from __future__ import annotations

import json

import pytest

from tests.test_pytest_plugin_helpers import APP, BASE_INI, PROBE

pytest_plugins = ["pytester", "tests.test_pytest_plugin_helpers"]


def test_workers_guard_and_the_controller_summarises(pytester: pytest.Pytester, servers, tmp_path) -> None:
    pytester.makeini(BASE_INI)
    pytester.makepyfile(app=APP)
    pytester.makeconftest(PROBE)
    allowed = f"127.0.0.1:{servers['tcp2'].port}"
    pytester.makepyfile(
        test_inner=f"""
        import os, subprocess, sys
        import pytest
        import app

        @pytest.mark.parametrize("n", range(4))
        def test_blocked(n, probe):
            assert probe.tcp() == "blocked"

        def test_swallowed():
            assert app.fetch_quietly("127.0.0.1", int(os.environ["SG_PORT"])) is None

        @pytest.mark.sockguard(allow=["{allowed}"])
        def test_allowed(probe):
            assert probe.tcp(env="SG_PORT2") == "ok"

        def test_child_process():
            code = "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ['SG_PORT'])))"
            assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 1
        """
    )
    report = tmp_path / "report.json"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:hypothesispytest",
        "-p",
        "no:socket",
        "-n",
        "2",
        "--sockguard",
        "--sockguard-no-loopback",
        f"--sockguard-report={report}",
    )
    result.assert_outcomes(passed=6, failed=1)
    port = servers["tcp"].port
    result.stdout.fnmatch_lines(
        [
            "sockguard: enforce; allow: -; deny: -; loopback blocked; AF_UNIX allowed",
            "*sockguard blocked 1 attempt(s) during call of test_inner.py::test_swallowed, and the code under test*",
            "*= sockguard: blocked destinations =*",
            f"BLOCKED connection to 127.0.0.1:{port} (raw IP address not covered by an IP/CIDR rule); 6 attempt(s)",
        ]
    )
    assert (servers["tcp"].count(), servers["tcp2"].count()) == (0, 1)
    data = json.loads(report.read_text())
    (destination,) = data["destinations"]
    tests = destination["tests"]
    assert {t["nodeid"] for t in tests} == {
        *(f"test_inner.py::test_blocked[{n}]" for n in range(4)),
        "test_inner.py::test_swallowed",
        "test_inner.py::test_child_process",
    }
    in_process = {t["pid"] for t in tests if not t["child"]}
    assert len(in_process) == 2  # blocks recorded in both workers, gathered by the controller
    assert [t["nodeid"] for t in tests if t["child"]] == ["test_inner.py::test_child_process"]


def test_atexit_handlers_stay_guarded(pytester: pytest.Pytester, servers) -> None:
    """A telemetry-style flush registered at import runs after pytest returns: still under the policy."""
    pytester.makeini(BASE_INI)
    pytester.makeconftest(
        """
        import atexit, os, socket

        def flush():
            try:
                socket.create_connection(("127.0.0.1", int(os.environ["SG_PORT"])), timeout=5).close()
                print("FLUSH: sent")
            except OSError as exc:
                print("FLUSH:", type(exc).__name__)

        atexit.register(flush)
        """
    )
    pytester.makepyfile(test_inner="def test_nothing(): pass")
    args = ("-p", "no:hypothesispytest", "-p", "no:socket", "-s")
    guarded = pytester.runpytest_subprocess(*args, "--sockguard", "--sockguard-no-loopback")
    guarded.assert_outcomes(passed=1)
    guarded.stdout.fnmatch_lines(["FLUSH: EgressBlocked"])
    assert servers["tcp"].count() == 0
    plain = pytester.runpytest_subprocess(*args)
    plain.stdout.fnmatch_lines(["FLUSH: sent"])
    assert servers["tcp"].count() == 1
