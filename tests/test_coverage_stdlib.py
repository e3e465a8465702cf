"""Coverage matrix, standard library (docs/coverage.md): socket, http.client, urllib, smtplib, ftplib, UDP, IPv6.

Each cell runs against the netlab: the allowed destination works (the far side counts it), the blocked
ones raise the client's own error carrying EgressBlocked and the blocked side counts no connection, no
datagram and no DNS query.
"""

from __future__ import annotations

import ftplib
import http.client
import smtplib
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import pytest

import sockguard
from tests.coverage_support import (
    ALLOWED_NAME,
    BLOCKED_NAME,
    BLOCKED_V4,
    BLOCKED_V6,
    POLICY,
    SCENARIOS,
    UDP_PORT,
    Scene,
    assert_wraps_block,
    scene_fixture,  # noqa: F401  (the `scene` fixture)
)

HOSTS = {"allowed": ALLOWED_NAME, "blocked-name": BLOCKED_NAME, "blocked-raw-ip": BLOCKED_V4}


@dataclass(frozen=True)
class Client:
    call: Callable[[Scene, str], object]  # (scene, scenario); raises when blocked
    errors: tuple[type[BaseException], ...]  # the client's own error type(s) on a block
    kind: str  # what the allowed cell proves arrived: "tcp", "http", "udp", "tcp-close"
    scenarios: tuple[str, ...] = SCENARIOS[:3]  # redirects only where the client follows them
    port: int = 80


def _connect(scene: Scene, scenario: str) -> None:
    sock = socket.socket()
    try:
        sock.connect((HOSTS[scenario], 80))  # hostname tuple: C would resolve it itself, raising no event
    finally:
        sock.close()


def _connect_ex(scene: Scene, scenario: str) -> None:
    sock = socket.socket()
    try:
        assert sock.connect_ex((HOSTS[scenario], 80)) == 0
    finally:
        sock.close()


def _create_connection(scene: Scene, scenario: str) -> None:
    socket.create_connection((HOSTS[scenario], 80), timeout=3).close()


def _getaddrinfo_then_connect(scene: Scene, scenario: str) -> None:
    family, kind, proto, _, address = socket.getaddrinfo(HOSTS[scenario], 80, socket.AF_INET, socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.connect(address)


def _http_client(scene: Scene, scenario: str) -> str:
    conn = http.client.HTTPConnection(HOSTS[scenario], 80, timeout=3)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _urllib(scene: Scene, scenario: str) -> str:
    with urllib.request.urlopen(scene.url(scenario), timeout=3) as response:  # follows redirects
        return response.read().decode()


def _smtplib(scene: Scene, scenario: str) -> None:
    # The lab server closes at once: an allowed connect ends in SMTPServerDisconnected, after the far side
    # counted it (a block raises before any connect).
    try:
        smtplib.SMTP(HOSTS[scenario], 25, timeout=3)
    except smtplib.SMTPServerDisconnected:
        pass


def _ftplib(scene: Scene, scenario: str) -> None:
    try:
        ftplib.FTP(HOSTS[scenario], timeout=3)
    except EOFError:  # the lab server closed before a greeting: the connect itself went through
        pass


def _udp_sendto(scene: Scene, scenario: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"x", (HOSTS[scenario], UDP_PORT))


def _udp_sendmsg(scene: Scene, scenario: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendmsg([b"x"], [], 0, (HOSTS[scenario], UDP_PORT))


def _udp_connected_send(scene: Scene, scenario: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((HOSTS[scenario], UDP_PORT))
        sock.send(b"x")


V6_HOSTS = {"allowed": ALLOWED_NAME, "blocked-name": BLOCKED_NAME, "blocked-raw-ip": BLOCKED_V6}


def _ipv6_connect(scene: Scene, scenario: str) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.connect((V6_HOSTS[scenario], 80))  # the AAAA answer / a raw IPv6 address


def _ipv6_create_connection(scene: Scene, scenario: str) -> None:
    infos = socket.getaddrinfo(V6_HOSTS[scenario], 80, socket.AF_INET6, socket.SOCK_STREAM)
    socket.create_connection(infos[0][4][:2], timeout=3).close()


def _ipv4_mapped(scene: Scene, scenario: str) -> None:
    # "allowed" connects to the mapped form of an address the guard learned from the allowed name.
    if scenario == "allowed":
        socket.getaddrinfo(ALLOWED_NAME, 80, socket.AF_INET)
    target = {"allowed": "::ffff:198.51.100.10", "blocked-raw-ip": f"::ffff:{BLOCKED_V4}"}[scenario]
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.connect((target, 80))


URLLIB_ERRORS = (urllib.error.URLError,)
CLIENTS: dict[str, Client] = {
    "socket.connect(hostname tuple)": Client(_connect, (sockguard.EgressBlocked,), "tcp"),
    "socket.connect_ex": Client(_connect_ex, (sockguard.EgressBlocked,), "tcp"),
    "socket.create_connection": Client(_create_connection, (sockguard.EgressBlocked,), "tcp"),
    "socket.getaddrinfo+connect": Client(_getaddrinfo_then_connect, (sockguard.EgressBlocked,), "tcp"),
    "http.client": Client(_http_client, (sockguard.EgressBlocked,), "http"),
    "urllib.request": Client(_urllib, URLLIB_ERRORS, "http", SCENARIOS),
    "smtplib": Client(_smtplib, (sockguard.EgressBlocked,), "tcp-close", port=25),
    "ftplib": Client(_ftplib, (sockguard.EgressBlocked,), "tcp-close", port=21),
    "udp.sendto": Client(_udp_sendto, (sockguard.EgressBlocked,), "udp"),
    "udp.sendmsg": Client(_udp_sendmsg, (sockguard.EgressBlocked,), "udp"),
    "udp.connect+send": Client(_udp_connected_send, (sockguard.EgressBlocked,), "udp"),
    "ipv6.connect": Client(_ipv6_connect, (sockguard.EgressBlocked,), "tcp6"),
    "ipv6.create_connection": Client(_ipv6_create_connection, (sockguard.EgressBlocked,), "tcp6"),
    "ipv4-mapped-ipv6.connect": Client(_ipv4_mapped, (sockguard.EgressBlocked,), "tcp", ("allowed", "blocked-raw-ip")),
}
CELLS = [(name, scenario) for name, client in CLIENTS.items() for scenario in client.scenarios]


@pytest.mark.parametrize(("client", "scenario"), CELLS)
def test_stdlib_matrix(scene: Scene, client: str, scenario: str) -> None:
    spec = CLIENTS[client]
    extra = []
    if spec.kind == "tcp-close":  # smtp/ftp: servers that accept and hang up, on the same two addresses
        extra = [scene.lab.tcp(address, spec.port, close=True) for address in (scene.allowed.host, BLOCKED_V4)]
    with sockguard.guarded(**POLICY):
        if scenario == "allowed":
            result = spec.call(scene, scenario)
        else:
            with pytest.raises(BaseException) as info:
                spec.call(scene, scenario)
    if scenario == "allowed":
        arrived = {
            "tcp": lambda: scene.allowed.accepted + scene.allowed_v6.accepted,
            "tcp6": lambda: scene.allowed_v6.accepted,
            "http": lambda: scene.allowed.accepted + scene.allowed_v6.accepted,
            "udp": lambda: scene.allowed_udp.datagrams,
            "tcp-close": lambda: extra[0].accepted,
        }[spec.kind]()
        assert arrived == 1
        if spec.kind == "http":
            assert result == "hello"
        return
    blocked = assert_wraps_block(info.value, *spec.errors)
    assert blocked.reason in ("not-allowed", "raw-ip")
    scene.assert_blocked_side_untouched()
    if extra:
        assert extra[1].accepted == 0
    if scenario == "redirect-to-blocked":
        assert scene.redirect.accepted == 1  # the first hop was allowed; the hop to the blocked host was not
        assert blocked.host == BLOCKED_NAME
