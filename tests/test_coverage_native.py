"""Coverage matrix, clients that resolve or connect in C (docs/coverage.md): uvloop, psycopg (libpq), pycurl
(libcurl), grpcio (gRPC core).

Recorded honestly, cell by cell, for the **Python layer alone** (this pytest process has no preload library).
Where it covers a path, the test shows the block from the far side. Where it does not, the test shows the leak
from the far side too (inside the netlab, where a leak reaches only a lab server): if one of these starts to
pass through Python one day, the test fails and docs/coverage.md must change with it. The native layer
(docs/native.md) blocks every one of these leaks: tests/test_native_programs.py.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

import sockguard
from tests.coverage_support import (
    ALLOWED_NAME,
    BLOCKED_NAME,
    BLOCKED_V4,
    CHILD_PRELUDE,
    POLICY,
    SCENARIOS,
    Scene,
    assert_wraps_block,
    egress_blocked,
    guarded_env,
    run_stepped_child,
    scene_fixture,  # noqa: F401  (the `scene` fixture)
)

# -- uvloop (libuv resolves and connects in C), in a guarded child -----------------------------------

UVLOOP_CHILD = """
import asyncio, socket
import aiohttp, httpx, uvloop
HOSTS = {"allowed": "api.allowed.test", "blocked-name": "blocked.test", "blocked-raw-ip": "203.0.113.10"}
URLS = {**{k: f"http://{v}/" for k, v in HOSTS.items()}, "redirect-to-blocked": "http://redirect.allowed.test/"}

async def open_connection(host):
    reader, writer = await asyncio.open_connection(host, 80, family=socket.AF_INET)
    writer.write(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    data = await reader.read()
    writer.close()
    return data.rpartition(b"\\r\\n\\r\\n")[2]

async def create_connection(host):
    transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, host, 80)
    transport.close()

async def getaddrinfo(host):
    return [i[4][0] for i in await asyncio.get_running_loop().getaddrinfo(host, 80, family=socket.AF_INET)]

async def datagram(host):
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=(host, 5353), family=socket.AF_INET
    )
    transport.sendto(b"x")
    await asyncio.sleep(0.05)
    transport.close()

async def unconnected_datagram(host):
    # sendto() on an endpoint without remote_addr: libuv sends it, no Python socket call is made
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, family=socket.AF_INET)
    address = (await loop.getaddrinfo(host, 5353, family=socket.AF_INET))[0][4] if host[0].isalpha() else (host, 5353)
    transport.sendto(b"x", address)
    await asyncio.sleep(0.05)
    transport.close()

async def sock_connect(host):
    with socket.socket() as sock:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, 80))

async def httpx_async(url):
    async with httpx.AsyncClient(follow_redirects=True, timeout=3) as client:
        return (await client.get(url)).text

async def aiohttp_get(url):
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.text()

async def main():
    RESULTS["loop"] = type(asyncio.get_running_loop()).__module__
    for scenario, url in URLS.items():
        if scenario in HOSTS:
            host = HOSTS[scenario]
            for function in (open_connection, create_connection, datagram, unconnected_datagram, sock_connect):
                try:
                    RESULTS[f"{function.__name__}/{scenario}"] = {"ok": True, "value": repr(await function(host))}
                except BaseException as exc:
                    names, blocked = chain(exc)
                    RESULTS[f"{function.__name__}/{scenario}"] = {"ok": False, "error": names, "blocked": blocked}
                if function is datagram or function is unconnected_datagram:
                    step(f"{function.__name__}/{scenario}")  # the UDP cells get their own far-side counts
        if scenario in ("allowed", "blocked-name"):
            try:
                RESULTS[f"getaddrinfo/{scenario}"] = {"ok": True, "value": repr(await getaddrinfo(host))}
            except BaseException as exc:
                names, blocked = chain(exc)
                RESULTS[f"getaddrinfo/{scenario}"] = {"ok": False, "error": names, "blocked": blocked}
        for function in (httpx_async, aiohttp_get):
            try:
                RESULTS[f"{function.__name__}/{scenario}"] = {"ok": True, "value": await function(url)}
            except BaseException as exc:
                names, blocked = chain(exc)
                RESULTS[f"{function.__name__}/{scenario}"] = {"ok": False, "error": names, "blocked": blocked}
        step(scenario)

uvloop.run(main())
print(json.dumps(RESULTS))
"""
BLOCKED = ("EgressBlocked", "LookupBlocked")  # a blocked name is a lookup error (socket.gaierror)
UV_CLIENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # client: (scenarios, the error types the app sees on a block)
    "open_connection": (SCENARIOS[:3], BLOCKED),
    "create_connection": (SCENARIOS[:3], BLOCKED),
    "getaddrinfo": (SCENARIOS[:2], BLOCKED),
    "datagram": (SCENARIOS[:3], BLOCKED),
    "sock_connect": (SCENARIOS[:3], BLOCKED),
    "httpx_async": (SCENARIOS, ("ConnectError",)),
    "aiohttp_get": (SCENARIOS, ("ClientConnectorError", "ClientConnectorDNSError")),
}
UV_CELLS = [(client, scenario) for client, (scenarios, _) in UV_CLIENTS.items() for scenario in scenarios]
_uvloop_run: dict[str, Any] = {}


def _run_uvloop(scene: Scene) -> dict[str, Any]:
    if not _uvloop_run:

        def snapshot() -> dict[str, int]:
            return {
                "allowed": scene.allowed.accepted + scene.allowed_v6.accepted,
                "allowed udp": scene.allowed_udp.datagrams,
                "redirect": scene.redirect.accepted,
                **{f"blocked {kind}": count for kind, count in scene.blocked_side().items()},
            }

        results, steps = run_stepped_child(CHILD_PRELUDE + UVLOOP_CHILD, guarded_env(), snapshot)
        previous: dict[str, int] = {}
        for name, counts in steps.items():  # "datagram/allowed", "unconnected_datagram/allowed", "allowed", ...
            delta = {k: v - previous.get(k, 0) for k, v in counts.items()}
            previous = counts
            results[f"far side/{name}"] = delta
            if name.startswith("unconnected_datagram/"):  # the uncovered path, measured on its own
                continue
            scenario = name.rpartition("/")[2]
            total = results.setdefault(f"far side/{scenario} (all steps)", dict.fromkeys(delta, 0))
            for key, value in delta.items():
                total[key] += value
        _uvloop_run.update(results)
    return _uvloop_run


@pytest.mark.parametrize(("client", "scenario"), UV_CELLS)
def test_uvloop_matrix(scene: Scene, client: str, scenario: str) -> None:
    pytest.importorskip("uvloop")
    run = _run_uvloop(scene)
    assert run["loop"] == "uvloop"
    cell = run[f"{client}/{scenario}"]
    # UDP cells have a step of their own; TCP counts are summed over the whole scenario
    far = run[f"far side/{client}/{scenario}"] if client == "datagram" else run[f"far side/{scenario} (all steps)"]
    if scenario == "allowed":
        assert cell["ok"], cell
        if client == "datagram":
            assert far["allowed udp"] == 1
        else:  # open_connection, create_connection, sock_connect, httpx, aiohttp: one connection each
            assert far["allowed"] == 5
        if client in ("open_connection", "httpx_async", "aiohttp_get"):
            assert "hello" in cell["value"]
        return
    assert not cell["ok"] and cell["blocked"], cell
    assert cell["error"][0] in UV_CLIENTS[client][1]
    assert (far["blocked tcp"], far["blocked udp"], far["blocked dns"]) == (0, 0, 0)
    if scenario == "redirect-to-blocked":
        assert far["redirect"] == 2


@pytest.mark.parametrize("scenario", ["blocked-name", "blocked-raw-ip"])
def test_uvloop_unconnected_datagram_sendto_is_not_covered(scene: Scene, scenario: str) -> None:
    """NOT COVERED by the Python layer alone: ``transport.sendto(data, addr)`` on an endpoint created without
    ``remote_addr`` is sent by libuv; no Python socket call happens, so the datagram leaves (held by the native
    layer: test_native_programs.py::test_uvloop_unconnected_udp_sendto). A *name* is still checked if the app
    resolves it through the loop (getaddrinfo is guarded), so the blocked-name cell is blocked before DNS."""
    pytest.importorskip("uvloop")
    run = _run_uvloop(scene)
    cell = run[f"unconnected_datagram/{scenario}"]
    far = run[f"far side/unconnected_datagram/{scenario}"]
    if scenario == "blocked-name":
        assert not cell["ok"] and cell["blocked"], cell
        assert (far["blocked udp"], far["blocked dns"]) == (0, 0)
    else:
        assert cell["ok"], cell
        assert far["blocked udp"] == 1  # the leak, measured


# -- libcurl (pycurl): not covered ------------------------------------------------------------------


def _curl(url: str) -> str:
    pycurl = pytest.importorskip("pycurl")
    curl = pycurl.Curl()
    buffer = io.BytesIO()
    try:
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.WRITEDATA, buffer)
        curl.setopt(pycurl.TIMEOUT, 3)
        curl.setopt(pycurl.FOLLOWLOCATION, 1)
        curl.perform()
    finally:
        curl.close()
    return buffer.getvalue().decode()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pycurl_is_not_covered(scene: Scene, scenario: str) -> None:
    """NOT COVERED by the Python layer alone: libcurl resolves (its own resolver thread) and connects in C. Every
    blocked cell leaks: the blocked server answers and the blocked name's DNS query leaves. (Held by the native
    layer: test_native_programs.py::test_pycurl.)"""
    with sockguard.guarded(**POLICY):
        body = _curl(scene.url(scenario))
    if scenario == "allowed":
        assert body == "hello"
        return
    assert body == "leaked"
    assert scene.blocked.accepted + scene.blocked_v6.accepted == 1
    if scenario != "blocked-raw-ip":
        assert scene.lab.dns.queries(BLOCKED_NAME) >= 1


# -- gRPC core (grpcio): not covered ----------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["blocked-name", "blocked-raw-ip"])
def test_grpcio_is_not_covered(scene: Scene, scenario: str) -> None:
    """NOT COVERED by the Python layer alone: gRPC core resolves (c-ares inside grpcio) and connects in C. The
    channel reaches the blocked server (which hangs up, so the channel never becomes ready). (Held by the native
    layer: test_native_programs.py::test_grpcio.)"""
    grpc = pytest.importorskip("grpc")
    server = scene.lab.tcp(BLOCKED_V4, 50051, close=True)
    host = BLOCKED_NAME if scenario == "blocked-name" else BLOCKED_V4
    with sockguard.guarded(**POLICY):
        channel = grpc.insecure_channel(f"{host}:50051")
        try:
            with pytest.raises(grpc.FutureTimeoutError):
                grpc.channel_ready_future(channel).result(timeout=1.5)
        finally:
            channel.close()
    assert server.accepted >= 1
    if scenario == "blocked-name":
        assert scene.lab.dns.queries(BLOCKED_NAME) >= 1


# -- libpq (psycopg 3) ----------------------------------------------------------------------------


def _pg(conninfo: str) -> Any:
    psycopg = pytest.importorskip("psycopg")
    return psycopg.connect(conninfo + " user=app dbname=app", connect_timeout=2)


@pytest.mark.parametrize(
    ("scenario", "conninfo"),
    [
        ("allowed", f"host={ALLOWED_NAME}"),
        ("blocked-name", f"host={BLOCKED_NAME}"),
        ("blocked-raw-ip", f"host={BLOCKED_V4}"),
        ("blocked-hostaddr", f"host={ALLOWED_NAME} hostaddr={BLOCKED_V4}"),
    ],
)
def test_psycopg(scene: Scene, scenario: str, conninfo: str) -> None:
    """psycopg 3 resolves host names in Python (checked before DNS); libpq connects in C, so the address of
    every connection attempt is decided before libpq gets it (sockguard/integrations.py)."""
    psycopg = pytest.importorskip("psycopg")
    allowed = scene.lab.tcp(scene.allowed.host, 5432, close=True)
    blocked = scene.lab.tcp(BLOCKED_V4, 5432, close=True)
    with sockguard.guarded(**POLICY), pytest.raises(psycopg.OperationalError) as info:
        _pg(f"{conninfo} port=5432")
    if scenario == "allowed":  # the lab server hangs up at once: libpq did connect
        assert egress_blocked(info.value) is None
        assert allowed.accepted >= 1
        return
    found = assert_wraps_block(info.value, psycopg.OperationalError)
    assert found.reason in ("not-allowed", "raw-ip")
    assert blocked.accepted == 0
    scene.assert_blocked_side_untouched()


def test_psycopg_unix_socket_follows_allow_unix(scene: Scene, tmp_path: Any) -> None:
    """libpq connects to a Unix socket from C too: with allow_unix off, the attempt is refused first."""
    import socket

    psycopg = pytest.importorskip("psycopg")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / ".s.PGSQL.5432"))
    listener.listen(8)
    try:
        with sockguard.guarded(**POLICY, allow_unix=False), pytest.raises(psycopg.OperationalError) as info:
            _pg(f"host={tmp_path} port=5432")
        assert assert_wraps_block(info.value, psycopg.OperationalError).reason == "unix-socket"
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing is waiting to be accepted: libpq never connected
            listener.accept()
    finally:
        listener.close()
