"""Enforcement against real loopback servers: what is allowed arrives, what is
blocked raises EgressBlocked and the server on the far side counts nothing."""

from __future__ import annotations

import _socket
import asyncio
import importlib
import json
import os
import pickle
import socket
import sys
import threading

import pytest

import sockguard
from sockguard import guard
from tests.loopback import CountingTCPServer, CountingUDPServer

STRICT = {"allow_loopback": False}  # loopback stands in for "remote" hosts here


@pytest.fixture
def target():
    with CountingTCPServer("127.0.0.3") as server:
        yield server


@pytest.fixture
def allowed():
    with CountingTCPServer("127.0.0.2") as server:
        yield server


def test_ip_rule_allows_and_raw_ip_is_blocked_before_connect(allowed, target):
    with sockguard.guarded(allow=["127.0.0.2"], **STRICT):
        socket.create_connection((allowed.host, allowed.port), timeout=2).close()
        with pytest.raises(sockguard.EgressBlocked) as info:
            socket.create_connection((target.host, target.port), timeout=2)
    assert allowed.settle(1) == 1
    assert target.settle() == 0
    exc = info.value
    assert isinstance(exc, OSError)
    assert (exc.address, exc.port, exc.reason, exc.rule) == ("127.0.0.3", target.port, "raw-ip", None)
    assert exc.operation == "connect"
    assert "test_guard:test_ip_rule_allows_and_raw_ip_is_blocked_before_connect" in exc.caller
    message = str(exc)
    assert f"127.0.0.3:{target.port}" in message
    assert "raw IP" in message
    assert "test_ip_rule_allows_and_raw_ip_is_blocked_before_connect" in message
    assert f"'127.0.0.3:{target.port}'" in message  # the rule to add


def test_cidr_rule_and_port_scope(allowed, target):
    with sockguard.guarded(allow=["127.0.0.0/30"], **STRICT):
        socket.create_connection((target.host, target.port), timeout=2).close()  # 127.0.0.3 in /30
    with sockguard.guarded(allow=[f"127.0.0.2:{allowed.port}"], **STRICT):
        socket.create_connection((allowed.host, allowed.port), timeout=2).close()
        with pytest.raises(sockguard.EgressBlocked):
            socket.create_connection((target.host, target.port), timeout=2)
    assert target.settle(1) == 1
    assert allowed.settle(1) == 1


def test_deny_beats_allow(target):
    with (
        sockguard.guarded(allow=["127.0.0.0/8"], deny=["127.0.0.3"], **STRICT),
        pytest.raises(sockguard.EgressBlocked) as info,
    ):
        socket.create_connection((target.host, target.port), timeout=2)
    assert info.value.reason == "denied" and info.value.rule == "127.0.0.3"
    assert target.settle() == 0


FULLWIDTH_127_0_0_3 = "\uff11\uff12\uff17.\uff10.\uff10.\uff13"  # IDNA folds these digits to ASCII


@pytest.mark.parametrize("spelling", ["2130706435", "0x7f.3", "0177.0.0.3", "127.3", "0x7f000003", FULLWIDTH_127_0_0_3])
def test_raw_ip_spellings_decide_on_the_real_address(target, spelling):
    # Blocked: no rule covers 127.0.0.3, however it is written.
    with sockguard.guarded(allow=["127.0.0.2"], **STRICT), pytest.raises(sockguard.EgressBlocked):
        socket.create_connection((spelling, target.port), timeout=2)
    assert target.settle() == 0
    # Allowed by a rule for the real address, whatever the spelling.
    with sockguard.guarded(allow=["127.0.0.3"], **STRICT):
        socket.create_connection((spelling, target.port), timeout=2).close()
    assert target.settle(1) == 1


def test_numeric_host_with_trailing_dot_is_refused(target):
    # glibc does not parse "127.0.0.3." as an address: it would go to DNS as a name.
    with sockguard.guarded(allow=["127.0.0.3"], **STRICT), pytest.raises(sockguard.EgressBlocked) as info:
        socket.create_connection(("127.0.0.3.", target.port), timeout=2)
    assert info.value.reason == "invalid-host"
    assert target.settle() == 0


def test_ipv4_mapped_ipv6_is_the_ipv4_host(target):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        with sockguard.guarded(allow=["127.0.0.2"], **STRICT), pytest.raises(sockguard.EgressBlocked):
            sock.connect(("::ffff:127.0.0.3", target.port))
    finally:
        sock.close()
    assert target.settle() == 0


def test_connect_ex_raises_instead_of_returning_an_errno(target):
    sock = socket.socket()
    try:
        with sockguard.guarded(**STRICT), pytest.raises(sockguard.EgressBlocked):
            sock.connect_ex((target.host, target.port))
    finally:
        sock.close()
    assert target.settle() == 0


def test_raw_underscore_socket_is_checked_by_the_audit_floor(target):
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        with sockguard.guarded(**STRICT), pytest.raises(sockguard.EgressBlocked):
            sock.connect((target.host, target.port))
    finally:
        sock.close()
    assert target.settle() == 0


def test_reloaded_socket_module_is_guarded_again(target):
    with sockguard.guarded(**STRICT):
        fresh = importlib.reload(socket)
        assert getattr(fresh.getaddrinfo, "__sockguard__", False)
        with pytest.raises(sockguard.EgressBlocked):
            fresh.create_connection((target.host, target.port), timeout=2)
    assert target.settle() == 0


@pytest.mark.netlab  # names: if the guard were broken, DNS must not leave the machine
def test_hostname_tuple_is_checked_before_c_resolves_it():
    sock = socket.socket()
    try:
        with sockguard.guarded(allow=["api.partner.test"]), pytest.raises(sockguard.EgressBlocked) as info:
            sock.connect(("exfil-payload.blocked.test", 80))
    finally:
        sock.close()
    assert info.value.operation == "resolve"
    assert info.value.reason == "not-allowed"
    assert info.value.host == "exfil-payload.blocked.test"


@pytest.mark.netlab  # names: if the guard were broken, DNS must not leave the machine
def test_blocked_lookups_raise_before_dns():
    with sockguard.guarded(allow=["api.partner.test"]):
        for call in (
            lambda: socket.getaddrinfo("blocked.test", 443),
            lambda: socket.gethostbyname("blocked.test"),
            lambda: socket.gethostbyname_ex("blocked.test"),
            lambda: _socket.getaddrinfo("blocked.test", 443),  # audit floor
            lambda: socket.gethostbyaddr("blocked.test"),  # a name here is a forward lookup
        ):
            with pytest.raises(sockguard.EgressBlocked) as info:
                call()
            assert info.value.reason == "not-allowed"


@pytest.mark.netlab  # names: if the guard were broken, DNS must not leave the machine
def test_nul_in_hostname_is_refused():
    with sockguard.guarded(allow=["*.allowed.test"]), pytest.raises(sockguard.EgressBlocked) as info:
        socket.getaddrinfo("evil.test\x00.allowed.test", 80)
    assert info.value.reason == "invalid-host"


def test_name_resolving_to_internal_address_needs_an_ip_rule(allowed):
    # "localhost" resolves (hosts file) to 127.0.0.1: internal, so a name rule
    # alone is not enough once loopback is not allowed by default.
    with sockguard.guarded(allow=["localhost"], **STRICT), pytest.raises(sockguard.EgressBlocked) as info:
        socket.getaddrinfo("localhost", 80, socket.AF_INET)
    assert info.value.reason == "internal-address"
    assert info.value.address == "127.0.0.1"
    with sockguard.guarded(allow=["localhost", "127.0.0.1"], **STRICT):
        assert socket.getaddrinfo("localhost", 80, socket.AF_INET)


def test_udp_sendto_sendmsg_and_connected_send(allowed):
    with CountingUDPServer("127.0.0.3") as blocked_udp, CountingUDPServer("127.0.0.2") as allowed_udp:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            with sockguard.guarded(allow=["127.0.0.2"], **STRICT):
                sock.sendto(b"ok", (allowed_udp.host, allowed_udp.port))
                with pytest.raises(sockguard.EgressBlocked):
                    sock.sendto(b"x", (blocked_udp.host, blocked_udp.port))
                with pytest.raises(sockguard.EgressBlocked):
                    sock.sendto(b"x", 0, (blocked_udp.host, blocked_udp.port))
                with pytest.raises(sockguard.EgressBlocked):
                    sock.sendmsg([b"x"], [], 0, (blocked_udp.host, blocked_udp.port))
                with pytest.raises(sockguard.EgressBlocked):
                    _socket.socket.sendto(sock, b"x", (blocked_udp.host, blocked_udp.port))  # floor
                other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                with pytest.raises(sockguard.EgressBlocked):
                    other.connect((blocked_udp.host, blocked_udp.port))
                other.close()
        finally:
            sock.close()
        assert allowed_udp.settle(1) == 1
        assert blocked_udp.settle() == 0


def test_monitor_mode_lets_traffic_through_and_logs_would_block(target, tmp_path):
    log = tmp_path / "decisions.jsonl"
    with sockguard.guarded(mode="monitor", log=str(log), **STRICT):
        socket.create_connection((target.host, target.port), timeout=2).close()
    assert target.settle(1) == 1
    events = [json.loads(line) for line in log.read_text().splitlines()]
    blocked = [e for e in events if e["decision"] == "would-block"]
    assert len(blocked) == 1
    event = blocked[0]
    assert event["op"] == "connect" and event["proto"] == "tcp"
    assert (event["address"], event["port"], event["reason"], event["mode"]) == (
        "127.0.0.3",
        target.port,
        "raw-ip",
        "monitor",
    )
    assert "test_monitor_mode_lets_traffic_through_and_logs_would_block" in event["caller"]


def test_decision_log_records_allows_with_caller_and_correlation_id(allowed, tmp_path):
    log = tmp_path / "decisions.jsonl"
    token = sockguard.correlation_id.set("req-42")
    try:
        with sockguard.guarded(allow=["127.0.0.2"], log=str(log), **STRICT):
            socket.create_connection((allowed.host, allowed.port), timeout=2).close()
    finally:
        sockguard.correlation_id.reset(token)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    connects = [e for e in events if e["op"] == "connect"]
    assert len(connects) == 1
    event = connects[0]
    expected_keys = {"event", "ts", "pid", "op", "proto", "host", "port", "address", "decision", "reason", "rule"}
    assert expected_keys | {"mode", "caller", "correlation_id"} <= set(event)
    assert (event["decision"], event["reason"], event["rule"]) == ("allow", "allowed-ip", "127.0.0.2")
    assert event["correlation_id"] == "req-42" and event["pid"] == os.getpid()
    assert "test_decision_log_records_allows_with_caller_and_correlation_id" in event["caller"]


def test_unwritable_log_is_reported_once_and_enforcement_continues(target, capsys):
    with sockguard.guarded(log="/proc/sockguard-no-such-dir/decisions.jsonl", **STRICT):
        for _ in range(3):
            with pytest.raises(sockguard.EgressBlocked):
                socket.create_connection((target.host, target.port), timeout=2)
    err = capsys.readouterr().err
    assert err.count("cannot open decision log") == 1
    assert "/proc/sockguard-no-such-dir/decisions.jsonl" in err
    assert target.settle() == 0


def test_threads_get_consistent_decisions(allowed, target):
    errors: list[BaseException] = []
    blocked = []

    def worker() -> None:
        try:
            for _ in range(20):
                socket.create_connection((allowed.host, allowed.port), timeout=5).close()
                try:
                    socket.create_connection((target.host, target.port), timeout=5)
                except sockguard.EgressBlocked:
                    blocked.append(1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with sockguard.guarded(allow=["127.0.0.2"], **STRICT):
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert len(blocked) == 160
    assert allowed.settle(160) == 160
    assert target.settle() == 0


@pytest.mark.netlab  # names: if the guard were broken, DNS must not leave the machine
def test_asyncio_paths(allowed, target):
    async def main() -> None:
        loop = asyncio.get_running_loop()
        _reader, writer = await asyncio.open_connection(allowed.host, allowed.port)
        writer.close()
        with pytest.raises(sockguard.EgressBlocked):
            await asyncio.open_connection(target.host, target.port)
        with pytest.raises(sockguard.EgressBlocked) as info:
            await loop.getaddrinfo("blocked.test", 80)  # resolved in the default executor
        # decided on the loop thread, where this coroutine is on the stack
        assert "test_guard:main:" in info.value.caller
        sock = socket.socket()
        sock.setblocking(False)
        with pytest.raises(sockguard.EgressBlocked):
            await loop.sock_connect(sock, (target.host, target.port))
        sock.close()
        with pytest.raises(sockguard.EgressBlocked):
            await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=(target.host, 9))

    with sockguard.guarded(allow=["127.0.0.2"], **STRICT):
        asyncio.run(main())
    assert allowed.settle(1) == 1
    assert target.settle() == 0


def test_unix_sockets_allowed_by_default_and_switchable(tmp_path):
    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    try:
        with sockguard.guarded():
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(path)
            client.close()
        with sockguard.guarded(allow_unix=False):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with pytest.raises(sockguard.EgressBlocked) as info:
                client.connect(path)
            client.close()
        assert info.value.reason == "unix-socket"
    finally:
        server.close()


def test_off_mode_and_restore(target):
    with sockguard.guarded(**STRICT):
        with sockguard.guarded(mode="off"):
            socket.create_connection((target.host, target.port), timeout=2).close()
        with pytest.raises(sockguard.EgressBlocked):
            socket.create_connection((target.host, target.port), timeout=2)
    assert target.settle(1) == 1


def test_egress_blocked_survives_pickling():
    exc = sockguard.EgressBlocked("msg", host="h.test", port=1, address=None, reason="not-allowed", rule=None)
    clone = pickle.loads(pickle.dumps(exc))
    assert (clone.host, clone.port, clone.reason, str(clone), clone.errno) == ("h.test", 1, "not-allowed", "msg", 13)


def test_bad_rule_in_api_raises_and_changes_nothing(target):
    with sockguard.guarded(**STRICT):
        before = guard.current()
        with pytest.raises(sockguard.ConfigError, match="host bits"):
            sockguard.install(allow=["10.0.0.1/8"], from_environment=False)
        assert guard.current() is before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_keeps_enforcing_and_log_lines_stay_whole(target, tmp_path):
    log = tmp_path / "fork.jsonl"
    with sockguard.guarded(log=str(log), **STRICT):
        children = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:  # child
                code = 0
                for _ in range(50):
                    try:
                        socket.create_connection((target.host, target.port), timeout=2)
                        code = 3
                    except sockguard.EgressBlocked:
                        pass
                    except BaseException:
                        code = 4
                os._exit(code)
            children.append(pid)
        statuses = [os.waitpid(pid, 0)[1] for pid in children]
    assert statuses == [0, 0, 0, 0]
    lines = log.read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line whole
    events = [e for e in events if e["event"] == "decision"]  # (the breaker may add alerts)
    assert len(events) == 200
    assert len({e["pid"] for e in events}) == 4
    assert target.settle() == 0


def test_check_api():
    with sockguard.guarded(allow=["api.partner.test:443", "*.cdn.test"], deny=["bad.cdn.test"]):
        assert sockguard.check("api.partner.test", 443).allowed
        assert not sockguard.check("api.partner.test", 80).allowed
        assert sockguard.check_url("https://API.Partner.test./v1").rule == "api.partner.test:443"
        assert not sockguard.check_url("http://api.partner.test/").allowed
        assert sockguard.check_url("https://x.y.cdn.test/").allowed
        assert sockguard.check_url("https://bad.cdn.test/").reason == "denied"
        assert sockguard.check_url("http://203.0.113.7/health").reason == "raw-ip"
        assert not sockguard.check_url("http://[::ffff:169.254.169.254]/").allowed
        assert not sockguard.check_url("not a url").allowed


def test_python_version_supported():
    assert sys.version_info >= (3, 11)
