"""Issue 10 in this process: the guard decides on exactly what the kernel gets. Each netlab test proves a refusal
from the far side (no connection, datagram, DNS or PTR query arrived anywhere the policy does not allow), and each
"still works" test proves the allowed path from the far side too. The same tricks in guarded children under both
activations: tests/test_integrity_activation.py. The property test: tests/test_integrity_property.py."""

from __future__ import annotations

import _socket
import asyncio
import collections
import enum
import http.client
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import sockguard
from sockguard import canonical, rawsockets, resolvconf, testing
from sockguard.errors import InvalidHost
from sockguard.policy import Policy
from sockguard.rules import UNKNOWN_PORT
from tests.integrity_support import (
    ALLOW,
    ALLOWED_NAME,
    ALLOWED_V4,
    BLOCKED_NAME,
    BLOCKED_V4,
    BLOCKED_V6,
    EVIL_SUFFIX,
    FAR_NAME,
    FAR_V4,
    INTERNAL_V4,
    METADATA_V4,
    METADATA_V6,
    REBIND_NAME,
    STRANGER_V4,
    STRANGER_V6,
    UDP_PORT,
    Scene,
    build_scene,
)
from tests.netlab import DNS_SERVER, Lab

Endpoint = collections.namedtuple("Endpoint", "host port")
Endpoint6 = collections.namedtuple("Endpoint6", "host port flowinfo scope_id")


class Pair(tuple):
    """A plain tuple subclass (what a library's own address type often is)."""


class Lying(tuple):
    """A tuple subclass that shows Python an allowed address while its own storage (what C reads) holds another."""

    def __getitem__(self, index: Any) -> Any:
        return (ALLOWED_V4, 443)[index]

    def __iter__(self) -> Iterator[Any]:
        return iter((ALLOWED_V4, 443))


class Text(str):
    """A str subclass host."""


class Forged(str):
    """Equal to anything, with the hash of an entry the guard has allowed and cached."""

    def __new__(cls, value: str, like: str) -> Forged:
        self = super().__new__(cls, value)
        self.like = like  # type: ignore[attr-defined]
        return self

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash(self.like)  # type: ignore[attr-defined]


class Port(enum.IntEnum):
    HTTP = 80
    HTTPS = 443


class Index:
    """A port through ``__index__``."""

    def __init__(self, *values: int) -> None:
        self.values = list(values)
        self.calls = 0

    def __index__(self) -> int:
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return value


@pytest.fixture
def scene(netlab: Lab) -> Iterator[Scene]:
    scene = build_scene(netlab)
    with sockguard.guarded(allow=ALLOW, allow_loopback=False):
        yield scene


def blocked(function: Callable[[], Any], reason: str | None = None) -> sockguard.EgressBlocked:
    with pytest.raises(sockguard.EgressBlocked) as caught:
        function()
    if reason is not None:
        assert caught.value.reason == reason, caught.value
    return caught.value


# -- the operations that hand an address to C ----------------------------------------------------------------------


def _family(address: Any) -> int:
    host = tuple.__getitem__(address, 0)
    text = host.decode() if isinstance(host, (bytes, bytearray)) else str.__str__(host)
    return socket.AF_INET6 if ":" in text else socket.AF_INET


def tcp_connect(address: Any, kind: Any = socket.socket) -> Any:
    sock = kind(_family(address), socket.SOCK_STREAM)
    sock.settimeout(3)
    try:
        return sock.connect(address)
    finally:
        sock.close()


def tcp_connect_ex(address: Any) -> Any:
    with socket.socket(_family(address), socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        return sock.connect_ex(address)


def udp_sendto(address: Any, kind: Any = socket.socket) -> Any:
    sock = kind(_family(address), socket.SOCK_DGRAM)
    try:
        return sock.sendto(b"x", address)
    finally:
        sock.close()


def udp_sendmsg(address: Any) -> Any:
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        return sock.sendmsg([b"x"], [], 0, address)


def asyncio_sock_connect(address: Any) -> Any:
    async def main() -> None:
        with socket.socket(_family(address), socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), 3)

    return asyncio.run(main())


def asyncio_sock_sendto(address: Any) -> Any:
    async def main() -> None:
        with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_sendto(sock, b"x", address)

    return asyncio.run(main())


def asyncio_datagram_endpoint(address: Any) -> Any:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=address)
        transport.sendto(b"x")
        transport.close()

    return asyncio.run(main())


TCP_OPERATIONS = {
    "connect": tcp_connect,
    "connect_ex": tcp_connect_ex,
    "asyncio.sock_connect": asyncio_sock_connect,
    "_socket.connect": lambda address: tcp_connect(address, _socket.socket),
}
UDP_OPERATIONS = {
    "sendto": udp_sendto,
    "sendmsg": udp_sendmsg,
    "asyncio.sock_sendto": asyncio_sock_sendto,
    "asyncio.create_datagram_endpoint": asyncio_datagram_endpoint,
    "_socket.sendto": lambda address: udp_sendto(address, _socket.socket),
}


def shapes(host: str, port: int) -> dict[str, Any]:
    """The same destination in every shape the wrappers (and, for _socket, the floor) must see through."""
    v6 = ":" in host
    found = {
        "namedtuple": Endpoint(host, port),
        "tuple subclass": Pair((host, port)),
        "tuple subclass lying to Python": Lying((host, port)),
        "bytes host": (host.encode(), port),
        "bytearray host": (bytearray(host.encode()), port),
        "str subclass host": (Text(host), port),
        "IntEnum-like int subclass port": (host, Port(port)) if port in (80, 443) else (host, port),
        "__index__ port": (host, Index(port)),
    }
    if v6:
        found["4-tuple namedtuple"] = Endpoint6(host, port, 0, 0)
        found["4-tuple subclass"] = Pair((host, port, 0, 0))
    return found


TCP_TARGETS = {"metadata": (METADATA_V4, 80), "internal": (INTERNAL_V4, 80), "metadata-v6": (METADATA_V6, 80)}
UDP_TARGETS = {"blocked": (BLOCKED_V4, UDP_PORT), "blocked-v6": (BLOCKED_V6, UDP_PORT)}


#: Shapes asyncio refuses itself before any socket call (a bytearray host, a 4-tuple remote_addr), or reads through
#: Python's own indexing (the lying tuple then names an IPv4 host for an AF_INET6 socket: gaierror).
LIBRARY_REFUSES = {
    ("asyncio.sock_connect", "bytearray host"),
    ("asyncio.sock_connect", "tuple subclass lying to Python"),
    ("asyncio.create_datagram_endpoint", "bytearray host"),
    ("asyncio.create_datagram_endpoint", "4-tuple namedtuple"),
    ("asyncio.create_datagram_endpoint", "4-tuple subclass"),
}


def refused(operation: str, shape: str, call: Callable[[], Any]) -> None:
    if (operation, shape) in LIBRARY_REFUSES:
        with pytest.raises((TypeError, OSError)):  # EgressBlocked or the library's own error: nothing was sent
            call()
    else:
        blocked(call)


def _cells(operations: dict[str, Any], targets: dict[str, tuple[str, int]]) -> list[Any]:
    return [
        pytest.param(operation, target, shape, id=f"{operation}-{target}-{shape}")
        for operation in operations
        for target, (host, port) in targets.items()
        for shape in shapes(host, port)
    ]


# -- 1. address objects: canonicalised before C, decided on what C gets -----------------------------------------


@pytest.mark.parametrize(("operation", "target", "shape"), _cells(TCP_OPERATIONS, TCP_TARGETS))
def test_tcp_address_shapes_are_decided_on_what_c_gets(scene: Scene, operation: str, target: str, shape: str) -> None:
    address = shapes(*TCP_TARGETS[target])[shape]
    refused(operation, shape, lambda: TCP_OPERATIONS[operation](address))
    assert scene.far_side() == scene.untouched()


@pytest.mark.parametrize(("operation", "target", "shape"), _cells(UDP_OPERATIONS, UDP_TARGETS))
def test_udp_address_shapes_are_decided_on_what_c_gets(scene: Scene, operation: str, target: str, shape: str) -> None:
    address = shapes(*UDP_TARGETS[target])[shape]
    refused(operation, shape, lambda: UDP_OPERATIONS[operation](address))
    assert scene.far_side() == scene.untouched()


ALLOWED_SHAPES = [s for s in shapes(ALLOWED_V4, 443) if s != "tuple subclass lying to Python"]


@pytest.mark.parametrize("shape", ALLOWED_SHAPES)
@pytest.mark.parametrize("operation", ["connect", "connect_ex", "asyncio.sock_connect"])
def test_allowed_destination_in_any_shape_still_connects(scene: Scene, operation: str, shape: str) -> None:
    if (operation, shape) in LIBRARY_REFUSES:
        pytest.skip("asyncio refuses this shape itself")
    socket.getaddrinfo(ALLOWED_NAME, 443)  # the address of an allowed name
    assert TCP_OPERATIONS[operation](shapes(ALLOWED_V4, 443)[shape]) in (None, 0)
    assert scene.allowed.accepted == 1
    assert scene.far_side() == scene.untouched()


@pytest.mark.parametrize("operation", ["connect", "connect_ex", "asyncio.sock_connect"])
@pytest.mark.parametrize(
    "shape", [Endpoint, lambda host, port: Pair((host, port)), lambda host, port: (host.encode(), port)]
)
def test_hostname_inside_any_shape_goes_through_the_guards_resolver(scene: Scene, operation: str, shape: Any) -> None:
    """A blocked name never reaches DNS; an allowed name's internal answer is refused (the rebinding defence
    applies), and an allowed name's public answer connects."""
    blocked(lambda: TCP_OPERATIONS[operation](shape(BLOCKED_NAME, 80)), "not-allowed")
    blocked(lambda: TCP_OPERATIONS[operation](shape(REBIND_NAME, 443)), "internal-address")
    assert scene.far_side() == scene.untouched()
    TCP_OPERATIONS[operation](shape(ALLOWED_NAME, 443))
    assert scene.allowed.accepted == 1


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_a_hostname_given_to_underscore_socket_is_refused_after_c_resolved_it(scene: Scene, family: int) -> None:
    """What the floor cannot stop: C resolves a hostname handed to ``_socket`` before the audit event. The connect
    is refused even for an allowed name (the address C found cannot be checked), and exactly one DNS query (A for
    AF_INET, AAAA for AF_INET6) left for it: the README's threat model says so."""
    kind = "A" if family == socket.AF_INET else "AAAA"
    for name in (ALLOWED_NAME, BLOCKED_NAME):
        sock = _socket.socket(family, socket.SOCK_STREAM)
        try:
            with pytest.raises((sockguard.EgressBlocked, OSError)) as caught:
                sock.connect((name, 443 if name == ALLOWED_NAME else 80))
        finally:
            sock.close()
        if isinstance(caught.value, sockguard.EgressBlocked):
            assert caught.value.reason == "unverified-address", caught.value
        else:  # AF_INET6: the name has no AAAA record, so C fails before anything is decided
            assert family == socket.AF_INET6 and name == ALLOWED_NAME
        assert scene.lab.dns.queries(name) == 1 and scene.lab.dns.queries(name, kind) == 1
    assert scene.allowed.accepted == 0
    assert scene.far_side()["tcp"] == 0 and scene.far_side()["udp"] == 0


def test_malformed_addresses_raise_what_c_raises() -> None:
    """Transparent where C refuses an address itself: the same exception and message, from the wrapper, before C
    sees the caller's object."""
    v4 = [
        ["127.0.0.1", 80],
        ("127.0.0.1",),
        ("127.0.0.1", 80, 0),
        (123, 80),
        ("127.0.0.1", 1.5),
        ("127.0.0.1", "80"),
        ("127.0.0.1", 70000),
        ("127.0.0.1", -1),
        ("127.0.0.1", 2**70),
        ("127.\0.1", 80),
        (b"127.\0.1", 80),
        ("\udcff.test", 80),
    ]
    v6 = [("::1",), ("::1", 80, -1), ("::1", 80, 2**20), ("::1", 80, 0, 0, 0), ("::1", 80, 0, 1.5)]
    for family, addresses in ((socket.AF_INET, v4), (socket.AF_INET6, v6)):
        for address in addresses:
            with sockguard.guarded(mode="off"):
                raw = _socket.socket(family, socket.SOCK_DGRAM)
                try:
                    with pytest.raises(Exception) as from_c:
                        raw.connect(address)
                finally:
                    raw.close()
            with (
                sockguard.guarded(allow_loopback=True),
                socket.socket(family, socket.SOCK_DGRAM) as sock,
                pytest.raises(Exception) as from_guard,
            ):
                sock.connect(address)
            assert type(from_guard.value) is type(from_c.value), address
            assert str(from_guard.value) == str(from_c.value), address


def test_c_address_is_a_plain_tuple_of_exact_types() -> None:
    found = canonical.c_address(Lying((Text("10.0.0.5"), Index(80))), socket.AF_INET, "connect")
    assert found == ("10.0.0.5", 80) and type(found) is tuple
    assert [type(item) for item in found] == [str, int]
    found = canonical.c_address(Endpoint6(bytearray(b"fe80::1%lo"), Port.HTTP, 2**32 + 5, -1), socket.AF_INET6, "x")
    assert found == ("fe80::1%lo", 80, 5, 2**32 - 1)
    assert [type(item) for item in found] == [str, int, int, int]
    assert canonical.c_host("\uff21\uff30\uff29.example.com") == "api.example.com"  # fullwidth, folded by IDNA
    with pytest.raises(InvalidHost):
        canonical.c_host(b"\xe9xample.test")  # C would hand the resolver these raw bytes


# -- 2. bind --------------------------------------------------------------------------------------------------------


def test_bind_resolves_a_hostname_through_the_guard(scene: Scene) -> None:
    with socket.socket() as sock:
        blocked(lambda: sock.bind((BLOCKED_NAME, 0)), "not-allowed")
    with socket.socket() as sock:
        blocked(lambda: sock.bind(Endpoint(BLOCKED_NAME.encode(), 0)), "not-allowed")
    blocked(lambda: socket.create_connection((ALLOWED_V4, 443), 3, (BLOCKED_NAME, 0)), "not-allowed")
    connection = http.client.HTTPConnection(ALLOWED_V4, 443, timeout=3, source_address=(BLOCKED_NAME, 0))
    blocked(connection.connect, "not-allowed")
    assert scene.far_side() == scene.untouched()
    assert scene.lab.dns.queries(BLOCKED_NAME) == 0


def test_bind_to_literal_and_allowed_addresses_still_works(scene: Scene) -> None:
    for address in (("", 0), ("0.0.0.0", 0), ("127.0.0.1", 0), (b"127.0.0.1", 0), Endpoint("127.1", 0)):
        with socket.socket() as sock:
            sock.bind(address)
            assert sock.getsockname()[0] in ("0.0.0.0", "127.0.0.1")
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
    with socket.socket() as sock:
        sock.bind((ALLOWED_NAME, 0))  # an allowed name, resolved through the guard (198.51.100.10 is on lo here)
        assert sock.getsockname()[0] == ALLOWED_V4
    with socket.create_connection((ALLOWED_V4, 443), 3, ("127.0.0.1", 0)) as sock:
        assert sock.getsockname()[0] == "127.0.0.1"
    assert scene.allowed.accepted == 1


def test_bind_hostname_through_underscore_socket_is_refused(scene: Scene) -> None:
    sock = _socket.socket()
    try:
        blocked(lambda: sock.bind((BLOCKED_NAME, 0)), "unverified-address")
        blocked(lambda: sock.bind((Text("127.0.0.1"), 0)), "unverified-address")
        sock.bind(("127.0.0.1", 0))
    finally:
        sock.close()


def test_bind_hostname_in_pinned_resolver_mode_never_asks_the_system_resolver(netlab: Lab) -> None:
    build_scene(netlab)
    with sockguard.guarded(allow=ALLOW, allow_loopback=False) as state:
        from sockguard.resolver import Resolver

        state.resolver = Resolver([f"{DNS_SERVER}:53"])
        with socket.socket() as sock:
            blocked(lambda: sock.bind((BLOCKED_NAME, 0)), "not-allowed")
        netlab.dns.clear_log()
        with socket.socket() as sock:
            sock.bind((ALLOWED_NAME, 0))
    assert netlab.dns.queries(BLOCKED_NAME) == 0
    assert netlab.dns.queries(ALLOWED_NAME) >= 1  # asked of the pinned server, by sockguard, with dnspython


# -- 3. ports ---------------------------------------------------------------------------------------------------------


PORTS = {
    "IntEnum": lambda p: enum.IntEnum("Service", {"PORT": p}).PORT,
    "int subclass": lambda p: type("Number", (int,), {})(p),
    "__index__": Index,
}


@pytest.mark.parametrize("kind", PORTS)
def test_ports_are_decided_on_their_integer_value(scene: Scene, kind: str) -> None:
    socket.getaddrinfo(ALLOWED_NAME, 443)
    make = PORTS[kind]
    blocked(lambda: tcp_connect((ALLOWED_V4, make(80))), "not-allowed")  # *.allowed.test:443 does not cover :80
    blocked(lambda: tcp_connect((ALLOWED_V4, make(22))), "not-allowed")
    blocked(lambda: tcp_connect((INTERNAL_V4, make(80))), "raw-ip")  # 10.0.0.0/8:5432 does not cover :80
    assert scene.far_side() == scene.untouched()
    tcp_connect((ALLOWED_V4, make(443)))
    assert scene.allowed.accepted == 1


def test_a_port_that_changes_its_value_is_read_once_and_c_gets_that_value(scene: Scene) -> None:
    socket.getaddrinfo(ALLOWED_NAME, 443)
    port = Index(443, 80, 80, 80)  # 443 when the guard asks, 80 afterwards
    tcp_connect((ALLOWED_V4, port))
    assert port.calls == 1
    assert scene.allowed.accepted == 1 and scene.targets["allowed-host:80"].accepted == 0


def test_an_unknown_port_meets_only_port_less_allow_rules_and_every_port_scoped_deny(netlab: Lab) -> None:
    """Through ``_socket``, C calls ``__index__`` itself before the audit event: the floor cannot know the port."""
    scene = build_scene(netlab)

    def underscore(port: Any) -> None:
        tcp_connect((ALLOWED_V4, port), _socket.socket)

    with sockguard.guarded(allow=[f"{ALLOWED_V4}:443"], allow_loopback=False):
        blocked(lambda: underscore(Index(443)), "raw-ip")  # a port-scoped allow never covers an unknown port
    with sockguard.guarded(allow=[ALLOWED_V4], deny=[f"{ALLOWED_V4}:22"], allow_loopback=False):
        blocked(lambda: underscore(Index(443)), "denied")  # a port-scoped deny always meets it
        assert scene.far_side() == scene.untouched() and scene.allowed.accepted == 0
    with sockguard.guarded(allow=[ALLOWED_V4], allow_loopback=False):
        underscore(Index(443))  # a port-less allow rule covers any port
    assert scene.allowed.accepted == 1


def test_unknown_port_semantics_in_the_policy() -> None:
    policy = Policy(["api.example.com:443", "10.0.0.0/8:5432", "198.51.100.0/24"], ["203.0.113.0/24:22"])
    assert policy.check_name("api.example.com", None).allowed  # a lookup without a port: the connect decides
    assert not policy.check_name("api.example.com", UNKNOWN_PORT).allowed
    assert not policy.check_address("10.0.0.5", UNKNOWN_PORT).allowed
    assert policy.check_address("198.51.100.7", UNKNOWN_PORT).allowed
    assert policy.check_address("203.0.113.9", UNKNOWN_PORT).reason == "denied"  # the port-scoped deny meets it
    assert policy.check_address("203.0.113.9", 80).reason == "raw-ip"
    deny = Policy(["203.0.113.0/24"], ["203.0.113.0/24:22", "evil.example.com:22"])
    assert deny.check_address("203.0.113.9", UNKNOWN_PORT).reason == "denied"
    assert deny.check_address("203.0.113.9", 80).allowed
    assert deny.check_address("203.0.113.9", None).allowed  # a lookup's answer: the connect meets the deny
    assert deny.check_name("evil.example.com", UNKNOWN_PORT).reason == "denied"
    assert deny.check_name("evil.example.com", None).reason == "not-allowed"


def test_port_parsers() -> None:
    class Digits(str):
        def isdigit(self) -> bool:  # lies: C reads the characters
            return False

    assert canonical.port_number(Port.HTTPS) == 443 and type(canonical.port_number(Port.HTTPS)) is int
    assert canonical.port_number(Digits("443")) == 443
    assert canonical.port_number("https") is None and canonical.port_number(None) is None
    assert canonical.port_number("٤٤٣") is None  # not ASCII digits: a service name to glibc
    assert canonical.connect_port(Port.HTTP) == 80
    assert canonical.connect_port(Index(80)) == UNKNOWN_PORT


# -- 4. the resolver's environment -----------------------------------------------------------------------------------


@pytest.fixture
def search_env(netlab: Lab, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LOCALDOMAIN", EVIL_SUFFIX)
    monkeypatch.setenv("RES_OPTIONS", "ndots:5")
    # glibc reads the variables when it (re)loads its configuration: a changed resolv.conf makes it reload now
    netlab.use_nameservers(DNS_SERVER, ndots=1)
    testing.reset()
    yield
    monkeypatch.delenv("LOCALDOMAIN")
    monkeypatch.delenv("RES_OPTIONS")
    testing.reset()


def _expanded(lab: Lab) -> list[str]:
    return [name for name, _, _, _ in lab.dns.log() if name.endswith(EVIL_SUFFIX) or name.endswith("corp.test")]


def test_localdomain_and_res_options_add_no_undecided_name(scene: Scene, search_env: None) -> None:
    assert socket.getaddrinfo(ALLOWED_NAME, 443, socket.AF_INET)[0][4] == (ALLOWED_V4, 443)
    assert socket.gethostbyname(FAR_NAME) == FAR_V4
    assert socket.gethostbyname_ex(ALLOWED_NAME)[2] == [ALLOWED_V4]
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("missing.allowed.test", 443)  # glibc would try missing.allowed.test.evil.test next
    tcp_connect((ALLOWED_NAME, 443))
    assert scene.allowed.accepted == 1
    assert _expanded(scene.lab) == []
    assert scene.far_side() == scene.untouched()


def test_search_list_in_resolv_conf_adds_no_undecided_name(scene: Scene) -> None:
    with scene.lab.nameservers(DNS_SERVER, search=[EVIL_SUFFIX, "corp.test"], ndots=5):
        testing.reset()
        assert socket.getaddrinfo(ALLOWED_NAME, 443, socket.AF_INET)[0][4] == (ALLOWED_V4, 443)
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo("missing.allowed.test", 443)
    assert _expanded(scene.lab) == []
    assert scene.far_side() == scene.untouched()


def test_allowed_search_candidates_are_still_tried_in_order(netlab: Lab) -> None:
    """Transparent for what is allowed: a short name still finds its search-list candidate when the policy allows
    the candidate, and only allowed candidates are asked for."""
    build_scene(netlab)
    with netlab.nameservers(DNS_SERVER, search=[EVIL_SUFFIX, "allowed.test"]):
        testing.reset()
        with sockguard.guarded(allow=["api", "*.allowed.test"], allow_loopback=False):
            assert socket.getaddrinfo("api", 443, socket.AF_INET)[0][4] == (ALLOWED_V4, 443)
            assert socket.gethostbyname("api") == ALLOWED_V4
    names = [name for name, _, _, _ in netlab.dns.log()]
    assert "api.allowed.test" in names and "api.evil.test" not in names
    assert set(names) <= {"api.allowed.test", "api"}


def test_hosts_file_names_still_resolve_without_dns(netlab: Lab) -> None:
    with netlab.nameservers(DNS_SERVER, search=[EVIL_SUFFIX], ndots=5):
        testing.reset()
        with sockguard.guarded(allow=["static.netlab.test", "localhost"], allow_loopback=True):
            assert socket.gethostbyname("static.netlab.test") == "198.51.100.30"
            assert socket.getaddrinfo("localhost", 80, socket.AF_INET)[0][4][0] == "127.0.0.1"
    assert netlab.dns.log() == []


def test_hostaliases_cannot_rewrite_an_allowed_name(netlab: Lab, tmp_path: Any, monkeypatch: Any) -> None:
    build_scene(netlab)
    aliases = tmp_path / "aliases"
    aliases.write_text(f"shortname {BLOCKED_NAME}\n")
    monkeypatch.setenv("HOSTALIASES", str(aliases))
    testing.reset()
    with sockguard.guarded(allow=["shortname"], allow_loopback=False), pytest.raises(socket.gaierror):
        socket.getaddrinfo("shortname", 80)
    assert netlab.dns.queries(BLOCKED_NAME) == 0


@pytest.mark.parametrize("set_variable", ["os.environ", "os.putenv"])
def test_underscore_socket_lookup_is_refused_when_glibc_would_expand_it(netlab: Lab, set_variable: str) -> None:
    """A lookup that bypasses the wrappers goes to glibc with the name as given: refused when its search list
    would add a name the policy does not allow (also after a bare os.putenv, which os.environ never sees)."""
    build_scene(netlab)
    try:
        with sockguard.guarded(allow=ALLOW, allow_loopback=False):
            if set_variable == "os.environ":
                os.environ["LOCALDOMAIN"] = EVIL_SUFFIX
            else:  # seen only through the os.putenv audit event
                os.putenv("LOCALDOMAIN", EVIL_SUFFIX)
            blocked(lambda: _socket.getaddrinfo(ALLOWED_NAME, 443), "search-list")
            blocked(lambda: _socket.gethostbyname(ALLOWED_NAME), "search-list")
            _socket.getaddrinfo(ALLOWED_NAME + ".", 443)  # absolute: glibc adds nothing
    finally:
        os.environ.pop("LOCALDOMAIN", None)
        os.unsetenv("LOCALDOMAIN")
        testing.reset()
    assert _expanded(netlab) == []


def test_search_candidates_follow_glibc() -> None:
    config = resolvconf.Config(search=("a.test", "b.test"), ndots=1)
    assert config.candidates("x", False) == ["x.a.test", "x.b.test", "x"]
    assert config.candidates("x.y", False) == ["x.y", "x.y.a.test", "x.y.b.test"]
    assert config.candidates("x.y", True) == ["x.y"]
    config = resolvconf.Config(search=("a.test",), ndots=5, hosts={"h.test": frozenset({4})})
    assert config.candidates("api.example.com", False) == ["api.example.com.a.test", "api.example.com"]
    assert config.in_hosts("h.test", socket.AF_INET) and not config.in_hosts("h.test", socket.AF_INET6)
    assert resolvconf.Config().candidates("api.example.com", False) == ["api.example.com"]


# -- 6. raw sockets and source routes ------------------------------------------------------------------------------

RAW_KINDS = {
    "AF_INET SOCK_RAW IPPROTO_RAW": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
    "AF_INET SOCK_RAW IPPROTO_UDP": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP),
    "AF_INET6 SOCK_RAW": (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_UDP),
    "AF_PACKET SOCK_RAW": (socket.AF_PACKET, socket.SOCK_RAW, 0),
    "AF_PACKET SOCK_DGRAM": (socket.AF_PACKET, socket.SOCK_DGRAM, 0),
    "AF_INET SOCK_RAW nonblocking": (socket.AF_INET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.IPPROTO_RAW),
}


@pytest.mark.parametrize("kind", RAW_KINDS)
@pytest.mark.parametrize("constructor", ["socket.socket", "_socket.socket"])
def test_raw_and_packet_sockets_are_refused_unless_allow_raw(scene: Scene, kind: str, constructor: str) -> None:
    make = socket.socket if constructor == "socket.socket" else _socket.socket
    blocked(lambda: make(*RAW_KINDS[kind]).close(), "raw-socket")
    with sockguard.guarded(allow=ALLOW, allow_loopback=False, allow_raw=True):
        make(*RAW_KINDS[kind]).close()
    assert scene.far_side() == scene.untouched()


SCTP_KINDS = {
    "AF_INET SOCK_STREAM": (socket.AF_INET, socket.SOCK_STREAM, 132),
    "AF_INET SOCK_SEQPACKET": (socket.AF_INET, socket.SOCK_SEQPACKET, 132),
    "AF_INET6 SOCK_STREAM": (socket.AF_INET6, socket.SOCK_STREAM, 132),
}


@pytest.mark.parametrize("kind", SCTP_KINDS)
@pytest.mark.parametrize("constructor", ["socket.socket", "_socket.socket"])
def test_sctp_sockets_are_refused_unless_allow_raw(scene: Scene, kind: str, constructor: str) -> None:
    """An SCTP association is multi-homed: the peer's other addresses (and any a program hands to sctp_connectx)
    are reached with no connect to decide. Refused before the kernel sees the socket() call — this machine's kernel
    has no SCTP, so the kernel's own answer (EPROTONOSUPPORT) shows that the guard's refusal came first."""
    make = socket.socket if constructor == "socket.socket" else _socket.socket
    blocked(lambda: make(*SCTP_KINDS[kind]).close(), "raw-socket")
    with sockguard.guarded(allow=ALLOW, allow_loopback=False, allow_raw=True):
        try:
            make(*SCTP_KINDS[kind]).close()  # a kernel with SCTP: created
        except OSError as error:
            assert not isinstance(error, sockguard.EgressBlocked)  # the kernel's answer, not the guard's
    assert scene.far_side() == scene.untouched()


@pytest.mark.parametrize("adopt", ["fileno=", "fromfd (lying about its type)", "dup"])
def test_an_adopted_raw_descriptor_is_refused(scene: Scene, adopt: str) -> None:
    with sockguard.guarded(allow=ALLOW, allow_loopback=False, allow_raw=True):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    try:
        if adopt == "fileno=":
            blocked(lambda: socket.socket(fileno=os.dup(raw.fileno())), "raw-socket")
        elif adopt == "dup":
            blocked(raw.dup, "raw-socket")
        else:
            blocked(lambda: socket.fromfd(raw.fileno(), socket.AF_INET, socket.SOCK_STREAM), "raw-socket")
    finally:
        raw.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket(fileno=os.dup(udp.fileno())) as copy:
        assert copy.type == socket.SOCK_DGRAM  # an ordinary descriptor is adopted as before


def _lsrr(*hops: str, kind: int = 131) -> bytes:
    body = b"".join(socket.inet_aton(hop) for hop in hops)
    return bytes([1, kind, 3 + len(body), 4]) + body


SOURCE_ROUTES: dict[str, tuple[int, int, int, Any]] = {
    "IP_OPTIONS LSRR": (socket.AF_INET, socket.IPPROTO_IP, socket.IP_OPTIONS, _lsrr(ALLOWED_V4, BLOCKED_V4)),
    "IP_OPTIONS SSRR": (socket.AF_INET, socket.IPPROTO_IP, socket.IP_OPTIONS, _lsrr(ALLOWED_V4, kind=137)),
    "IP_RETOPTS LSRR": (socket.AF_INET, socket.IPPROTO_IP, rawsockets.IP_RETOPTS, _lsrr(BLOCKED_V4)),
    "IP_OPTIONS on AF_INET6": (socket.AF_INET6, socket.IPPROTO_IP, socket.IP_OPTIONS, _lsrr(BLOCKED_V4)),
    "IPV6_RTHDR": (
        socket.AF_INET6,
        socket.IPPROTO_IPV6,
        socket.IPV6_RTHDR,
        bytes([0, 2, 0, 1, 0, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, BLOCKED_V6),
    ),
    "IPV6_2292RTHDR": (socket.AF_INET6, socket.IPPROTO_IPV6, rawsockets.IPV6_2292RTHDR, b"\0\2\0\1" + b"\0" * 20),
}


@pytest.mark.parametrize("option", SOURCE_ROUTES)
def test_source_routes_and_routing_headers_are_refused(scene: Scene, option: str) -> None:
    family, level, name, value = SOURCE_ROUTES[option]
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        blocked(lambda: sock.setsockopt(level, name, value), "source-route")
        blocked(lambda: sock.setsockopt(Index(level), Index(name), bytearray(value)), "source-route")
        destination = (ALLOWED_V4, UDP_PORT) if family == socket.AF_INET else ("::ffff:" + ALLOWED_V4, UDP_PORT)
        blocked(lambda: sock.sendmsg([b"x"], [(level, name, value)], 0, destination), "source-route")
        blocked(lambda: sock.sendmsg([b"x"], iter([Pair((Index(level), name, bytearray(value)))])), "source-route")
    assert scene.far_side() == scene.untouched()


def test_other_socket_options_still_work(scene: Scene) -> None:
    record_route = bytes([7, 7, 4, 0, 0, 0, 0, 0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 5)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, record_route)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 5
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RTHDR, b"")  # removing a header is fine
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def test_source_route_parser() -> None:
    route = rawsockets.source_route
    assert route(0, 4, _lsrr("1.2.3.4"))
    assert route(0, 4, bytes([1, 1]) + _lsrr("1.2.3.4"))  # after no-ops
    assert route(0, 4, bytes([3, 7, 4, 0, 0, 0, 0]))  # LSRR's number without the copy bit
    assert route(0, 4, bytes([68, 1]))  # a malformed list: refused rather than guessed at
    assert route(0, 4, bytes([7, 7, 4, 0, 0, 0, 0, 0])) is None  # record route
    assert route(0, 4, bytes([0]) + _lsrr("1.2.3.4")) is None  # after the end of the list: not an option
    assert route(0, 4, 0) is None and route(0, 4, 0x00040783)  # an int is the 4 bytes C passes
    assert route(41, 57, b"\0") and route(41, 57, b"") is None and route(41, 6, b"\0\0\0\0")
    assert route(0, 2, _lsrr("1.2.3.4")) is None  # IP_TTL with any value is not a route


# -- 7. reverse lookups ----------------------------------------------------------------------------------------------


def test_reverse_lookups_of_arbitrary_addresses_send_no_ptr_query(scene: Scene) -> None:
    blocked(lambda: socket.gethostbyaddr(STRANGER_V4), "reverse-lookup")
    blocked(lambda: socket.gethostbyaddr(STRANGER_V6), "reverse-lookup")
    blocked(lambda: socket.gethostbyaddr(b"203.0.113.7"), "reverse-lookup")
    blocked(lambda: socket.gethostbyaddr("0xcb.0.113.7"), "reverse-lookup")  # any spelling C accepts
    blocked(lambda: socket.getnameinfo((STRANGER_V4, 80), 0), "reverse-lookup")
    blocked(lambda: socket.getnameinfo((Text(STRANGER_V6), 80, 0, 0), Index(0)), "reverse-lookup")
    blocked(lambda: _socket.gethostbyaddr(STRANGER_V4), "reverse-lookup")
    blocked(lambda: _socket.getnameinfo((STRANGER_V4, 80), socket.NI_NUMERICHOST), "reverse-lookup")
    assert socket.getfqdn(STRANGER_V4) == STRANGER_V4  # getfqdn() falls back on the OSError
    assert socket.getnameinfo((STRANGER_V4, 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV) == (STRANGER_V4, "80")
    assert scene.far_side() == scene.untouched()


def test_reverse_lookups_the_policy_vouches_for_still_work(netlab: Lab) -> None:
    """Allowed: an address an IP rule covers, one learned from an allowed name, this host's own (198.51.100.10 is on
    lo in the lab), loopback. Each of them asks the lab's DNS server (which answers NXDOMAIN: herror)."""
    build_scene(netlab)
    with sockguard.guarded(allow=[*ALLOW, STRANGER_V4], allow_loopback=False):
        socket.getaddrinfo(FAR_NAME, 443)
        for address in (STRANGER_V4, FAR_V4, ALLOWED_V4):
            with pytest.raises(socket.herror):
                socket.gethostbyaddr(address)
        assert socket.getnameinfo(("127.0.0.1", 80), 0)[0] == "localhost"  # from /etc/hosts
        with pytest.raises(socket.herror):
            socket.gethostbyaddr(FAR_NAME)  # a name: resolved through the guard, then its address looked up
    ptr = collections.Counter(name for name, kind, _, _ in netlab.dns.log() if kind == "PTR")
    assert ptr == {"7.113.0.203.in-addr.arpa": 1, "99.100.51.198.in-addr.arpa": 2, "10.100.51.198.in-addr.arpa": 1}


def test_no_reverse_query_reaches_the_system_resolver_in_pinned_mode(netlab: Lab) -> None:
    build_scene(netlab)
    with sockguard.guarded(allow=[*ALLOW, STRANGER_V4], allow_loopback=False) as state:
        from sockguard.resolver import Resolver

        state.resolver = Resolver([f"{netlab.BLACKHOLE_DNS}:53"], timeout=0.5, attempts=1)
        for address in (STRANGER_V4, ALLOWED_V4):
            blocked(lambda: socket.gethostbyaddr(address), "pinned-resolver")  # noqa: B023
            blocked(lambda: socket.getnameinfo((address, 80), 0), "pinned-resolver")  # noqa: B023
        assert socket.getnameinfo(("127.0.0.1", 80), 0)[0] == "localhost"  # /etc/hosts answers, no resolver
        assert socket.getfqdn(STRANGER_V4) == STRANGER_V4
    assert [entry for entry in netlab.dns.log() if entry[1] == "PTR"] == []


# -- 8. caches key on what C gets, never on the caller's object -----------------------------------------------------


def test_a_forged_str_subclass_never_hits_a_cached_allowed_entry(scene: Scene) -> None:
    socket.getaddrinfo(ALLOWED_NAME, 443)
    tcp_connect((ALLOWED_V4, 443))  # now cached as allowed, and healthy in the breaker
    assert scene.allowed.accepted == 1
    blocked(lambda: socket.getaddrinfo(Forged(BLOCKED_NAME, ALLOWED_NAME), 443), "not-allowed")
    blocked(lambda: socket.gethostbyname(Forged(BLOCKED_NAME, ALLOWED_NAME)), "not-allowed")
    blocked(lambda: tcp_connect((Forged(BLOCKED_V4, ALLOWED_V4), 443)), "raw-ip")
    blocked(lambda: tcp_connect((Forged(BLOCKED_V4, ALLOWED_V4), 443), _socket.socket), "unverified-address")
    blocked(lambda: tcp_connect(Pair((Forged(BLOCKED_V4, ALLOWED_V4), 443)), _socket.socket), "unverified-address")
    assert scene.targets["blocked:443"].accepted == 0
    assert scene.lab.dns.queries(BLOCKED_NAME) == 0
    assert scene.far_side() == scene.untouched()


# -- integrations -------------------------------------------------------------------------------------------------


def test_dnspython_ptr_questions_are_reverse_lookups(netlab: Lab) -> None:
    pytest.importorskip("dns.query")
    import dns.message
    import dns.query
    import dns.reversename

    build_scene(netlab)
    query = dns.message.make_query(dns.reversename.from_address(STRANGER_V4), "PTR")
    with sockguard.guarded(allow=ALLOW, allow_loopback=True):
        blocked(lambda: dns.query.udp(query, DNS_SERVER, timeout=2), "reverse-lookup")
    assert netlab.dns.log() == []


# -- odd corners -----------------------------------------------------------------------------------------------------


def test_an_ipv6_zone_that_looks_like_a_name_never_reaches_dns(netlab: Lab) -> None:
    """``fe80::1%evil.test``: C takes the zone as an interface name (if_nametoindex), never as a DNS name."""
    build_scene(netlab)
    with sockguard.guarded(allow=["fe80::/10"], allow_loopback=False):
        for address in (("fe80::1%evil.test", 80), ("fe80::1%evil.test", 80, 0, 0), (b"fe80::1%evil.test", 80)):
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock, pytest.raises(OSError):
                sock.connect(address)
    with sockguard.guarded(allow=ALLOW, allow_loopback=False), socket.socket(socket.AF_INET6) as sock:
        blocked(lambda: sock.connect(("fe80::1%lo", 80)), "raw-ip")  # link-local: internal, no IP rule
    assert [name for name, _, _, _ in netlab.dns.log() if "evil" in name] == []


def test_empty_and_missing_addresses_fail_as_in_c_and_unix_sockets_still_work(scene: Scene) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(TypeError, match="AF_INET address must be a pair"):
            sock.sendmsg([b"x"], [], 0, ())
        with pytest.raises(TypeError, match="AF_INET address must be tuple, not NoneType"):
            sock.sendto(b"x", None)
        with pytest.raises(OSError):
            sock.send(b"x")  # not connected: nothing to send to
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"ping")
        assert right.recv(4) == b"ping"
    assert scene.far_side() == scene.untouched()
