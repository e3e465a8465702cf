"""The coverage matrix's world: one allowed service, one blocked one, a redirect between them (docs/coverage.md).

Every ``tests/test_coverage_*.py`` builds the same scene in the netlab, so each cell asks the same question:
the allowed destination works, and a blocked name, a blocked raw IP and a redirect from the allowed host to
the blocked one all raise the client's own error wrapping ``EgressBlocked`` while the blocked side counts no
connection, no datagram and no DNS query.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import sockguard
from sockguard import testing
from tests.netlab import Lab, TcpServer, UdpServer

ALLOWED_NAME = "api.allowed.test"  # A 198.51.100.10, AAAA 2001:db8::10
REDIRECT_NAME = "redirect.allowed.test"  # A 198.51.100.11: 302 to http://blocked.test/
WS_NAME = "ws.allowed.test"  # A 198.51.100.12 (a WebSocket server in the test process)
BLOCKED_NAME = "blocked.test"  # A 203.0.113.10, AAAA 2001:db8::11
BLOCKED_V4 = "203.0.113.10"
BLOCKED_V6 = "2001:db8::11"
ALLOWED_V4 = "198.51.100.10"
ALLOWED_V6 = "2001:db8::10"
UDP_PORT = 5353
ALLOW = [ALLOWED_NAME, REDIRECT_NAME, WS_NAME]
#: loopback is not allowed: the lab DNS server (127.0.0.53) is then a destination like any other
POLICY: dict[str, Any] = {"allow": ALLOW, "allow_loopback": False}

SCENARIOS = ("allowed", "blocked-name", "blocked-raw-ip", "redirect-to-blocked")
SITE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sitecustomize")


@dataclasses.dataclass
class Scene:
    lab: Lab
    allowed: TcpServer
    allowed_v6: TcpServer
    redirect: TcpServer
    blocked: TcpServer
    blocked_v6: TcpServer
    allowed_udp: UdpServer
    blocked_udp: UdpServer
    blocked_udp_v6: UdpServer

    def url(self, scenario: str, scheme: str = "http") -> str:
        host = {
            "allowed": ALLOWED_NAME,
            "blocked-name": BLOCKED_NAME,
            "blocked-raw-ip": BLOCKED_V4,
            "redirect-to-blocked": REDIRECT_NAME,
        }[scenario]
        return f"{scheme}://{host}/"

    def blocked_side(self) -> dict[str, int]:
        """Everything that reached the blocked side: must stay all zero in every blocked cell."""
        return {
            "tcp": self.blocked.accepted + self.blocked_v6.accepted,
            "udp": self.blocked_udp.datagrams + self.blocked_udp_v6.datagrams,
            "dns": self.lab.dns.queries(BLOCKED_NAME),
        }

    def assert_blocked_side_untouched(self) -> None:
        assert self.blocked_side() == {"tcp": 0, "udp": 0, "dns": 0}


def build_scene(lab: Lab) -> Scene:
    lab.dns.set(ALLOWED_NAME, A=[ALLOWED_V4], AAAA=[ALLOWED_V6])
    lab.dns.set(REDIRECT_NAME, A=["198.51.100.11"])
    lab.dns.set(WS_NAME, A=["198.51.100.12"])
    lab.dns.set(BLOCKED_NAME, A=[BLOCKED_V4], AAAA=[BLOCKED_V6])
    return Scene(
        lab=lab,
        allowed=lab.tcp(ALLOWED_V4, 80, http=True, body="hello"),
        allowed_v6=lab.tcp(ALLOWED_V6, 80, http=True, body="hello"),
        redirect=lab.tcp("198.51.100.11", 80, redirect_to=f"http://{BLOCKED_NAME}/"),
        blocked=lab.tcp(BLOCKED_V4, 80, http=True, body="leaked"),
        blocked_v6=lab.tcp(BLOCKED_V6, 80, http=True, body="leaked"),
        allowed_udp=lab.udp(ALLOWED_V4, UDP_PORT),
        blocked_udp=lab.udp(BLOCKED_V4, UDP_PORT),
        blocked_udp_v6=lab.udp(BLOCKED_V6, UDP_PORT),
    )


@pytest.fixture(name="scene")
def scene_fixture(netlab: Lab) -> Iterator[Scene]:
    """The scene, with the guard's address-to-name memory emptied so that "allowed" cannot lean on an
    address another test resolved: each client must resolve (and be admitted) through its own path."""
    testing.reset()
    yield build_scene(netlab)


def egress_blocked(exc: BaseException | None) -> sockguard.EgressBlocked | None:
    """The EgressBlocked inside a client's error, wherever that client keeps it."""
    stack: list[Any] = [exc]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, sockguard.EgressBlocked):
            return item
        stack += [item.__cause__, item.__context__, getattr(item, "reason", None), getattr(item, "os_error", None)]
        stack += list(getattr(item, "exceptions", ()))  # ExceptionGroup (trio, anyio)
        stack += [a for a in item.args if isinstance(a, BaseException)]
        errors = (getattr(item, "kwargs", None) or {}).get("errors") if hasattr(item, "kwargs") else None
        for entry in errors or ():  # dnspython NoNameservers: (server, tcp, port, exception, answer)
            stack += [x for x in entry if isinstance(x, BaseException)]
    return None


def assert_wraps_block(exc: BaseException, *expected: type[BaseException]) -> sockguard.EgressBlocked:
    """``exc`` is the client's own error type (one of ``expected``) and carries an EgressBlocked."""
    assert isinstance(exc, expected), f"{type(exc).__name__} is not the client's error type {expected}: {exc!r}"
    blocked = egress_blocked(exc)
    assert blocked is not None, f"no EgressBlocked inside {exc!r}"
    return blocked


# -- guarded children (gevent, uvloop: they change process-wide state) -------------------------------


def guarded_env(**extra: str) -> dict[str, str]:
    """A child guarded from start-up like production: the sitecustomize on PYTHONPATH, policy in SOCKGUARD_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOCKGUARD_", "GEVENT"))}
    env.update(PYTHONPATH=SITE_DIR, SOCKGUARD_ALLOW=",".join(ALLOW), SOCKGUARD_ALLOW_LOOPBACK="0")
    env.update(extra)
    return env


def run_child(code: str, env: dict[str, str], timeout: float = 60) -> dict[str, Any]:
    """Run ``code`` in a guarded child; its last stdout line is a JSON object of results."""
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def run_stepped_child(
    code: str,
    env: dict[str, str],
    snapshot: Callable[[], dict[str, Any]],
    timeout: float = 60,
    *,
    argv: list[str] | None = None,
    cwd: str | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Like run_child, but the child calls ``step(name)`` after each scenario and waits while the far side's
    counts are read, so every scenario gets its own counts: ``(results, {step: snapshot after it})``. ``argv``
    replaces ``python -c code`` (a child started through ``sockguard run``)."""
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            argv or [sys.executable, "-c", code],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        steps: dict[str, dict[str, Any]] = {}
        results: dict[str, Any] | None = None
        try:
            assert proc.stdout is not None and proc.stdin is not None
            for line in proc.stdout:
                message = json.loads(line)
                if "step" in message:
                    steps[message["step"]] = snapshot()
                    proc.stdin.write("\n")
                    proc.stdin.flush()
                else:
                    results = message
            proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0 or results is None:
            errors.seek(0)
            raise AssertionError(f"child failed ({proc.returncode}):\n{errors.read()[-3000:]}")
    return results, steps


#: Prepended to child programs: runs each scenario and reports the error chain it raised.
CHILD_PRELUDE = '''
import json, sys

def chain(exc):
    """Type names along the error, and whether an EgressBlocked is inside."""
    names, stack, seen, blocked = [], [exc], set(), False
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        names.append(type(item).__name__)
        blocked = blocked or any(c.__name__ == "EgressBlocked" for c in type(item).__mro__)
        stack += [item.__cause__, item.__context__, getattr(item, "reason", None)]
        stack += list(getattr(item, "exceptions", ()))
        stack += [a for a in item.args if isinstance(a, BaseException)]
    return names, blocked

RESULTS = {}

def step(name):
    """Let the parent read the far side's counts for this scenario."""
    print(json.dumps({"step": name}), flush=True)
    sys.stdin.readline()

def cell(label, function):
    try:
        RESULTS[label] = {"ok": True, "value": repr(function())[:200]}
    except BaseException as exc:
        names, blocked = chain(exc)
        RESULTS[label] = {"ok": False, "error": names, "blocked": blocked, "message": str(exc)[:300]}
'''
