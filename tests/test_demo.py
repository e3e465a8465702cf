"""`sockguard demo --fast` on a machine with no configuration: the summary proves the replay."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from sockguard import demo


def run_demo(tmp_path, isolation: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_")}  # no configuration at all
    env[demo.ISOLATION] = isolation
    return subprocess.run(
        [sys.executable, "-m", "sockguard", "demo", "--fast"],
        cwd=tmp_path,  # no sockguard.toml / pyproject here
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def summary(stdout: str) -> dict[str, str]:
    """The rows '  name:   value' after 'Summary (<mode> mode)'."""
    lines = stdout.split("\nSummary (", 1)[1].splitlines()
    rows = dict(m.groups() for m in map(re.compile(r"  (\S.*?):\s{2,}(.*)").fullmatch, lines[1:]) if m)
    return {"mode": lines[0].split()[0], **rows}


def check(result: subprocess.CompletedProcess[str], mode: str) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    rows = summary(result.stdout)
    assert rows["mode"] == mode
    assert rows["allowlisted call"] == "200 OK"
    assert rows["connections reached by the misconfigured target"] == "0"
    assert rows["alerts for the misconfigured target"] == "1"
    assert rows["breaker closed when the partner came back"] == "yes"
    attempts = int(rows["partner outage: attempts while polling"])
    reached = int(rows["partner outage: attempts that reached the kernel"])
    assert 10 <= reached < attempts  # the breaker kept the rest from the network
    # The alert names the code and the setting to fix.
    assert "Retrying code: demo_app:vpn_gate_check:" in result.stdout.replace("\n     ", " ")
    assert "environment variable VPN_GATE_URL" in result.stdout.replace("\n     ", " ")


def test_demo_in_loopback_mode(tmp_path):
    result = run_demo(tmp_path, "loopback")
    check(result, "loopback")
    assert "isolation: loopback addresses only (127.0.0.0/8)" in result.stdout


def test_demo_default_mode_isolates_when_it_can(tmp_path):
    result = run_demo(tmp_path, "auto")
    if demo._namespace_unavailable() is None:
        check(result, "namespace")
        assert "nothing can leave" in result.stdout
    else:
        check(result, "loopback")
        assert "no private namespace:" in result.stdout


def test_unknown_isolation_is_a_usage_error(tmp_path):
    result = run_demo(tmp_path, "cloud")
    assert result.returncode == 2 and "SOCKGUARD_DEMO_ISOLATION must be auto, namespace or loopback" in result.stderr
