"""Pinned resolver (docs/resolver.md) against the netlab DNS server: only the pinned servers are asked, answers
come back in getaddrinfo's shapes and go through the answer checks, failures never fall back or allow anything."""

from __future__ import annotations

import _socket
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import sockguard
from sockguard import guard
from sockguard.config import Settings, load_settings
from sockguard.errors import ConfigError
from sockguard.paths import sitecustomize_dir
from sockguard.resolver import Resolver, parse_nameserver
from tests import netlab as lab_module
from tests.netlab import Lab

MAIN = lab_module.DNS_SERVER  # 127.0.0.53: answers from the editable zone
BLACKHOLE = lab_module.BLACKHOLE_DNS  # 127.0.0.54: counts queries, never answers


class FakeClock:
    """Cache expiry without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def pinned(
    servers: list[str],
    *,
    allow: list[str] | None = None,
    clock: FakeClock | None = None,
    log: str | None = None,
    mode: str = "enforce",
    **options: Any,
) -> Iterator[guard.State]:
    """A strict policy (no loopback, no AF_UNIX) with the resolver pinned to ``servers``."""
    settings = Settings(
        mode=mode,
        allow=list(allow or []),
        allow_loopback=False,
        allow_unix=False,
        log=log,
        resolver=servers,
        resolver_options=options,
    )
    state = guard.state_from_settings(settings)
    assert state.resolver is not None
    if clock is not None:
        state.resolver.clock = clock
    with guard.applied(state):
        yield state


@pytest.fixture
def system_is_blackhole(netlab: Lab) -> Lab:
    """The system resolver (resolv.conf) points at the blackhole: any lookup that reaches it is counted."""
    netlab.use_nameservers(BLACKHOLE)
    return netlab


def connects(host: str, port: int) -> None:
    socket.create_connection((host, port), timeout=3).close()


# --- nameserver syntax and configuration ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.53", ("127.0.0.53", 53)),
        ("127.0.0.53:5353", ("127.0.0.53", 5353)),
        ("dns://10.0.0.2:53", ("10.0.0.2", 53)),
        ("dns://10.0.0.2", ("10.0.0.2", 53)),
        ("DNS://10.0.0.2:5300/", ("10.0.0.2", 5300)),
        ("[2001:db8::53]:53", ("2001:db8::53", 53)),
        ("[2001:DB8:0::53]", ("2001:db8::53", 53)),
        ("2001:db8::53", ("2001:db8::53", 53)),
        ("dns://[2001:db8::53]:5353", ("2001:db8::53", 5353)),
    ],
)
def test_nameserver_syntax(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ns1.corp.test", "is not an IP address"),
        ("dns://ns1.corp.test:53", "is not an IP address"),
        ("127.0.0.53:0", "port must be a number from 1 to 65535"),
        ("127.0.0.53:70000", "port must be a number from 1 to 65535"),
        ("127.0.0.53:dns", "port must be a number"),
        ("https://192.0.2.1/dns-query", "only dns://"),
        ("[2001:db8::53", "expected [IPV6]:PORT"),
        ("127.1", "is not an IP address"),
        ("fe80::1%eth0", "is not an IP address"),
        ("", "expected an IP address"),
    ],
)
def test_bad_nameservers_are_rejected_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_nameserver(text)


def test_config_file_and_environment(tmp_path) -> None:
    (tmp_path / "sockguard.toml").write_text('resolver = ["127.0.0.53", "dns://[2001:db8::53]:5353"]\n')
    settings = load_settings({}, str(tmp_path))
    assert settings.resolver == ["127.0.0.53:53", "[2001:db8::53]:5353"]
    (tmp_path / "sockguard.toml").write_text(
        '[resolver]\nservers = ["dns://127.0.0.53"]\ntimeout = 0.5\nattempts = 3\nmax_ttl = 60\n'
    )
    settings = load_settings({"SOCKGUARD_RESOLVER_NEGATIVE_TTL": "2"}, str(tmp_path))
    assert settings.resolver == ["127.0.0.53:53"]
    assert settings.resolver_options == {"timeout": 0.5, "attempts": 3, "max_ttl": 60, "negative_ttl": 2}
    env = settings.to_env()  # children get the same resolver
    assert env["SOCKGUARD_RESOLVER"] == "127.0.0.53:53" and env["SOCKGUARD_RESOLVER_ATTEMPTS"] == "3"
    again = load_settings(env, str(tmp_path / "nowhere"))
    assert (again.resolver, again.resolver_options) == (settings.resolver, settings.resolver_options)
    assert load_settings({"SOCKGUARD_RESOLVER": "system"}, str(tmp_path)).resolver is None
    state = guard.state_from_settings(load_settings({"SOCKGUARD_RESOLVER": "127.0.0.54:5300"}, str(tmp_path / "x")))
    assert state.resolver is not None and state.resolver.servers == (("127.0.0.54", 5300),)
    assert guard.state_from_settings(Settings()).resolver is None


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ('resolver = ["ns1.corp.test"]', {}, "resolver: nameserver 'ns1.corp.test'"),
        ('resolver = ["system", "127.0.0.53"]', {}, '"system" cannot be combined'),
        ("resolver = []", {}, 'must be "system" or a list of nameservers'),
        ("resolver = 53", {}, 'must be "system" or a list of nameservers'),
        ('[resolver]\ntimeout = 1\nservers = ["127.0.0.53"]\nretries = 2', {}, "unknown key 'resolver.retries'"),
        ("[resolver]\ntimeout = 1", {}, "needs servers"),
        ('[resolver]\nservers = ["127.0.0.53"]\ntimeout = 0', {}, "resolver.timeout must be a number of seconds"),
        ('[resolver]\nservers = ["127.0.0.53"]\nattempts = 1.5', {}, "resolver.attempts must be a whole number"),
        ("", {"SOCKGUARD_RESOLVER": "127.0.0.53:99999"}, "SOCKGUARD_RESOLVER: nameserver"),
        ("", {"SOCKGUARD_RESOLVER_TIMEOUT": "soon"}, "SOCKGUARD_RESOLVER_TIMEOUT must be a number"),
        ("", {"SOCKGUARD_RESOLVER_RETRIES": "2"}, "unknown variable SOCKGUARD_RESOLVER_RETRIES"),
    ],
)
def test_bad_resolver_settings_name_the_problem(tmp_path, toml: str, env: dict[str, str], message: str) -> None:
    (tmp_path / "sockguard.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env, str(tmp_path))
    assert message in str(info.value)


def test_a_bad_resolver_setting_fails_closed(tmp_path) -> None:
    code = "import socket\ntry:\n    socket.getaddrinfo('a.test', 80)\nexcept OSError as e:\n    print(e.reason)\n"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean_env(), "PYTHONPATH": sitecustomize_dir(), "SOCKGUARD_RESOLVER": "ns1.corp.test"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert result.stdout.strip() == "config-error"
    assert "is not an IP address" in result.stderr


# --- answers: shapes, families, services, flags ---------------------------------------------


SHAPES = [
    (443, 0, 0, 0, 0),
    (443, socket.AF_INET, socket.SOCK_STREAM, 0, 0),
    (443, socket.AF_INET6, socket.SOCK_STREAM, 0, 0),
    ("https", 0, socket.SOCK_STREAM, 0, 0),
    ("53", socket.AF_INET, socket.SOCK_DGRAM, 0, 0),
    (b"443", 0, 0, socket.IPPROTO_TCP, 0),
    (None, socket.AF_INET, 0, 0, 0),
    (8080, 0, socket.SOCK_STREAM, 0, socket.AI_CANONNAME),
    (8080, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_PASSIVE),
    (80, socket.AF_INET6, socket.SOCK_STREAM, 0, socket.AI_V4MAPPED),
]


@pytest.mark.parametrize(("port", "family", "kind", "proto", "flags"), SHAPES)
def test_answers_have_the_system_resolvers_shape(netlab: Lab, port, family, kind, proto, flags) -> None:
    netlab.dns.set("api.partner.test", A=["198.51.100.10", "198.51.100.11"], AAAA=["2001:db8::10"])
    netlab.dns.set("v4only.partner.test", A=["198.51.100.12"])
    netlab.dns.cname("www.partner.test", "api.partner.test")
    for name in ("api.partner.test", "www.partner.test", "v4only.partner.test"):
        system = outcome(socket.getaddrinfo, name, port, family, kind, proto, flags)  # no guard: glibc + lab DNS
        ours = outcome(Resolver([MAIN]).getaddrinfo, name, port, family, kind, proto, flags)
        if isinstance(system, int):  # the same error (no AAAA for v4only)
            assert ours == system, name
            continue
        # The same tuples (repr shows the enums too); the order may differ: IPv4 first here, glibc sorts (RFC 6724).
        assert sorted(map(repr, map(uncanon, ours))) == sorted(map(repr, map(uncanon, system))), name
        assert [i[3] for i in ours] == [i[3] for i in system]  # AI_CANONNAME: the first entry only
    system_ex = socket.gethostbyname_ex("www.partner.test")
    ours_ex = Resolver([MAIN]).gethostbyname_ex("www.partner.test")
    assert ours_ex[:2] == system_ex[:2] and sorted(ours_ex[2]) == sorted(system_ex[2])


def outcome(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except socket.gaierror as exc:
        return exc.errno


def uncanon(info: tuple) -> tuple:
    return (*info[:3], "", info[4])


def test_pinned_lookups_never_reach_the_system_resolver(system_is_blackhole: Lab) -> None:
    lab = system_is_blackhole
    lab.dns.set("api.partner.test", A=["198.51.100.10"], AAAA=["2001:db8::10"])
    v4 = lab.tcp("198.51.100.10", 443)
    v6 = lab.tcp("2001:db8::10", 443)
    with pinned([MAIN], allow=["api.partner.test:443"]):
        infos = socket.getaddrinfo("api.partner.test", 443, type=socket.SOCK_STREAM)
        assert [i[4][0] for i in infos] == ["198.51.100.10", "2001:db8::10"]  # IPv4 first (docs/resolver.md)
        assert socket.gethostbyname("api.partner.test") == "198.51.100.10"
        assert socket.gethostbyname_ex("API.partner.test.") == ("api.partner.test", [], ["198.51.100.10"])
        connects("api.partner.test", 443)  # create_connection -> getaddrinfo
        with socket.socket() as sock:  # a hostname tuple goes through the pinned resolver too
            sock.connect(("api.partner.test", 443))
        with socket.socket(socket.AF_INET6) as sock:
            sock.connect(("api.partner.test", 443))
    assert v4.accepted == 2 and v6.accepted == 1
    assert lab.dns.queries("api.partner.test") >= 2
    assert lab.dns.blackhole_queries() == 0  # the system resolver heard nothing


def test_services_flags_and_families_fail_like_getaddrinfo_without_a_query(system_is_blackhole: Lab) -> None:
    lab = system_is_blackhole
    lab.dns.set("api.partner.test", A=["198.51.100.10"])
    with pinned([MAIN], allow=["api.partner.test"]):
        with pytest.raises(socket.gaierror) as info:
            socket.getaddrinfo("api.partner.test", "no-such-service", 0, socket.SOCK_STREAM)
        assert info.value.errno == socket.EAI_SERVICE
        with pytest.raises(socket.gaierror) as info:
            socket.getaddrinfo("api.partner.test", 443, 0, 0, 0, socket.AI_NUMERICHOST)
        assert info.value.errno == socket.EAI_NONAME
        with pytest.raises(socket.gaierror) as info:
            socket.getaddrinfo("api.partner.test", 443, socket.AF_UNIX)
        assert info.value.errno == socket.EAI_FAMILY
        assert lab.dns.queries() == 0
        # Numeric hosts and AI_PASSIVE never involve the resolver.
        assert socket.getaddrinfo("198.51.100.10", 443, socket.AF_INET, socket.SOCK_STREAM)[0][4] == (
            "198.51.100.10",
            443,
        )
        assert socket.getaddrinfo(None, 8080, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)[0][4] == (
            "0.0.0.0",
            8080,
        )
        # Only the requested family is asked for.
        socket.getaddrinfo("api.partner.test", 443, socket.AF_INET)
        assert lab.dns.log() == [("api.partner.test", "A", "udp", "main")]
    assert lab.dns.blackhole_queries() == 0
    # localhost names are loopback without a query (RFC 6761 6.3); the policy decides on them as usual.
    assert Resolver([MAIN]).getaddrinfo("db.localhost", 80, socket.AF_INET)[0][4] == ("127.0.0.1", 80)
    assert Resolver([MAIN]).gethostbyname_ex("localhost") == ("localhost", [], ["127.0.0.1"])
    assert lab.dns.queries() == 1


def test_etc_hosts_is_not_consulted(system_is_blackhole: Lab) -> None:
    """Only the pinned servers answer: a name that only /etc/hosts knows does not resolve."""
    lab = system_is_blackhole
    with pinned([MAIN], allow=["static.netlab.test"]), pytest.raises(socket.gaierror) as info:
        socket.getaddrinfo("static.netlab.test", 80, socket.AF_INET)
    assert info.value.errno == socket.EAI_NONAME
    assert lab.dns.queries("static.netlab.test") == 1
    assert lab.dns.blackhole_queries() == 0


# --- the answer checks, rebinding, CNAME chains, NXDOMAIN ---------------------------------------


def test_rebinding_to_an_internal_address_is_blocked(system_is_blackhole: Lab) -> None:
    lab = system_is_blackhole
    clock = FakeClock()
    public = lab.tcp("198.51.100.10", 443)
    internal = lab.tcp("10.20.30.40", 443)
    lab.dns.set("rebind.partner.test", A=["198.51.100.10"], ttl=30)
    with pinned([MAIN], allow=["rebind.partner.test"], clock=clock):
        connects("rebind.partner.test", 443)
        lab.dns.set("rebind.partner.test", A=["10.20.30.40"], ttl=30)
        clock.now += 29  # within the TTL the pinned answer stands: the zone change is not seen
        connects("rebind.partner.test", 443)
        assert lab.dns.queries("rebind.partner.test", "A") == 1
        clock.now += 2  # TTL over: the new answer is internal
        with pytest.raises(sockguard.EgressBlocked) as info:
            connects("rebind.partner.test", 443)
    assert info.value.reason == "internal-address"
    assert info.value.address == "10.20.30.40"
    assert lab.dns.queries("rebind.partner.test", "A") == 2
    assert public.accepted == 2
    assert internal.accepted == 0
    assert lab.dns.blackhole_queries() == 0


def test_ttl_zero_rebinding_is_blocked_at_once(system_is_blackhole: Lab) -> None:
    lab = system_is_blackhole
    internal = lab.tcp("169.254.169.254", 80)
    lab.dns.set("flip.partner.test", A=["198.51.100.10"], ttl=0)
    with pinned([MAIN], allow=["flip.partner.test"]):
        assert socket.gethostbyname("flip.partner.test") == "198.51.100.10"
        lab.dns.set("flip.partner.test", A=["169.254.169.254"], ttl=0)
        with pytest.raises(sockguard.EgressBlocked) as info:
            connects("flip.partner.test", 80)
    assert info.value.reason == "internal-address"
    assert lab.dns.queries("flip.partner.test", "A") == 2  # ttl 0: never cached
    assert internal.accepted == 0


def test_cname_chain(system_is_blackhole: Lab) -> None:
    lab = system_is_blackhole
    edge = lab.tcp("198.51.100.11", 443)
    internal = lab.tcp("10.0.0.5", 443)
    lab.dns.cname("www.partner.test", "cdn.partner.test")
    lab.dns.cname("cdn.partner.test", "edge.cdn.test")
    lab.dns.set("edge.cdn.test", A=["198.51.100.11"])
    lab.dns.cname("intranet.partner.test", "db.corp.test")
    lab.dns.set("db.corp.test", A=["10.0.0.5"])
    lab.dns.cname("dangling.partner.test", "nowhere.partner.test")
    with pinned([MAIN], allow=["*.partner.test"]):
        assert socket.gethostbyname_ex("www.partner.test") == (
            "edge.cdn.test",
            ["www.partner.test", "cdn.partner.test"],
            ["198.51.100.11"],
        )
        infos = socket.getaddrinfo("www.partner.test", 443, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)
        assert infos[0][3] == "edge.cdn.test"
        connects("www.partner.test", 443)
        with pytest.raises(sockguard.EgressBlocked) as info:  # an allowed name aliased to an internal host
            connects("intranet.partner.test", 443)
        assert info.value.reason == "internal-address"
        with pytest.raises(socket.gaierror) as gai:
            socket.getaddrinfo("dangling.partner.test", 443)
        assert gai.value.errno == socket.EAI_NONAME
        lab.dns.cname("loop.partner.test", "pool.partner.test")  # a loop: the server answers SERVFAIL
        lab.dns.cname("pool.partner.test", "loop.partner.test")
        with pytest.raises(socket.gaierror) as gai:
            socket.getaddrinfo("loop.partner.test", 443)
        assert gai.value.errno == socket.EAI_AGAIN and "answered SERVFAIL (x2)" in str(gai.value)
    assert edge.accepted == 1
    assert internal.accepted == 0
    assert lab.dns.blackhole_queries() == 0


def test_nxdomain_nodata_and_negative_caching(system_is_blackhole: Lab) -> None:
    lab = system_is_blackhole
    clock = FakeClock()
    lab.dns.set("v4only.partner.test", A=["198.51.100.10"])
    with pinned([MAIN], allow=["*.partner.test"], clock=clock, negative_ttl=5):
        for _ in range(3):
            with pytest.raises(socket.gaierror) as info:
                socket.getaddrinfo("missing.partner.test", 443)
            assert info.value.errno == socket.EAI_NONAME
            assert "NXDOMAIN" in str(info.value) and "127.0.0.53:53" in str(info.value)
        assert lab.dns.log() == [("missing.partner.test", "A", "udp", "main")]  # cached; AAAA not asked
        clock.now += 6  # negative answers are cached briefly only
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo("missing.partner.test", 443)
        assert lab.dns.queries("missing.partner.test") == 2
        with pytest.raises(socket.gaierror) as info:
            socket.getaddrinfo("v4only.partner.test", 443, socket.AF_INET6)
        assert info.value.errno == socket.EAI_NODATA
        # Both families asked: the A answer is enough.
        assert [i[4][0] for i in socket.getaddrinfo("v4only.partner.test", 443, 0, socket.SOCK_STREAM)] == [
            "198.51.100.10"
        ]
    assert lab.dns.blackhole_queries() == 0


def test_ttl_is_capped_and_the_cache_bounded(netlab: Lab) -> None:
    clock = FakeClock()
    for i in range(3):
        netlab.dns.set(f"n{i}.partner.test", A=[f"198.51.100.1{i}"], ttl=86400)
    small = Resolver([MAIN], cache_size=2)
    for i in range(3):
        assert small.gethostbyname(f"n{i}.partner.test") == f"198.51.100.1{i}"
    assert len(small._cache) == 2
    resolver = Resolver([MAIN], max_ttl=10, clock=clock)
    for _ in range(3):
        resolver.gethostbyname("n2.partner.test")
    assert netlab.dns.queries("n2.partner.test") == 2  # once by each resolver
    clock.now += 11  # max_ttl, not the record's day
    resolver.gethostbyname("n2.partner.test")
    assert netlab.dns.queries("n2.partner.test") == 3


def test_concurrent_lookups(netlab: Lab) -> None:
    for i in range(4):
        netlab.dns.set(f"c{i}.partner.test", A=[f"198.51.100.1{i % 3}"], AAAA=["2001:db8::10"], ttl=0)
    resolver = Resolver([MAIN])
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(10):
                infos = resolver.getaddrinfo(f"c{i % 4}.partner.test", 443, 0, socket.SOCK_STREAM)
                assert sorted(x[4][0] for x in infos) == sorted([f"198.51.100.1{i % 4 % 3}", "2001:db8::10"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert netlab.dns.queries() >= 8 * 10 * 2  # ttl 0: nothing cached (more if a reply was slow under load)


# --- failures: time-outs, servers, ports -----------------------------------------------------


def test_timeout_is_a_clear_error_and_never_falls_back(netlab: Lab, tmp_path) -> None:
    """Pinned to the blackhole; the system resolver (resolv.conf) is the working lab DNS, and hears nothing."""
    netlab.dns.set("api.partner.test", A=["198.51.100.10"])
    server = netlab.tcp("198.51.100.10", 443)
    log = tmp_path / "decisions.jsonl"
    with (
        pinned([BLACKHOLE], allow=["api.partner.test"], log=str(log), timeout=0.2, attempts=2),
        pytest.raises(socket.gaierror) as info,
    ):
        connects("api.partner.test", 443)
    assert info.value.errno == socket.EAI_AGAIN
    message = str(info.value)
    assert "127.0.0.54:53 timed out after 0.2 s (x2)" in message and "never falls back" in message
    assert netlab.dns.blackhole_queries("api.partner.test") == 2  # A, 2 attempts; AAAA not tried after that
    assert netlab.dns.queries() == 0  # the system resolver was not asked
    assert server.accepted == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    errors = [e for e in events if e["event"] == "resolver-error"]
    assert errors and errors[0]["host"] == "api.partner.test" and "127.0.0.54:53" in errors[0]["detail"]
    assert not [e for e in events if e["op"] != "resolve"]  # nothing was sent or connected


def test_next_pinned_server_answers_when_the_first_is_silent(system_is_blackhole: Lab) -> None:
    lab = system_is_blackhole
    lab.dns.set("api.partner.test", A=["198.51.100.10"])
    with pinned(["dns://127.0.0.54", MAIN], allow=["api.partner.test"], timeout=0.3):
        assert socket.gethostbyname("api.partner.test") == "198.51.100.10"
    assert lab.dns.log()[:2] == [
        ("api.partner.test", "A", "udp", "blackhole"),
        ("api.partner.test", "A", "udp", "main"),
    ]


def test_configured_port_is_used(netlab: Lab) -> None:
    silent = netlab.udp(MAIN, 5353)
    with (
        pinned([f"{MAIN}:5353"], allow=["api.partner.test"], timeout=0.2, attempts=3),
        pytest.raises(socket.gaierror) as info,
    ):
        socket.gethostbyname("api.partner.test")
    assert "127.0.0.53:5353 timed out" in str(info.value)
    assert silent.datagrams == 3
    silent6 = netlab.udp("2001:db8::10", 53)  # IPv6, and a raw IP the policy would block for the app
    with (
        pinned(["dns://[2001:db8::10]"], allow=["api.partner.test"], timeout=0.2, attempts=1),
        pytest.raises(socket.gaierror) as info,
    ):
        socket.getaddrinfo("api.partner.test", 443, socket.AF_INET6)
    assert "[2001:db8::10]:53 timed out" in str(info.value)
    assert silent6.datagrams == 1
    assert netlab.dns.queries() == 0 and netlab.dns.blackhole_queries() == 0


# --- the exemption is exactly sockguard's own queries -----------------------------------------


def test_the_apps_own_dns_traffic_is_still_checked(system_is_blackhole: Lab) -> None:
    lab = system_is_blackhole
    other = lab.udp("203.0.113.11", 53)
    import dns.message

    query = dns.message.make_query("api.partner.test", "A").to_wire()
    with pinned([MAIN], allow=["api.partner.test"]):
        for target in ((MAIN, 53), ("203.0.113.11", 53)):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(sockguard.EgressBlocked):
                sock.sendto(query, target)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(sockguard.EgressBlocked):
                sock.connect(target)
    assert lab.dns.queries() == 0
    assert other.datagrams == 0


def test_lookups_that_bypass_the_wrappers_are_blocked_in_pinned_mode(system_is_blackhole: Lab) -> None:
    lab = system_is_blackhole
    lab.dns.set("api.partner.test", A=["198.51.100.10"])
    with pinned([MAIN], allow=["api.partner.test"]):
        with pytest.raises(sockguard.EgressBlocked) as info:
            _socket.getaddrinfo("api.partner.test", 443)  # C resolver, straight to resolv.conf
        assert info.value.reason == "pinned-resolver"
        assert "system resolver" in str(info.value) and "To allow it" not in str(info.value)
        with pytest.raises(sockguard.EgressBlocked):
            _socket.gethostbyname("api.partner.test")
        with pytest.raises(sockguard.EgressBlocked) as info:
            socket.gethostbyaddr("198.51.100.10")  # PTR
        assert "reverse" in str(info.value)
        assert socket.getfqdn("198.51.100.10") == "198.51.100.10"  # getfqdn falls back to its argument
        assert _socket.getaddrinfo("198.51.100.10", 443)  # numeric: no resolver involved
    assert lab.dns.log() == []


def test_monitor_mode_still_uses_only_the_pinned_servers(system_is_blackhole: Lab) -> None:
    lab = system_is_blackhole
    lab.dns.set("api.partner.test", A=["198.51.100.10"])
    with pinned([MAIN], mode="monitor"):
        assert socket.gethostbyname("api.partner.test") == "198.51.100.10"
    assert lab.dns.queries("api.partner.test") == 1
    assert lab.dns.blackhole_queries() == 0


# --- a whole guarded process -------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_") and k != "PYTHONPATH"}


CHILD = textwrap.dedent(
    """
    import http.client, json, sys
    started = "dns" in sys.modules
    conn = http.client.HTTPConnection("api.partner.test", 8080, timeout=5)
    conn.request("GET", "/")
    body = conn.getresponse().read().decode()
    print(json.dumps({"dns_at_start": started, "dns_after": "dns.message" in sys.modules, "body": body}))
    """
)


def test_guarded_process_resolves_only_through_the_pinned_server(system_is_blackhole: Lab, tmp_path) -> None:
    lab = system_is_blackhole
    lab.dns.set("api.partner.test", A=["198.51.100.10"])
    api = lab.tcp("198.51.100.10", 8080, http=True, body="pinned")
    (tmp_path / "child.py").write_text(CHILD)
    result = subprocess.run(
        [sys.executable, "-m", "sockguard", "run", "--allow", "api.partner.test:8080", "child.py"],
        env={**clean_env(), "SOCKGUARD_RESOLVER": MAIN, "SOCKGUARD_ALLOW_LOOPBACK": "0"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out == {"dns_at_start": False, "dns_after": True, "body": "pinned"}  # dnspython only at first use
    assert api.accepted == 1
    assert lab.dns.queries("api.partner.test") >= 1
    assert lab.dns.blackhole_queries() == 0


# --- transport: truncation -> TCP, replies that do not match the query -----------------------------

ODD_SERVER = textwrap.dedent(
    """
    import socket, sys, threading
    import dns.flags, dns.message, dns.rrset

    address = sys.argv[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((address, 53))
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((address, 53))
    tcp.listen(8)

    def answer(query, *addresses):
        response = dns.message.make_response(query)
        question = query.question[0]
        response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", *addresses))
        return response

    def serve_tcp():
        while True:
            conn, _ = tcp.accept()
            size = int.from_bytes(conn.recv(2), "big")
            query = dns.message.from_wire(conn.recv(size))
            wire = answer(query, "198.51.100.10", "198.51.100.11", "198.51.100.12").to_wire()
            print("tcp", flush=True)  # before the answer: the client's next query comes after it
            conn.sendall(len(wire).to_bytes(2, "big") + wire)
            conn.close()

    threading.Thread(target=serve_tcp, daemon=True).start()
    print("ready", flush=True)
    while True:
        wire, peer = udp.recvfrom(65535)
        query = dns.message.from_wire(wire)
        name = query.question[0].name.to_text()
        print("udp", flush=True)
        if name.startswith("big."):  # too big for UDP: truncated, retry over TCP
            response = dns.message.make_response(query)
            response.flags |= dns.flags.TC
            udp.sendto(response.to_wire(), peer)
        elif name.startswith("chain."):  # only the CNAME: the client must ask for the target itself
            response = dns.message.make_response(query)
            response.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", "forged.partner.test."))
            udp.sendto(response.to_wire(), peer)
        else:  # a forged reply (wrong id) pointing inside, then the real one
            forged = answer(query, "10.20.30.40")
            forged.id = (query.id + 1) % 65536
            udp.sendto(forged.to_wire(), peer)
            udp.sendto(answer(query, "198.51.100.10").to_wire(), peer)
    """
)


@pytest.mark.netlab  # binds port 53 on 127.0.0.56: the namespace, as root
def test_truncated_answers_retry_over_tcp_and_forged_replies_are_ignored(tmp_path) -> None:
    script = tmp_path / "odd_dns.py"
    script.write_text(ODD_SERVER)
    address = "127.0.0.56"  # on lo; the server runs unguarded in its own process
    env = {**clean_env(), "SOCKGUARD_MODE": "off"}
    server = subprocess.Popen([sys.executable, str(script), address], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        with pinned([address], allow=["*.partner.test"]):
            infos = socket.getaddrinfo("big.partner.test", 443, socket.AF_INET, socket.SOCK_STREAM)
            assert sorted(i[4][0] for i in infos) == ["198.51.100.10", "198.51.100.11", "198.51.100.12"]
            assert socket.gethostbyname("forged.partner.test") == "198.51.100.10"
            assert socket.gethostbyname_ex("chain.partner.test") == (
                "forged.partner.test",
                ["chain.partner.test"],
                ["198.51.100.10"],
            )
    finally:
        server.kill()
        out, _ = server.communicate(timeout=10)
    assert out.split() == ["udp", "tcp", "udp", "udp"]  # forged.partner.test's answer came from the cache
