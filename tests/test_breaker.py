"""The retry-storm breaker, the fan-out detector and the rate limit, against real loopback sockets.

Time is a fake clock (never a sleep). What reaches the network is counted from the other side: the
counting servers, an audit hook registered after sockguard's (the hooks run in order, and sockguard's
raise stops the call before the syscall), and, when the suite runs in its own network namespace, the
kernel's TCP ActiveOpens counter (one per connect() that sent a SYN).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import select
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

import sockguard
from sockguard import _hook, breaker, guard
from sockguard import alerts as alerts_module
from sockguard.breaker import Breaker
from sockguard.config import Settings, load_settings
from sockguard.errors import BreakerOpen, BreakerOpenRefused, ConfigError
from sockguard.policy import Decision
from tests import netlab
from tests.loopback import CountingTCPServer

ALLOWED = Decision(True, "loopback")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an environment proxy


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def guarded_breaker(clock, *, allow=(), allow_loopback=True, mode="enforce", log=None, own=None, **breaker_settings):
    """The guard built from settings the way the loader builds it, with the breaker on a fake clock.

    The loopback servers below stand in for remote hosts, so the breaker watches loopback here
    (``[breaker] loopback = true``) unless a test says otherwise. ``own``: this host's addresses as the
    breaker should see them (default: asked from the kernel)."""
    breaker_settings.setdefault("loopback", True)
    settings = Settings(allow=list(allow), allow_loopback=allow_loopback, mode=mode, log=log, breaker=breaker_settings)
    state = guard.state_from_settings(settings)
    state.breaker.clock = clock
    if own is not None:
        state.breaker.own_addresses = lambda: frozenset(own)
    with guard.applied(state):
        yield state.breaker


# -- counting what reaches the kernel ------------------------------------------------------------

_hook.install_audit_hook()  # sockguard's hook first, so ours only sees what it let through
_passed: dict[tuple[str, int], int] = {}
_counting = {"on": False}


def _count_connects(event, args):
    if event == "socket.connect" and _counting["on"] and type(args[1]) is tuple:
        key = (args[1][0], args[1][1])
        _passed[key] = _passed.get(key, 0) + 1


sys.addaudithook(_count_connects)


def _active_opens() -> int | None:
    if not netlab.only_loopback():  # host-wide counters would include everyone else's connections
        return None
    with open("/proc/net/snmp") as f:
        header, values = [line.split() for line in f if line.startswith("Tcp:")]
    return int(values[header.index("ActiveOpens")])


class Kernel:
    def __init__(self) -> None:
        _passed.clear()
        _counting["on"] = True
        self.opens = _active_opens()

    def passed(self, host: str | None = None, port: int | None = None) -> int:
        """connect() calls that got past sockguard (to one destination, or all)."""
        if host is None:
            return sum(_passed.values())
        return _passed.get((host, port), 0)

    def check_syns(self, expected: int) -> None:
        """The kernel's own count agrees, when the suite runs isolated."""
        if self.opens is not None:
            assert _active_opens() - self.opens == expected


@pytest.fixture
def kernel():
    yield Kernel()
    _counting["on"] = False


@pytest.fixture
def alerts():
    received: list[dict] = []
    sockguard.on_alert(received.append)
    yield received
    alerts_module.remove_alert_callback(received.append)


def closed_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def connect(host: str, port: int, timeout: float = 2.0) -> None:
    with socket.socket() as s:
        s.settimeout(timeout)
        s.connect((host, port))


def vpn_gate_check() -> int:
    """The application's health check, as in the incident."""
    with OPENER.open(os.environ["VPN_GATE_URL"], timeout=2) as response:
        return response.status


# -- the incident, replayed --------------------------------------------------------------------


def test_incident_replay_raw_ip_health_check(tmp_path, monkeypatch, alerts, kernel, caplog):
    log = tmp_path / "decisions.jsonl"
    clock = FakeClock()
    with CountingTCPServer("127.0.0.66") as target:
        monkeypatch.setenv("VPN_GATE_URL", f"http://127.0.0.66:{target.port}/health")
        with guarded_breaker(clock, allow_loopback=False, log=str(log)):
            for attempt in range(24):  # two minutes of retries, every 5 s
                with pytest.raises(urllib.error.URLError) as info:
                    vpn_gate_check()
                blocked = info.value.reason
                assert isinstance(blocked, sockguard.EgressBlocked)
                assert blocked.errno == errno.EACCES and not isinstance(blocked, ConnectionError)
                if attempt < 10:
                    assert blocked.reason == "raw-ip"
                else:  # the breaker has tripped; the policy's reason stays in the message
                    assert blocked.reason == "breaker-open"
                    assert isinstance(blocked, BreakerOpen)  # still EACCES: it is the policy that refuses
                    assert "raw IP address not covered" in str(blocked)
                clock.advance(5)
        assert target.settle() == 0
    assert kernel.passed() == 0
    kernel.check_syns(0)

    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert["event"], alert["reason"], alert["state"]) == ("alert", "retry-storm", "firing")
    assert (alert["address"], alert["port"], alert["count"]) == ("127.0.0.66", target.port, 10)
    assert alert["caller"].startswith("tests.test_breaker:vpn_gate_check:")
    assert alert["settings"] == ["VPN_GATE_URL"]
    message = alert["message"]
    assert "no packet was sent" in message and "tests.test_breaker:vpn_gate_check:" in message
    assert "environment variable VPN_GATE_URL" in message

    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in events].count("alert") == 1
    blocks = [e for e in events if e["event"] == "decision" and e["op"] == "connect" and e["decision"] == "block"]
    assert len(blocks) == 24
    errors = [r for r in caplog.records if r.name == "sockguard" and r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [message]


# -- the breaker --------------------------------------------------------------------------------


def test_retry_storm_against_an_allowlisted_port_with_nothing_listening(alerts, kernel):
    port = closed_port()
    clock = FakeClock()
    with guarded_breaker(clock):  # loopback is allowed
        for _ in range(10):
            with pytest.raises(ConnectionRefusedError):
                connect("127.0.0.1", port)
            clock.advance(1)
        assert kernel.passed("127.0.0.1", port) == 10
        for _ in range(20):  # open: fail fast, nothing reaches the kernel
            with pytest.raises(sockguard.EgressBlocked) as info:
                connect("127.0.0.1", port)
            # the class and errno of the failure it stands in for: retry code that catches it keeps working
            assert isinstance(info.value, ConnectionRefusedError) and info.value.errno == errno.ECONNREFUSED
            assert type(info.value) is BreakerOpenRefused and info.value.reason == "breaker-open"
            assert info.value.suggestion is None
            clock.advance(0.2)
        assert "circuit breaker open for 127.0.0.1" in str(info.value)
        assert "connection refused" in str(info.value)
        assert kernel.passed("127.0.0.1", port) == 10
        kernel.check_syns(10)

        clock.advance(1.5)  # the 5 s cooldown is over: one probe goes through, fails, reopens for 10 s
        with pytest.raises(ConnectionRefusedError):
            connect("127.0.0.1", port)
        assert kernel.passed("127.0.0.1", port) == 11
        clock.advance(9)
        with pytest.raises(sockguard.EgressBlocked):
            connect("127.0.0.1", port)
        clock.advance(1.5)
        with CountingTCPServer("127.0.0.1", port) as server:  # the service appears: the probe closes it
            for _ in range(6):
                connect("127.0.0.1", port)
            assert server.settle(6) == 6
        assert kernel.passed("127.0.0.1", port) == 17
        kernel.check_syns(17)
    assert [(a["reason"], a["state"]) for a in alerts] == [("retry-storm", "firing"), ("retry-storm", "resolved")]
    assert "10 connection attempts in 9 s failed (connection refused)" in alerts[0]["message"]


def test_cooldown_doubles_after_each_failed_probe_up_to_the_cap():
    clock = FakeClock()
    b = Breaker(threshold=3, cooldown=5, max_cooldown=20, clock=clock, loopback=True)
    key = ("127.0.0.1", 9)
    for _ in range(3):
        assert b.before_connect(*key, ALLOWED).allowed
        b.failed(key, errno.ECONNREFUSED)
    waits = []
    for _ in range(5):
        opened = clock.now
        while not b.before_connect(*key, ALLOWED).allowed:
            clock.advance(1)
        waits.append(clock.now - opened)
        b.failed(key, errno.ECONNREFUSED)  # the probe fails
    assert waits == [5, 10, 20, 20, 20]


def test_a_probe_that_never_reports_counts_as_failed():
    clock = FakeClock()
    b = Breaker(threshold=2, cooldown=5, max_cooldown=60, clock=clock, loopback=True)
    key = ("127.0.0.1", 9)
    for _ in range(2):
        b.before_connect(*key, ALLOWED)
        b.failed(key, errno.ETIMEDOUT)
    clock.advance(5)
    assert b.before_connect(*key, ALLOWED).allowed  # the probe; its outcome is never seen
    assert b.before_connect(*key, ALLOWED).reason == "breaker-open"  # one probe at a time
    clock.advance(5)
    refused = b.before_connect(*key, ALLOWED)
    assert refused.reason == "breaker-open" and "next probe in 10 s" in refused.detail
    clock.advance(10)
    assert b.before_connect(*key, ALLOWED).allowed


def test_a_success_resets_the_run_of_failures(alerts):
    port = closed_port()
    clock = FakeClock()
    with guarded_breaker(clock):
        for _round in range(3):  # 9 failures, then one success: never 10 in a row
            for _ in range(9):
                with pytest.raises(ConnectionRefusedError):
                    connect("127.0.0.1", port)
                clock.advance(1)
            with CountingTCPServer("127.0.0.1", port):
                connect("127.0.0.1", port)
        assert alerts == []
        for _ in range(10):
            with pytest.raises(ConnectionRefusedError):
                connect("127.0.0.1", port)
    assert [a["state"] for a in alerts] == ["firing"]


def test_failures_spread_wider_than_the_window_never_trip(alerts):
    port = closed_port()
    clock = FakeClock()
    with guarded_breaker(clock, threshold=10, window=300):
        for _ in range(40):  # one every 40 s: at most 8 in any 300 s
            with pytest.raises(ConnectionRefusedError):
                connect("127.0.0.1", port)
            clock.advance(40)
        assert alerts == []
        for _ in range(10):  # one every 30 s: 10 within 270 s
            with pytest.raises(ConnectionRefusedError):
                connect("127.0.0.1", port)
            clock.advance(30)
    assert len(alerts) == 1


def test_connect_ex_errno_and_timeouts_count_as_failures(alerts):
    clock = FakeClock()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        while True:  # fill the accept queue (no guard yet): from then on SYNs are dropped, connects time out
            filler = socket.socket()
            filler.settimeout(0.2)
            fillers.append(filler)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        try:
            with guarded_breaker(clock, threshold=3):
                with socket.socket() as s:
                    s.settimeout(0.2)
                    with pytest.raises(TimeoutError):
                        s.connect(("127.0.0.1", port))
                with socket.socket() as s:
                    s.settimeout(0.2)
                    assert s.connect_ex(("127.0.0.1", port)) == errno.EAGAIN  # CPython's timeout from connect_ex
                refused = closed_port()
                with socket.socket() as s:
                    assert s.connect_ex(("127.0.0.1", refused)) == errno.ECONNREFUSED
                assert alerts == []  # two destinations: 2 timeouts on one, 1 refusal on the other
                with socket.socket() as s:
                    s.settimeout(0.2)
                    with pytest.raises(TimeoutError):
                        s.connect(("127.0.0.1", port))
                with socket.socket() as s, pytest.raises(sockguard.EgressBlocked) as info:
                    s.connect_ex(("127.0.0.1", port))  # the audit hook raises even from connect_ex
                assert isinstance(info.value, TimeoutError) and info.value.errno == errno.ETIMEDOUT
        finally:
            for filler in fillers:
                filler.close()
    assert len(alerts) == 1 and "(connection timed out)" in alerts[0]["message"]


def test_non_blocking_connect_outcome_is_read_from_so_error(alerts, kernel):
    port = closed_port()
    clock = FakeClock()
    with guarded_breaker(clock, threshold=3) as b:
        for _ in range(3):
            with socket.socket() as s:
                s.setblocking(False)
                with pytest.raises(BlockingIOError):  # loopback answers later: EINPROGRESS now
                    s.connect(("127.0.0.1", port))
                assert b.pending  # the outcome is awaited
                select.select([], [s], [], 5)
                assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
        assert not b.pending
        with socket.socket() as s, pytest.raises(sockguard.EgressBlocked):
            s.setblocking(False)
            s.connect(("127.0.0.1", port))
    assert kernel.passed() == 3
    assert len(alerts) == 1


def test_asyncio_connects_trip_and_recover_through_so_error(alerts, kernel):
    port = closed_port()
    clock = FakeClock()

    async def attempts(n):
        for _ in range(n):
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)

    async def blocked():
        with pytest.raises(sockguard.EgressBlocked) as info:
            await asyncio.open_connection("127.0.0.1", port)
        return info.value

    async def succeeds():
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()

    with guarded_breaker(clock):
        asyncio.run(attempts(10))
        assert asyncio.run(blocked()).reason == "breaker-open"
        assert kernel.passed() == 10
        clock.advance(5)
        with CountingTCPServer("127.0.0.1", port) as server:
            asyncio.run(succeeds())  # the probe succeeds: SO_ERROR 0 closes the breaker
            asyncio.run(succeeds())
            assert server.settle(2) == 2
    assert [a["state"] for a in alerts] == ["firing", "resolved"]
    # The failures were read from SO_ERROR in loop callbacks; the alert names the coroutine that retried.
    assert alerts[0]["caller"].startswith("tests.test_breaker:attempts:")
    assert "Retrying code: tests.test_breaker:attempts:" in alerts[0]["message"]


def test_blocked_lookups_of_a_misconfigured_name_alert_once(alerts, monkeypatch):
    monkeypatch.setenv("PARTNER_URL", "https://misconfigured.example.test/api")
    clock = FakeClock()
    with guarded_breaker(clock, allow=["api.partner.test"]):
        for _ in range(15):
            with pytest.raises(sockguard.EgressBlocked):
                socket.getaddrinfo("misconfigured.example.test", 443)
            clock.advance(5)
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert["op"], alert["host"], alert["port"]) == ("resolve", "misconfigured.example.test", 443)
    assert "no DNS query was sent" in alert["message"] and alert["settings"] == ["PARTNER_URL"]


def test_monitor_mode_alerts_without_blocking(alerts):
    clock = FakeClock()
    with CountingTCPServer("127.0.0.66") as target:
        with guarded_breaker(clock, allow_loopback=False, mode="monitor"):
            for _ in range(12):
                socket.create_connection((target.host, target.port), timeout=2).close()
                clock.advance(5)
        assert target.settle(12) == 12
    assert len(alerts) == 1 and "monitor mode" in alerts[0]["message"]


# -- loopback and this host's own addresses: nothing to get reported for ---------------------------


def wait_for_server(host: str, port: int, on_refused, *, attempts: int = 200, pause: float = 0.05) -> float:
    """A "wait until the local server is up" loop as applications write it: it catches exactly
    ConnectionRefusedError (anything else escapes) and returns when it connected."""
    for _ in range(attempts):
        try:
            connect(host, port)
            return time.monotonic()
        except ConnectionRefusedError as exc:
            on_refused(exc)
            time.sleep(pause)
    raise AssertionError("the server never became reachable")


def test_a_wait_for_server_loop_on_loopback_is_left_alone_by_default(alerts, kernel):
    port = closed_port()
    refused: list[BaseException] = []
    server: list[CountingTCPServer] = []
    started: list[float] = []

    def on_refused(exc):
        refused.append(exc)
        if len(refused) == 15:  # the server comes up after 15 refusals (well past the threshold of 10)
            server.append(CountingTCPServer("127.0.0.1", port).__enter__())
            started.append(time.monotonic())

    state = guard.state_from_settings(Settings(allow_loopback=True))  # every default: the breaker is on
    assert state.breaker is not None and state.breaker.loopback is False
    try:
        with guard.applied(state):
            connected = wait_for_server("127.0.0.1", port, on_refused)
        assert server[0].settle(1) == 1
    finally:
        for s in server:
            s.close()
    assert len(refused) == 15
    assert {type(e) for e in refused} == {ConnectionRefusedError}  # the kernel's own error, not sockguard's
    assert connected - started[0] < 0.5  # the breaker would have held it back for its 5 s cooldown
    assert kernel.passed("127.0.0.1", port) == 16
    kernel.check_syns(16)
    assert alerts == [] and state.breaker.dests == {}


def test_breaker_loopback_true_fails_fast_with_the_class_the_loop_expects(alerts, kernel):
    port = closed_port()
    clock = FakeClock()
    refused: list[BaseException] = []
    server: list[CountingTCPServer] = []

    def on_refused(exc):
        refused.append(exc)
        clock.advance(0.5)
        if len(refused) == 15:
            server.append(CountingTCPServer("127.0.0.1", port).__enter__())

    try:
        with guarded_breaker(clock, loopback=True):
            wait_for_server("127.0.0.1", port, on_refused, pause=0)
        assert server[0].settle(1) == 1
    finally:
        for s in server:
            s.close()
    # 10 real refusals, then the open breaker failed fast until its 5 s cooldown let a probe through
    real, fast = refused[:10], refused[10:]
    assert {type(e) for e in real} == {ConnectionRefusedError}
    assert fast and {type(e) for e in fast} == {BreakerOpenRefused}
    for exc in fast:
        assert isinstance(exc, sockguard.EgressBlocked) and exc.errno == errno.ECONNREFUSED
        assert exc.reason == "breaker-open" and "circuit breaker open for 127.0.0.1" in str(exc)
    assert kernel.passed("127.0.0.1", port) == 11  # 10 refusals + the probe that connected
    kernel.check_syns(11)
    assert [a["state"] for a in alerts] == ["firing", "resolved"]


@pytest.mark.netlab
def test_a_tripped_breaker_keeps_the_failure_class_for_a_remote_address(alerts, kernel):
    """198.51.100.10 stands in for a remote host: on the lab's lo, but not one of "this host's" addresses as
    the breaker is told here; the default settings apply ([breaker] loopback = false)."""
    host = netlab.REMOTE_V4[0]
    port = closed_port(host)
    clock = FakeClock()
    with guarded_breaker(clock, allow=[host], allow_loopback=False, loopback=False, own=()) as b:
        assert not b.exempt(host)
        for _ in range(10):
            with pytest.raises(ConnectionRefusedError) as info:
                connect(host, port)
            assert type(info.value) is ConnectionRefusedError
            clock.advance(1)
        with pytest.raises(ConnectionRefusedError) as info:
            connect(host, port)
        assert type(info.value) is BreakerOpenRefused and info.value.errno == errno.ECONNREFUSED
        assert info.value.address == host and info.value.port == port and info.value.reason == "breaker-open"
    assert kernel.passed(host, port) == 10
    kernel.check_syns(10)
    assert [(a["reason"], a["address"]) for a in alerts] == [("retry-storm", host)]


@pytest.mark.netlab
def test_this_hosts_own_addresses_come_from_the_kernel_and_are_exempt(alerts, kernel):
    from sockguard import host_addresses
    from sockguard.addresses import parse_address

    own = host_addresses.own_addresses()
    for text in ("127.0.0.1", "::1", *netlab.REMOTE_V4, *netlab.REMOTE_V6):
        assert parse_address(text) in own, text
    assert parse_address(netlab.UNROUTED_V4) not in own and parse_address(netlab.UNROUTED_V6) not in own

    b = Breaker(clock=FakeClock())
    for host in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::", netlab.REMOTE_V4[0]):
        assert b.exempt(host), host
    for host in (netlab.UNROUTED_V4, netlab.UNROUTED_V6, "api.partner.test", b"127.0.0.1"):
        assert not b.exempt(host), host
    assert not Breaker(loopback=True).exempt("127.0.0.1")

    host = netlab.REMOTE_V4[1]  # one of this host's addresses: a storm against it stays the kernel's business
    port = closed_port(host)
    clock = FakeClock()
    with guarded_breaker(clock, allow=[host], loopback=False):
        for _ in range(30):
            with pytest.raises(ConnectionRefusedError) as info:
                connect(host, port)
            assert type(info.value) is ConnectionRefusedError
            clock.advance(1)
    assert kernel.passed(host, port) == 30 and alerts == []


def test_own_addresses_are_asked_again_after_a_sweep():
    calls: list[int] = []

    def own():
        calls.append(1)
        return frozenset({(4, 0xC6336464)} if len(calls) == 1 else ())  # 198.51.100.100, then gone

    clock = FakeClock()
    b = Breaker(clock=clock, own_addresses=own)
    b.failed(("203.0.113.5", 80), errno.ECONNREFUSED)  # a remote failure: the first sweep, the first question
    assert b.exempt("198.51.100.100") and len(calls) == 1
    clock.advance(30)
    b.failed(("198.51.100.100", 80), errno.ECONNREFUSED)  # ours: not counted, not asked again
    assert ("198.51.100.100", 80) not in b.watched and len(calls) == 1
    clock.advance(31)  # a sweep period later the address has moved to another host: watched again
    b.failed(("198.51.100.100", 80), errno.ECONNREFUSED)
    assert len(calls) == 2 and ("198.51.100.100", 80) in b.watched


def test_many_loopback_servers_raise_no_scan_alert_by_default(alerts):
    ports: set[int] = set()
    while len(ports) < 60:
        ports.add(closed_port())
    clock = FakeClock()
    with guarded_breaker(clock, loopback=False):  # as a test suite with a server per test sees it
        for port in sorted(ports):
            with pytest.raises(ConnectionRefusedError):
                connect("127.0.0.1", port)
        for i in range(1, 150):
            with pytest.raises(ConnectionRefusedError):
                connect(f"127.0.1.{i}", min(ports))
    assert alerts == []


# -- fan-out ------------------------------------------------------------------------------------


def test_fan_out_across_200_loopback_addresses_raises_exactly_one_alert(alerts, kernel):
    port = closed_port()
    clock = FakeClock()
    with guarded_breaker(clock):
        for i in range(1, 201):
            with pytest.raises(ConnectionRefusedError):
                connect(f"127.0.0.{i}", port)
            clock.advance(0.1)
    assert kernel.passed() == 200  # alert mode (the default) blocks nothing
    kernel.check_syns(200)
    assert len(alerts) == 1
    assert (alerts[0]["reason"], alerts[0]["state"], alerts[0]["address"]) == ("scan-pattern", "firing", "127.0.0.101")
    assert "101 distinct destinations attempted within 60 s (limit fanout_addresses = 100)" in alerts[0]["message"]


def test_fan_out_in_block_mode_refuses_new_destinations_only(alerts, kernel):
    port = closed_port()
    clock = FakeClock()
    with CountingTCPServer("127.0.0.1") as known, guarded_breaker(clock, fanout_action="block", fanout_cooldown=300):
        connect(known.host, known.port)  # in use before the scan
        for i in range(2, 201):
            if i <= 100:
                with pytest.raises(ConnectionRefusedError):
                    connect(f"127.0.0.{i}", port)
            else:
                with pytest.raises(sockguard.EgressBlocked) as info:
                    connect(f"127.0.0.{i}", port)
                assert info.value.reason == "scan-pattern"
            clock.advance(0.1)
        assert kernel.passed() == 100  # the known server + 99 addresses; none after the alert
        kernel.check_syns(100)
        connect(known.host, known.port)  # a destination in use keeps working
        assert known.settle(2) == 2

        clock.advance(60 + 300 + 1)  # the pattern stopped, the window drained, the cooldown passed
        with pytest.raises(ConnectionRefusedError):
            connect("127.0.0.250", port)
    assert [(a["reason"], a["state"]) for a in alerts] == [("scan-pattern", "firing"), ("scan-pattern", "resolved")]


def test_fan_out_across_ports_on_one_address(alerts):
    ports: set[int] = set()
    while len(ports) < 60:
        ports.add(closed_port())
    clock = FakeClock()
    with guarded_breaker(clock):
        for port in sorted(ports):
            with pytest.raises(ConnectionRefusedError):
                connect("127.0.0.1", port)
    assert len(alerts) == 1
    assert "51 ports on 127.0.0.1 attempted within 60 s (limit fanout_ports = 50)" in alerts[0]["message"]


# -- rate limit -------------------------------------------------------------------------------


def test_rate_limit_is_a_token_bucket_per_destination(alerts):
    clock = FakeClock()
    with CountingTCPServer() as server, guarded_breaker(clock, rate=2, burst=3):
        for _ in range(3):
            connect(server.host, server.port)
        for _ in range(2):
            with pytest.raises(sockguard.EgressBlocked) as info:
                connect(server.host, server.port)
            assert info.value.reason == "rate-limited"
        clock.advance(0.5)  # one token back
        connect(server.host, server.port)
        with pytest.raises(sockguard.EgressBlocked):
            connect(server.host, server.port)
        assert server.settle(4) == 4
    assert [(a["reason"], a["state"]) for a in alerts] == [("rate-limit", "firing")]


# -- concurrency, fork, memory ------------------------------------------------------------------


def test_threads_hammering_one_dead_port_raise_one_alert(alerts, kernel):
    port = closed_port()
    clock = FakeClock()
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def worker():
        start.wait()
        for _ in range(25):
            try:
                connect("127.0.0.1", port)
            except sockguard.EgressBlocked:
                outcomes.append("fast")
            except ConnectionRefusedError:
                outcomes.append("refused")

    with guarded_breaker(clock):
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert len(outcomes) == 200
    assert 10 <= outcomes.count("refused") == kernel.passed() <= 10 + 8  # the race: one in flight per thread
    assert len(alerts) == 1


def test_a_known_destination_never_waits_for_the_lock():
    clock = FakeClock()
    done = threading.Event()
    with CountingTCPServer() as server, guarded_breaker(clock) as b:
        connect(server.host, server.port)  # known from now on
        held, release = threading.Event(), threading.Event()

        def holder():
            with b._lock:
                held.set()
                release.wait(10)

        def client():
            connect(server.host, server.port)
            done.set()

        threading.Thread(target=holder).start()
        held.wait(5)
        worker = threading.Thread(target=client)
        worker.start()
        worker.join(5)
        finished = done.is_set()
        release.set()
        worker.join(5)
    assert finished


def test_forked_child_gets_a_usable_breaker_even_if_a_thread_held_the_lock():
    b = Breaker(clock=FakeClock(), threshold=1, loopback=True)
    held, release = threading.Event(), threading.Event()

    def holder():
        with b._lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: the lock's owner does not exist here
        try:
            b.failed(("127.0.0.1", 9), errno.ECONNREFUSED)
            os._exit(0 if b.before_connect("127.0.0.1", 9, ALLOWED).reason == "breaker-open" else 3)
        except BaseException:
            os._exit(4)
    release.set()
    thread.join()
    for _ in range(500):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child deadlocked on the breaker lock")
    assert os.waitstatus_to_exitcode(status) == 0


def test_memory_is_bounded_and_idle_destinations_expire():
    clock = FakeClock()
    b = Breaker(clock=clock, loopback=True)
    for i in range(20000):
        b.before_connect(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 443, ALLOWED)
        clock.advance(0.001)
    assert len(b.dests) <= breaker._MAX_DESTINATIONS
    assert len(b._addresses.last) <= breaker._MAX_DISTINCT and len(b._ports) <= breaker._MAX_DISTINCT
    clock.advance(3600)
    b.before_connect("10.255.0.1", 443, ALLOWED)
    assert list(b.dests) == [("10.255.0.1", 443)] and list(b._ports) == ["10.255.0.1"]


def test_a_failing_callback_does_not_stop_enforcement_or_other_callbacks(alerts):
    def broken(event):
        raise RuntimeError("pager down")

    sockguard.on_alert(broken)
    port = closed_port()
    try:
        with guarded_breaker(FakeClock(), threshold=2):
            for _ in range(2):
                with pytest.raises(ConnectionRefusedError):
                    connect("127.0.0.1", port)
            with pytest.raises(sockguard.EgressBlocked):
                connect("127.0.0.1", port)
    finally:
        alerts_module.remove_alert_callback(broken)
    assert len(alerts) == 1


# -- configuration --------------------------------------------------------------------------------


def test_on_by_default_with_the_documented_defaults():
    b = guard.state_from_settings(Settings()).breaker
    assert b is not None
    assert (b.threshold, b.window, b.cooldown, b.max_cooldown) == (10, 300, 5, 300)
    assert (b.fanout_addresses, b.fanout_ports, b.fanout_window, b.fanout_action) == (100, 50, 60, "alert")
    assert b.rate == 0 and b.loopback is False
    assert guard.state_from_settings(Settings(mode="off")).breaker is None


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"threshold": -1}, "breaker.threshold must be a whole number >= 0 (0 turns the check off), got -1"),
        ({"threshold": True}, "breaker.threshold must be a whole number >= 0"),
        ({"window": 0}, "breaker.window must be a number of seconds > 0, got 0"),
        ({"fanout_action": "page"}, 'breaker.fanout_action must be "alert" or "block", got \'page\''),
        ({"enabled": "maybe"}, "breaker.enabled must be true/false (or on/off, 1/0), got 'maybe'"),
        ({"burst": 0}, "breaker.burst must be a whole number >= 1, got 0"),
        ({"loopback": "sometimes"}, "breaker.loopback must be true/false (or on/off, 1/0), got 'sometimes'"),
        ({"thresold": 3}, "unknown key 'breaker.thresold' (known: enabled, threshold,"),
    ],
)
def test_bad_breaker_settings_name_the_key_and_value(tmp_path, table, expected):
    lines = [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    (tmp_path / "sockguard.toml").write_text("[breaker]\n" + "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings({}, str(tmp_path))
    assert expected in str(info.value)
    assert str(tmp_path / "sockguard.toml") in str(info.value)


def test_cooldown_cap_below_the_cooldown_is_an_error():
    with pytest.raises(ConfigError, match=r"breaker.max_cooldown \(10\) must be at least breaker.cooldown \(30\)"):
        guard.state_from_settings(Settings(breaker={"cooldown": 30, "max_cooldown": 10}))


def test_a_broken_breaker_table_fails_closed(unconfigured):
    (unconfigured / "sockguard.toml").write_text('[breaker]\nfanout_action = "page"\n')
    state = guard._load_from_environment()
    assert state.error is not None and "breaker.fanout_action" in state.error
    assert not state.address("127.0.0.1", 80).allowed


def test_toml_and_environment(tmp_path):
    (tmp_path / "sockguard.toml").write_text('[breaker]\nthreshold = 3\nfanout_action = "block"\nrate = 2.5\n')
    environ = {"SOCKGUARD_BREAKER_WINDOW": "60", "SOCKGUARD_BREAKER_BURST": "4", "SOCKGUARD_BREAKER_LOOPBACK": "on"}
    settings = load_settings(environ, str(tmp_path))
    assert settings.breaker == {
        "threshold": 3, "fanout_action": "block", "rate": 2.5, "window": 60.0, "burst": 4, "loopback": True
    }  # fmt: skip
    b = guard.state_from_settings(settings).breaker
    assert (b.threshold, b.window, b.fanout_action, b.rate, b.burst, b.loopback) == (3, 60, "block", 2.5, 4, True)
    again = load_settings(settings.to_env(), str(tmp_path / "elsewhere"))  # children get the same
    assert again.breaker == settings.breaker

    off = load_settings({"SOCKGUARD_BREAKER": "off"}, str(tmp_path))
    assert guard.state_from_settings(off).breaker is None
    with pytest.raises(ConfigError, match="unknown variable SOCKGUARD_BREAKER_THRESHHOLD"):
        load_settings({"SOCKGUARD_BREAKER_THRESHHOLD": "3"}, str(tmp_path))
    with pytest.raises(ConfigError, match="SOCKGUARD_BREAKER_COOLDOWN must be a number of seconds > 0, got 'soon'"):
        load_settings({"SOCKGUARD_BREAKER_COOLDOWN": "soon"}, str(tmp_path))
