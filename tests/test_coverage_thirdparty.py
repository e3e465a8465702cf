"""Coverage matrix, third-party clients (docs/coverage.md): urllib3, requests, httpx (sync, async), aiohttp
(with aiodns installed, so its AsyncResolver), websockets, trio, anyio; and HTTP(S)_PROXY.

gevent, dnspython used directly and the aiodns details are in test_coverage_traps.py; C clients in
test_coverage_native.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import sockguard
from tests.coverage_support import (
    ALLOWED_NAME,
    BLOCKED_NAME,
    BLOCKED_V4,
    POLICY,
    SCENARIOS,
    WS_NAME,
    Scene,
    assert_wraps_block,
    scene_fixture,  # noqa: F401  (the `scene` fixture)
)

aiohttp = pytest.importorskip("aiohttp")
anyio = pytest.importorskip("anyio")
httpx = pytest.importorskip("httpx")
requests = pytest.importorskip("requests")
trio = pytest.importorskip("trio")
urllib3 = pytest.importorskip("urllib3")
websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect as ws_connect  # noqa: E402
from websockets.sync.server import serve as ws_serve  # noqa: E402

HOSTS = {"allowed": ALLOWED_NAME, "blocked-name": BLOCKED_NAME, "blocked-raw-ip": BLOCKED_V4}
GET = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _urllib3(scene: Scene, scenario: str) -> str:
    return urllib3.PoolManager().request("GET", scene.url(scenario), timeout=3).data.decode()


def _requests(scene: Scene, scenario: str) -> str:
    return requests.get(scene.url(scenario), timeout=3).text


def _httpx(scene: Scene, scenario: str) -> str:
    with httpx.Client(follow_redirects=True, timeout=3) as client:
        return client.get(scene.url(scenario)).text


def _httpx_async(scene: Scene, scenario: str) -> str:
    async def main() -> str:
        async with httpx.AsyncClient(follow_redirects=True, timeout=3) as client:
            return (await client.get(scene.url(scenario))).text

    return asyncio.run(main())


def _aiohttp(scene: Scene, scenario: str) -> str:
    async def main() -> str:
        async with aiohttp.ClientSession() as session:
            # aiodns is installed, so this is c-ares: no lookup passes through Python's socket module.
            assert type(session.connector._resolver) is aiohttp.resolver.AsyncResolver
            async with session.get(scene.url(scenario)) as response:
                return await response.text()

    return asyncio.run(main())


def _websockets(scene: Scene, scenario: str) -> str:
    if scenario == "redirect-to-blocked":
        scene.lab.tcp(scene.redirect.host, 80, redirect_to=f"ws://{BLOCKED_NAME}/")
    url = {"allowed": f"ws://{WS_NAME}:8765/"}.get(scenario) or scene.url(scenario, "ws")

    async def main() -> str:
        async with ws_connect(url, open_timeout=3) as ws:
            await ws.send("hello")
            return str(await ws.recv())

    return asyncio.run(main())


async def _stream_get(stream: Any) -> bytes:
    await stream.send_all(GET) if hasattr(stream, "send_all") else await stream.send(GET)
    data = b""
    while True:
        try:
            chunk = await (stream.receive_some() if hasattr(stream, "receive_some") else stream.receive())
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            break
        if not chunk:
            break
        data += chunk
    return data


def _trio(scene: Scene, scenario: str) -> str:
    async def main() -> str:
        stream = await trio.open_tcp_stream(HOSTS[scenario], 80)
        async with stream:
            return (await _stream_get(stream)).decode().rpartition("\r\n\r\n")[2]

    return trio.run(main)


def _anyio(backend: str) -> Callable[[Scene, str], str]:
    def call(scene: Scene, scenario: str) -> str:
        async def main() -> str:
            async with await anyio.connect_tcp(HOSTS[scenario], 80) as stream:
                return (await _stream_get(stream)).decode().rpartition("\r\n\r\n")[2]

        return anyio.run(main, backend=backend)

    return call


@dataclass(frozen=True)
class Client:
    call: Callable[[Scene, str], str]
    errors: tuple[type[BaseException], ...]  # the client's own error types on a block
    scenarios: tuple[str, ...] = SCENARIOS


CLIENTS: dict[str, Client] = {
    "urllib3": Client(_urllib3, (urllib3.exceptions.MaxRetryError,)),
    "requests": Client(_requests, (requests.ConnectionError,)),
    "httpx": Client(_httpx, (httpx.ConnectError,)),
    "httpx-async": Client(_httpx_async, (httpx.ConnectError,)),
    "aiohttp+aiodns": Client(_aiohttp, (aiohttp.ClientConnectorError,)),
    "websockets": Client(_websockets, (sockguard.EgressBlocked,)),
    "trio": Client(_trio, (OSError,), SCENARIOS[:3]),
    "anyio-asyncio": Client(_anyio("asyncio"), (OSError,), SCENARIOS[:3]),
    "anyio-trio": Client(_anyio("trio"), (OSError,), SCENARIOS[:3]),
}
CELLS = [(name, scenario) for name, client in CLIENTS.items() for scenario in client.scenarios]


@pytest.fixture
def ws_server() -> Iterator[None]:
    """A WebSocket echo server on ws.allowed.test (198.51.100.12:8765), in this process: accepting raises no
    audit event, so the guard does not interfere with serving."""

    def echo(ws: Any) -> None:
        for message in ws:
            ws.send(message)

    with ws_serve(echo, "198.51.100.12", 8765) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield
        server.shutdown()
    thread.join(5)


@pytest.mark.parametrize(("client", "scenario"), CELLS)
def test_thirdparty_matrix(scene: Scene, client: str, scenario: str, request: pytest.FixtureRequest) -> None:
    spec = CLIENTS[client]
    if client == "websockets" and scenario == "allowed":
        request.getfixturevalue("ws_server")
    with sockguard.guarded(**POLICY):
        if scenario == "allowed":
            result = spec.call(scene, scenario)
        else:
            with pytest.raises(BaseException) as info:
                spec.call(scene, scenario)
    if scenario == "allowed":
        assert result == "hello"
        if client != "websockets":
            assert scene.allowed.accepted + scene.allowed_v6.accepted == 1
        return
    blocked = assert_wraps_block(info.value, *spec.errors)
    assert blocked.reason in ("not-allowed", "raw-ip")
    scene.assert_blocked_side_untouched()
    if scenario == "redirect-to-blocked":
        assert scene.redirect.accepted == 1
        assert blocked.host == BLOCKED_NAME


# -- proxies --------------------------------------------------------------------------------------

PROXY = "10.20.30.40"  # an internal address, as corporate proxies are
PROXY_PORT = 3128


def _via_proxy(client: str, url: str) -> str:
    if client == "urllib.request":
        import urllib.request

        # A fresh opener: urlopen() caches one (and its proxies) for the whole process.
        with urllib.request.build_opener().open(url, timeout=3) as response:
            return response.read().decode()
    if client == "requests":
        return requests.get(url, timeout=3).text
    if client == "httpx":
        with httpx.Client(timeout=3) as http:  # trust_env: reads HTTP_PROXY
            return http.get(url).text

    async def main() -> str:
        async with aiohttp.ClientSession(trust_env=True) as session, session.get(url) as response:
            return await response.text()

    return asyncio.run(main())


PROXY_CLIENTS = ("urllib.request", "requests", "httpx", "aiohttp")


PROXY_NAME = "proxy.corp.test"  # A 10.20.30.40


def _set_proxy(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://{host}:{PROXY_PORT}")


@pytest.mark.parametrize("proxy_host", [PROXY, PROXY_NAME])
@pytest.mark.parametrize("client", PROXY_CLIENTS)
def test_unlisted_proxy_is_blocked(scene: Scene, monkeypatch: pytest.MonkeyPatch, client: str, proxy_host: str) -> None:
    """HTTP_PROXY at a host no rule covers: the connection to the proxy is refused (the target itself is
    allowed), so nothing reaches the proxy, its name is never looked up, and the target is not either."""
    _set_proxy(monkeypatch, proxy_host)
    scene.lab.dns.set(PROXY_NAME, A=[PROXY])
    proxy = scene.lab.tcp(PROXY, PROXY_PORT, http=True, body="via proxy")
    with sockguard.guarded(**POLICY), pytest.raises(BaseException) as info:
        _via_proxy(client, f"http://{ALLOWED_NAME}/")
    blocked = assert_wraps_block(info.value, OSError, aiohttp.ClientError, httpx.ConnectError)
    assert blocked.port == PROXY_PORT
    if proxy_host == PROXY:
        assert (blocked.address, blocked.reason) == (PROXY, "raw-ip")
    else:
        assert (blocked.host, blocked.reason) == (PROXY_NAME, "not-allowed")
    assert proxy.accepted == 0
    assert scene.lab.dns.queries(PROXY_NAME) == 0
    assert scene.allowed.accepted == 0
    assert scene.lab.dns.queries(ALLOWED_NAME) == 0


@pytest.mark.parametrize("client", PROXY_CLIENTS)
def test_allowlisted_proxy_still_decides_the_target(scene: Scene, monkeypatch: pytest.MonkeyPatch, client: str) -> None:
    """With the proxy allowed, the client sends ``GET http://blocked.test/`` to it and never resolves the target:
    the socket layer sees only the proxy. The request-level check (sockguard/http/) decides the absolute-form
    target before the request is sent, so nothing reaches the proxy; an allowed target goes out through it.
    (HTTPS through a proxy, CONNECT: tests/test_http_requests.py.)"""
    _set_proxy(monkeypatch, PROXY)
    proxy = scene.lab.tcp(PROXY, PROXY_PORT, http=True, body="via proxy")
    with sockguard.guarded(allow=[*POLICY["allow"], f"{PROXY}:{PROXY_PORT}"], allow_loopback=False):
        with pytest.raises(BaseException) as info:
            _via_proxy(client, f"http://{BLOCKED_NAME}/")
        assert _via_proxy(client, f"http://{ALLOWED_NAME}/") == "via proxy"
    blocked = assert_wraps_block(info.value, OSError, aiohttp.ClientError, httpx.ProxyError, httpx.ConnectError)
    assert (blocked.operation, blocked.host, blocked.reason) == ("proxy-request", BLOCKED_NAME, "not-allowed")
    assert [r["path"] for r in proxy.requests] == [f"http://{ALLOWED_NAME}/"]  # absolute-form: the proxy fetches it
    scene.assert_blocked_side_untouched()
