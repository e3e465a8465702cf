"""Coverage matrix, asyncio (docs/coverage.md): open_connection, loop.create_connection, loop.getaddrinfo,
create_datagram_endpoint, sock_connect. asyncio resolves in the default executor (a thread): the guard's
decision and its address-to-name memory must hold there too."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

import sockguard
from tests.coverage_support import (
    ALLOWED_NAME,
    ALLOWED_V4,
    BLOCKED_NAME,
    BLOCKED_V4,
    POLICY,
    UDP_PORT,
    Scene,
    assert_wraps_block,
    scene_fixture,  # noqa: F401  (the `scene` fixture)
)

HOSTS = {"allowed": ALLOWED_NAME, "blocked-name": BLOCKED_NAME, "blocked-raw-ip": BLOCKED_V4}
ALL = ("allowed", "blocked-name", "blocked-raw-ip")


async def _open_connection(host: str) -> None:
    reader, writer = await asyncio.open_connection(host, 80, family=socket.AF_INET)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.read()).endswith(b"hello")
    writer.close()
    await writer.wait_closed()


async def _create_connection(host: str) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, host, 80, family=socket.AF_INET)
    transport.close()


async def _getaddrinfo(host: str) -> None:
    infos = await asyncio.get_running_loop().getaddrinfo(host, 80, family=socket.AF_INET)
    assert {info[4][0] for info in infos} == {ALLOWED_V4}


async def _datagram(host: str) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=(host, UDP_PORT), family=socket.AF_INET
    )
    transport.sendto(b"x")
    transport.close()


async def _sock_connect(host: str) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, 80))  # a name here goes through loop.getaddrinfo


@dataclass(frozen=True)
class Client:
    call: Callable[[str], Awaitable[None]]
    kind: str  # what arrives when allowed: "tcp", "udp", "dns"
    scenarios: tuple[str, ...] = ALL


CLIENTS = {
    "asyncio.open_connection": Client(_open_connection, "tcp"),
    "loop.create_connection": Client(_create_connection, "tcp"),
    # A numeric host is not a lookup (no DNS leaves): the connect decides, so there is no raw-IP cell.
    "loop.getaddrinfo": Client(_getaddrinfo, "dns", ("allowed", "blocked-name")),
    "loop.create_datagram_endpoint": Client(_datagram, "udp"),
    "loop.sock_connect": Client(_sock_connect, "tcp"),
}
CELLS = [(name, scenario) for name, client in CLIENTS.items() for scenario in client.scenarios]


@pytest.mark.parametrize(("client", "scenario"), CELLS)
def test_asyncio_matrix(scene: Scene, client: str, scenario: str) -> None:
    spec = CLIENTS[client]

    async def main() -> None:
        await spec.call(HOSTS[scenario])
        await asyncio.sleep(0)  # let a datagram transport flush

    with sockguard.guarded(**POLICY):
        if scenario == "allowed":
            asyncio.run(main())
        else:
            with pytest.raises(OSError) as info:
                asyncio.run(main())
    if scenario == "allowed":
        if spec.kind == "tcp":
            assert scene.allowed.accepted == 1
        elif spec.kind == "udp":
            assert scene.allowed_udp.datagrams == 1
        else:
            assert scene.lab.dns.queries(ALLOWED_NAME, "A") == 1
        return
    blocked = assert_wraps_block(info.value, sockguard.EgressBlocked)
    assert blocked.reason in ("not-allowed", "raw-ip")
    scene.assert_blocked_side_untouched()
