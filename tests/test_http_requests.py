"""Requests, not just connections (issue 15): one ``request`` event per HTTP request for every client, and the
request-level decisions -- Host header, TLS SNI, proxy targets -- proved from the far side.

Every test runs in the netlab against real servers. The scene: ``api.allowed.test`` (198.51.100.10) answers on
a keep-alive server whose paths give different statuses; ``redirect.allowed.test/start`` redirects to
``api.allowed.test:8081/next``, which redirects to ``blocked.test/end`` (the refused hop); ``blocked.test``
(203.0.113.10) counts whatever reaches it; a proxy at 10.20.30.40:3128 is allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import logging
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

import sockguard
from sockguard import guard
from sockguard.config import Settings
from tests.coverage_support import egress_blocked
from tests.netlab import Lab, TcpServer

aiohttp = pytest.importorskip("aiohttp")
httpx = pytest.importorskip("httpx")
requests = pytest.importorskip("requests")
urllib3 = pytest.importorskip("urllib3")

ALLOWED = "api.allowed.test"
ALLOWED_V4 = "198.51.100.10"
REDIRECT = "redirect.allowed.test"
REDIRECT_V4 = "198.51.100.11"
BLOCKED = "blocked.test"
BLOCKED_V4 = "203.0.113.10"
PROXY = "10.20.30.40"
PROXY_PORT = 3128
ALLOW = [ALLOWED, REDIRECT]
ROUTES = {
    "/ok": {"status": 200, "body": "ok"},
    "/created": {"status": 201, "body": "created"},
    "/missing": {"status": 404, "body": "missing"},
    "/down": {"status": 503, "body": "down"},
}
#: (method, path) sent over one client, and the status each must come back with
CALLS = [("GET", "/ok?token=s3cret"), ("POST", "/created"), ("GET", "/missing"), ("DELETE", "/down"), ("PUT", "/ok")]
STATUSES = [200, 201, 404, 503, 200]
HERE = __name__  # callers are attributed to this module, not to the client libraries


@dataclasses.dataclass
class Web:
    lab: Lab
    log: Path
    api: TcpServer  # api.allowed.test:80, keep-alive
    start: TcpServer  # redirect.allowed.test:80 -> api.allowed.test:8081/next
    hop: TcpServer  # api.allowed.test:8081 -> blocked.test/end
    blocked: TcpServer  # blocked.test:80
    proxy: TcpServer  # 10.20.30.40:3128 (answers, never forwards)

    def events(self, kind: str = "request") -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [e for e in map(json.loads, self.log.read_text().splitlines()) if e.get("event") == kind]

    def decisions(self, op: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events("decision") if op is None or e["op"] == op]

    def blocked_side(self) -> dict[str, int]:
        return {
            "tcp": self.blocked.accepted,
            "bytes": self.blocked.received,
            "dns": self.lab.dns.queries(BLOCKED),
        }


@pytest.fixture
def web(netlab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Web]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    netlab.dns.set(ALLOWED, A=[ALLOWED_V4])
    netlab.dns.set(REDIRECT, A=[REDIRECT_V4])
    netlab.dns.set(BLOCKED, A=[BLOCKED_V4])
    yield Web(
        lab=netlab,
        log=tmp_path / "decisions.jsonl",
        api=netlab.tcp(ALLOWED_V4, 80, keepalive=True, routes=ROUTES, body="ok"),
        start=netlab.tcp(REDIRECT_V4, 80, redirect_to=f"http://{ALLOWED}:8081/next"),
        hop=netlab.tcp(ALLOWED_V4, 8081, redirect_to=f"http://{BLOCKED}/end"),
        blocked=netlab.tcp(BLOCKED_V4, 80, http=True, body="leaked"),
        proxy=netlab.tcp(PROXY, PROXY_PORT, http=True, body="via proxy"),
    )


@contextlib.contextmanager
def guarded(web: Web, *extra_allow: str, log: bool = True, **settings: Any) -> Iterator[None]:
    """The scene's policy (loopback not allowed, as in the coverage matrix) with the JSON-lines log on."""
    settings.setdefault("allow_loopback", False)
    state = guard.state_from_settings(
        Settings(allow=[*ALLOW, *extra_allow], log=str(web.log) if log else None, **settings)
    )
    try:
        with guard.applied(state):
            yield
    finally:
        state.sinks.close()


# -- the clients -------------------------------------------------------------------------------------------


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


class HttpClientDirect:
    """http.client: one connection for all requests; redirects followed by hand (the application's own code)."""

    name = "http.client"

    def many(self, base: str, calls: list[tuple[str, str]], headers: dict[str, str] | None = None) -> list[int]:
        parts = urlsplit(base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=3)
        try:
            statuses = []
            for method, path in calls:
                conn.request(method, path, body=b"x" if method in ("POST", "PUT") else None, headers=headers or {})
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
            return statuses
        finally:
            conn.close()

    def follow(self, url: str) -> int:
        for _ in range(5):
            parts = urlsplit(url)
            conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=3)
            try:
                conn.request("GET", parts.path or "/")
                response = conn.getresponse()
                response.read()
            finally:
                conn.close()
            if response.status not in (301, 302, 303, 307, 308):
                return response.status
            url = urljoin(url, response.getheader("Location"))
        raise AssertionError("too many redirects")


class Urllib:
    """urllib.request: a connection per request (it sends Connection: close); follows redirects itself."""

    name = "http.client"

    def __init__(self) -> None:
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def many(self, base: str, calls: list[tuple[str, str]], headers: dict[str, str] | None = None) -> list[int]:
        statuses = []
        for method, path in calls:
            data = b"x" if method in ("POST", "PUT") else None
            request = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
            try:
                with self.opener.open(request, timeout=3) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
                exc.close()
        return statuses

    def follow(self, url: str) -> int:
        with self.opener.open(url, timeout=3) as response:
            return response.status


class Requests:
    name = "urllib3"

    def many(self, base: str, calls: list[tuple[str, str]], headers: dict[str, str] | None = None) -> list[int]:
        with requests.Session() as session:
            session.trust_env = False
            return [session.request(m, base + p, headers=headers, data="x", timeout=3).status_code for m, p in calls]

    def follow(self, url: str) -> int:
        with requests.Session() as session:
            session.trust_env = False
            return session.get(url, timeout=3).status_code


class Urllib3:
    name = "urllib3"

    def many(self, base: str, calls: list[tuple[str, str]], headers: dict[str, str] | None = None) -> list[int]:
        with urllib3.PoolManager(retries=False) as pool:
            return [pool.request(m, base + p, headers=headers, body=b"x", timeout=3).status for m, p in calls]

    def follow(self, url: str) -> int:
        with urllib3.PoolManager() as pool:  # default retries: 3 connect retries, redirects followed
            return pool.request("GET", url, timeout=3).status


class Httpx:
    name = "httpcore"

    def many(self, base: str, calls: list[tuple[str, str]], headers: dict[str, str] | None = None) -> list[int]:
        with httpx.Client(trust_env=False, timeout=3) as client:
            return [client.request(m, base + p, headers=headers, content=b"x").status_code for m, p in calls]

    def follow(self, url: str) -> int:
        with httpx.Client(trust_env=False, timeout=3, follow_redirects=True) as client:
            return client.get(url).status_code


class HttpxAsync:
    name = "httpcore"

    def many(self, base: str, calls: list[tuple[str, str]], headers: dict[str, str] | None = None) -> list[int]:
        async def main() -> list[int]:
            async with httpx.AsyncClient(trust_env=False, timeout=3) as client:
                return [
                    (await client.request(m, base + p, headers=headers, content=b"x")).status_code for m, p in calls
                ]

        return _run(main())

    def follow(self, url: str) -> int:
        async def main() -> int:
            async with httpx.AsyncClient(trust_env=False, timeout=3, follow_redirects=True) as client:
                return (await client.get(url)).status_code

        return _run(main())


class Aiohttp:
    name = "aiohttp"

    def many(self, base: str, calls: list[tuple[str, str]], headers: dict[str, str] | None = None) -> list[int]:
        async def main() -> list[int]:
            statuses = []
            async with aiohttp.ClientSession() as session:
                for method, path in calls:
                    async with session.request(method, base + path, headers=headers, data=b"x") as response:
                        await response.read()
                        statuses.append(response.status)
            return statuses

        return _run(main())

    def follow(self, url: str) -> int:
        async def main() -> int:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                return response.status

        return _run(main())


CLIENTS: dict[str, Callable[[], Any]] = {
    "http.client": HttpClientDirect,
    "urllib": Urllib,
    "requests": Requests,
    "urllib3": Urllib3,
    "httpx": Httpx,
    "httpx-async": HttpxAsync,
    "aiohttp": Aiohttp,
}


# -- one event per request ---------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_every_request_on_a_keepalive_connection_is_one_event(web: Web, client: str) -> None:
    """Five requests over one client: five request events with the method and status each got, on one
    connection (one connect decision) for every client that keeps connections alive."""
    driver = CLIENTS[client]()
    token = sockguard.correlation_id.set(f"req-{client}")
    try:
        with guarded(web):
            assert driver.many(f"http://{ALLOWED}", CALLS) == STATUSES
    finally:
        sockguard.correlation_id.reset(token)
    connections = 5 if client == "urllib" else 1  # urllib sends Connection: close
    assert web.api.accepted == connections
    assert [(r["method"], r["path"]) for r in web.api.requests] == [(m, p) for m, p in CALLS]
    events = web.events()
    assert [(e["method"], e["status"]) for e in events] == [(m, s) for (m, _), s in zip(CALLS, STATUSES, strict=True)]
    assert len(web.decisions("connect")) == connections
    for event in events:
        assert event["client"] == driver.name
        assert (event["scheme"], event["host"], event["port"]) == ("http", ALLOWED, 80)
        assert (event["address"], event["rule"]) == (ALLOWED_V4, ALLOWED)
        assert event["caller"].startswith(f"{HERE}:"), event["caller"]
        assert event["error"] is None and event["redirect_hop"] == 0 and event["redirected_from"] is None
        assert event["duration_ms"] >= 0 and event["pid"] == os.getpid()
        assert event["correlation_id"] == f"req-{client}"  # (asyncio tasks inherit it too)
    assert [e["path"] for e in events] == ["/ok", "/created", "/missing", "/down", "/ok"]
    assert "s3cret" not in web.log.read_text()  # no query string unless log_query = true


@pytest.mark.parametrize("client", CLIENTS)
def test_a_redirect_chain_is_one_event_per_hop_and_names_the_refused_hop(web: Web, client: str) -> None:
    driver = CLIENTS[client]()
    with guarded(web), pytest.raises(BaseException) as info:
        driver.follow(f"http://{REDIRECT}/start")
    blocked = egress_blocked(info.value)
    assert blocked is not None, repr(info.value)
    assert (blocked.host, blocked.reason) == (BLOCKED, "not-allowed")
    assert web.blocked_side() == {"tcp": 0, "bytes": 0, "dns": 0}
    assert (web.start.accepted, web.hop.accepted) == (1, 1)
    events = web.events()
    hops = [(e["redirect_hop"], e["host"], e["port"], e["path"], e["status"], e["redirected_from"]) for e in events]
    assert hops[:3] == [
        (0, REDIRECT, 80, "/start", 302, None),
        (1, ALLOWED, 8081, "/next", 302, f"http://{REDIRECT}/start"),
        (2, BLOCKED, 80, "/end", None, f"http://{ALLOWED}:8081/next"),
    ]
    refused = events[2]
    assert refused["reason"] == "not-allowed" and refused["error"] and refused["address"] is None
    # a client that retries the refused hop (urllib3's default Retry) logs each retry as that hop again
    assert all((e["redirect_hop"], e["host"]) == (2, BLOCKED) for e in events[3:])


def test_xmlrpc_calls_are_request_events(web: Web) -> None:
    """xmlrpc.client goes through http.client: each call is one request event."""
    import xmlrpc.client

    answer = (
        '<?xml version="1.0"?><methodResponse><params><param><value><int>42</int></value></param></params>'
        "</methodResponse>"
    )
    web.lab.tcp(
        ALLOWED_V4, 80, keepalive=True, routes={"/RPC2": {"body": answer, "headers": {"Content-Type": "text/xml"}}}
    )

    class Transport(xmlrpc.client.Transport):
        def make_connection(self, host: Any) -> http.client.HTTPConnection:
            conn = super().make_connection(host)
            conn.timeout = 3  # (not the default sentinel: another test may have reloaded the socket module)
            return conn

    with guarded(web), xmlrpc.client.ServerProxy(f"http://{ALLOWED}/RPC2", transport=Transport()) as proxy:
        assert proxy.answer() == 42
        assert proxy.answer() == 42
    assert [(e["client"], e["method"], e["path"], e["status"]) for e in web.events()] == [
        ("http.client", "POST", "/RPC2", 200),
        ("http.client", "POST", "/RPC2", 200),
    ]
    assert web.api.accepted == 1  # one kept-alive connection, two request events


def test_log_query_keeps_the_query_string(web: Web) -> None:
    with guarded(web, log_query=True):
        assert HttpClientDirect().many(f"http://{ALLOWED}", [("GET", "/ok?page=2")]) == [200]
    assert [e["path"] for e in web.events()] == ["/ok?page=2"]


# -- Host header / :authority ----------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_host_header_naming_a_blocked_host_is_refused_before_a_byte(web: Web, client: str) -> None:
    """Domain fronting: the connection goes to an allowed address, the Host header names blocked.test. The
    request is refused with the client's own error and the allowed server receives not one byte of it."""
    driver = CLIENTS[client]()
    with guarded(web), pytest.raises(BaseException) as info:
        driver.many(f"http://{ALLOWED}", [("GET", "/ok")], headers={"Host": BLOCKED})
    blocked = egress_blocked(info.value)
    assert blocked is not None, repr(info.value)
    assert (blocked.operation, blocked.host, blocked.reason) == ("host-header", BLOCKED, "not-allowed")
    assert "Host header" in str(blocked)
    assert (web.api.received, web.api.requests) == (0, [])
    assert web.blocked_side() == {"tcp": 0, "bytes": 0, "dns": 0}
    [decision] = web.decisions("host-header")
    assert (decision["decision"], decision["host"], decision["caller"].split(":")[0]) == ("block", BLOCKED, HERE)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_host_header_naming_the_same_host_passes(web: Web, client: str) -> None:
    """The control: a Host header that names the connection's own host (any case, with its port) is sent."""
    with guarded(web):
        assert CLIENTS[client]().many(f"http://{ALLOWED}", [("GET", "/ok")], headers={"Host": "API.Allowed.test:80"})
    assert [r["headers"]["host"] for r in web.api.requests] == ["API.Allowed.test:80"]
    assert web.decisions("host-header") == []


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        (BLOCKED_V4, "raw-ip"),
        (f"{BLOCKED_V4}:80", "raw-ip"),
        ("[2001:db8::11]:80", "raw-ip"),
        ("169.254.169.254", "raw-ip"),
        ("metadata.google.internal", "metadata-name"),
        (f"{BLOCKED}.", "not-allowed"),
        ("BLOCKED.test", "not-allowed"),
        ("evil.test:notaport", "invalid-host"),
        (f"{BLOCKED}:123456", "invalid-host"),  # another host with digits past 65,535: not a port to decide on
        (f"{BLOCKED}:\u00b2", "invalid-host"),  # "²" is a digit to str.isdigit, not to int (was a ValueError)
        (f"{ALLOWED}:@{BLOCKED}", "invalid-host"),  # the own host, then no port: a lenient server may read blocked
        ("[2001:db8::11", "invalid-host"),
        ("user@allowed.test", "invalid-host"),
    ],
)
def test_host_header_spellings(web: Web, host: str, reason: str) -> None:
    """Every spelling of another host is decided on what it names; what cannot be parsed is refused."""
    with guarded(web), pytest.raises(sockguard.EgressBlocked) as info:
        HttpClientDirect().many(f"http://{ALLOWED}", [("GET", "/ok")], headers={"Host": host})
    assert (info.value.operation, info.value.reason) == ("host-header", reason)
    assert web.api.received == 0


def test_a_second_host_header_is_decided_too(web: Web) -> None:
    """http.client sends every Host header it is given: a second one (after the one it adds) is decided."""
    with guarded(web):
        conn = http.client.HTTPConnection(ALLOWED, 80, timeout=3)
        conn.putrequest("GET", "/ok")  # adds Host: api.allowed.test
        conn.putheader("Host", BLOCKED)
        with pytest.raises(sockguard.EgressBlocked) as info:
            conn.endheaders()
        conn.close()
    assert info.value.host == BLOCKED
    assert web.api.received == 0


def test_a_host_header_name_with_trailing_blanks_is_decided(web: Web) -> None:
    """http.client accepts the header name "Host " (lenient servers read "Host : x" as Host): decided too."""
    with guarded(web):
        conn = http.client.HTTPConnection(ALLOWED, 80, timeout=3)
        conn.putrequest("GET", "/ok", skip_host=True)
        conn.putheader("Host ", BLOCKED)
        with pytest.raises(sockguard.EgressBlocked) as info:
            conn.endheaders()
        conn.close()
    assert (info.value.operation, info.value.host) == ("host-header", BLOCKED)
    assert web.api.received == 0


@pytest.mark.parametrize(
    ("target", "host", "reason"),
    [
        (f"http://{BLOCKED}/x", BLOCKED, "not-allowed"),
        (f"HTTP://user:pw@{BLOCKED}:80/x", BLOCKED, "not-allowed"),
        (f"{BLOCKED}:80", BLOCKED, "not-allowed"),
        ("http://[2001:db8::11/x", "http://[2001:db8::11/x", "invalid-host"),
    ],
)
def test_a_request_target_naming_another_host_is_decided(web: Web, target: str, host: str, reason: str) -> None:
    """A target that is not origin-form names a host (the proxy's job): decided, whatever its spelling; one that
    does not parse is refused as an invalid host."""
    with guarded(web):
        conn = http.client.HTTPConnection(ALLOWED, 80, timeout=3)
        with pytest.raises(sockguard.EgressBlocked) as info:
            conn.request("GET", target, headers={"Host": ALLOWED})
        conn.close()
    assert (info.value.operation, info.value.host, info.value.reason) == ("proxy-request", host, reason)
    assert web.api.received == 0


def test_the_own_host_with_a_port_past_65535_is_not_refused(web: Web) -> None:
    """httpx writes a URL's port into Host as it is: ``httpx.get("http://127.0.0.1:123456/")`` must fail as it does
    unguarded (the connect's ConnectError, a refused connect), not as a refused Host header (httpx's own suite,
    test_httpcore_exception_mapping). The Host names the connection's own host: not decided, as with any port."""

    def attempt() -> tuple[type, type, int | None]:
        with httpx.Client(trust_env=False) as client, pytest.raises(httpx.ConnectError) as info:
            client.get("http://127.0.0.1:123456/")
        cause: BaseException | None = info.value
        while cause is not None and not isinstance(cause, OSError):  # httpx <- httpcore <- the socket's error
            cause = cause.__cause__ or cause.__context__
        return type(info.value), type(cause), getattr(cause, "errno", None)

    unguarded = attempt()
    with guarded(web, allow_loopback=True):
        assert attempt() == unguarded
        assert HttpClientDirect().many(f"http://{ALLOWED}", [("GET", "/ok")], headers={"Host": f"{ALLOWED}:123456"})
    assert unguarded[1] is ConnectionRefusedError  # (glibc keeps the port's low 16 bits: nothing listens there)
    assert [r["headers"]["host"] for r in web.api.requests] == [f"{ALLOWED}:123456"]
    assert web.decisions("host-header") == []


def test_a_host_header_naming_another_allowed_host_is_sent(web: Web) -> None:
    with guarded(web):
        assert HttpClientDirect().many(f"http://{ALLOWED}", [("GET", "/ok")], headers={"Host": REDIRECT}) == [200]
    assert web.api.requests[0]["headers"]["host"] == REDIRECT


def test_monitor_mode_logs_the_host_header_and_lets_it_go(web: Web) -> None:
    with guarded(web, mode="monitor"):
        assert HttpClientDirect().many(f"http://{ALLOWED}", [("GET", "/ok")], headers={"Host": BLOCKED}) == [200]
    [decision] = web.decisions("host-header")
    assert (decision["decision"], decision["host"]) == ("would-block", BLOCKED)
    assert web.api.requests[0]["headers"]["host"] == BLOCKED


# -- SNI ---------------------------------------------------------------------------------------------------

TLS_PORT = 8443


class TlsServer:
    """A real TLS server on api.allowed.test:8443, in this process (accepting raises no connect event), whose
    certificate names api.allowed.test *and* blocked.test (a fronting server's would). For every connection it
    records how many bytes arrived before it started the handshake (a ClientHello is >0) and the SNI name the
    handshake carried; a completed handshake gets ``tls ok <sni>`` back."""

    def __init__(self, cert: str, key: str) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.context.sni_callback = self._sni
        self.connections: list[dict[str, Any]] = []  # {"hello_bytes": n, "sni": name or None}
        self._current: dict[str, Any] = {}
        self._done = threading.Condition()
        self.listener = socket.create_server((ALLOWED_V4, TLS_PORT))
        self.listener.settimeout(0.2)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _sni(self, sslobj: Any, name: str | None, context: Any) -> None:
        self._current["sni"] = name

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(3)
                self._current = {"hello_bytes": 0, "sni": None}
                try:
                    self._current["hello_bytes"] = len(conn.recv(5, socket.MSG_PEEK))
                    if self._current["hello_bytes"]:
                        with self.context.wrap_socket(conn, server_side=True) as tls:
                            tls.recv(65536)  # the request head
                            body = f"tls ok {self._current['sni']}".encode()
                            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                            tls.sendall(head.encode() + body)
                except (OSError, ssl.SSLError):
                    pass
            with self._done:
                self.connections.append(self._current)
                self._done.notify_all()

    def settled(self, count: int) -> list[dict[str, Any]]:
        """The records of the first ``count`` connections, once the server has handled them."""
        with self._done:
            self._done.wait_for(lambda: len(self.connections) >= count, timeout=5)
            return list(self.connections)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for api.allowed.test and blocked.test, made for this run with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make the test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={ALLOWED}",
         "-addext", f"subjectAltName=DNS:{ALLOWED},DNS:{BLOCKED}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclasses.dataclass
class Tls:
    cafile: str
    server: TlsServer

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cafile)


@pytest.fixture
def tls(web: Web, certificate: tuple[str, str]) -> Iterator[Tls]:
    server = TlsServer(*certificate)
    yield Tls(cafile=certificate[0], server=server)
    server.close()


GET_ROOT = f"GET / HTTP/1.1\r\nHost: {ALLOWED}\r\nConnection: close\r\n\r\n".encode()


def _body(raw: bytes) -> str:
    return raw.decode().rpartition("\r\n\r\n")[2]


def _sni_ssl(tls: Tls, sni: str) -> str:
    sock = socket.create_connection((ALLOWED, TLS_PORT), timeout=3)
    try:
        with tls.context().wrap_socket(sock, server_hostname=sni) as conn:
            conn.sendall(GET_ROOT)
            return _body(b"".join(iter(lambda: conn.recv(65536), b"")))
    finally:
        sock.close()


def _sni_asyncio(tls: Tls, sni: str) -> str:
    async def main() -> str:
        reader, writer = await asyncio.open_connection(ALLOWED, TLS_PORT, ssl=tls.context(), server_hostname=sni)
        writer.write(GET_ROOT)
        data = await reader.read()
        writer.close()
        return _body(data)

    return _run(asyncio.wait_for(main(), 5))


def _sni_urllib3(tls: Tls, sni: str) -> str:
    pool = urllib3.HTTPSConnectionPool(ALLOWED, TLS_PORT, server_hostname=sni, ca_certs=tls.cafile, retries=False)
    return pool.request("GET", "/", timeout=3).data.decode()


def _sni_httpx(tls: Tls, sni: str) -> str:
    with httpx.Client(verify=tls.context(), trust_env=False, timeout=3) as client:
        return client.get(f"https://{ALLOWED}:{TLS_PORT}/", extensions={"sni_hostname": sni}).text


def _sni_httpx_async(tls: Tls, sni: str) -> str:
    async def main() -> str:
        async with httpx.AsyncClient(verify=tls.context(), trust_env=False, timeout=3) as client:
            return (await client.get(f"https://{ALLOWED}:{TLS_PORT}/", extensions={"sni_hostname": sni})).text

    return _run(main())


def _sni_aiohttp(tls: Tls, sni: str) -> str:
    async def main() -> str:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            url = f"https://{ALLOWED}:{TLS_PORT}/"
            async with session.get(url, ssl=tls.context(), server_hostname=sni) as response:
                return await response.text()

    return _run(main())


SNI_CLIENTS = {
    "ssl.wrap_socket": _sni_ssl,
    "asyncio (wrap_bio)": _sni_asyncio,
    "urllib3": _sni_urllib3,
    "httpx": _sni_httpx,
    "httpx-async": _sni_httpx_async,
    "aiohttp": _sni_aiohttp,
}


@pytest.mark.parametrize("client", SNI_CLIENTS)
def test_an_sni_naming_a_blocked_host_is_refused_before_the_client_hello(web: Web, tls: Tls, client: str) -> None:
    """The connection goes to api.allowed.test, the SNI names blocked.test (which the server's certificate
    covers: without the check the handshake would succeed). Refused before the handshake: the TLS server
    receives no byte, so no ClientHello."""
    with guarded(web), pytest.raises(BaseException) as info:
        SNI_CLIENTS[client](tls, BLOCKED)
    blocked = egress_blocked(info.value)
    assert blocked is not None, repr(info.value)
    assert (blocked.operation, blocked.host, blocked.reason) == ("sni", BLOCKED, "not-allowed")
    connections = tls.server.settled(1)
    assert connections and all(c == {"hello_bytes": 0, "sni": None} for c in connections), connections
    assert web.blocked_side() == {"tcp": 0, "bytes": 0, "dns": 0}
    assert [d["decision"] for d in web.decisions("sni")] == ["block"]


@pytest.mark.parametrize("client", SNI_CLIENTS)
def test_an_allowed_sni_completes_the_handshake(web: Web, tls: Tls, client: str) -> None:
    """The control, against the same server: the allowed SNI's ClientHello arrives and the request is served."""
    with guarded(web):
        assert SNI_CLIENTS[client](tls, ALLOWED) == f"tls ok {ALLOWED}"
    [connection] = tls.server.settled(1)
    assert connection["hello_bytes"] > 0 and connection["sni"] == ALLOWED


def test_https_request_events_carry_the_tls_connection(web: Web, tls: Tls) -> None:
    """The request event of an HTTPS request: scheme https, the resolved address; a refused SNI is a blocked
    request event."""
    with guarded(web), httpx.Client(verify=tls.context(), trust_env=False, timeout=3) as client:
        assert client.get(f"https://{ALLOWED}:{TLS_PORT}/ok").text == f"tls ok {ALLOWED}"
        with pytest.raises(httpx.ConnectError) as info:
            client.get(f"https://{ALLOWED}:{TLS_PORT}/ok", extensions={"sni_hostname": BLOCKED})
    assert egress_blocked(info.value) is not None
    first, second = web.events()
    assert (first["scheme"], first["host"], first["status"], first["address"]) == ("https", ALLOWED, 200, ALLOWED_V4)
    assert (second["status"], second["reason"], second["error"]) == (None, "not-allowed", "ConnectError")


def test_sni_spellings() -> None:
    """An address is not sent as SNI (decided at connect); bytes are decided like str; a malformed name is refused."""
    from sockguard.http.checks import check_sni

    fullwidth = "\uff22\uff2c\uff2f\uff23\uff2b\uff25\uff24.test"  # BLOCKED in fullwidth: IDNA folds it
    refused = [(BLOCKED, "not-allowed"), (BLOCKED.encode(), "not-allowed"), ("a..b", "invalid-host"),
               (f"{BLOCKED}.", "not-allowed"), (fullwidth, "not-allowed")]  # fmt: skip
    with sockguard.guarded(allow=[ALLOWED], allow_loopback=False):
        check_sni(ALLOWED)
        check_sni(ALLOWED.upper().encode())
        check_sni(BLOCKED_V4)  # Python sends no SNI for an address
        for name, reason in refused:
            with pytest.raises(sockguard.EgressBlocked) as info:
                check_sni(name)
            assert (info.value.operation, info.value.reason) == ("sni", reason)


class _SniThatEncodesElsewhere(str):
    """Characters of the allowed name; ``ssl`` encodes server_hostname with ``.encode("idna")``: this one's
    encode answers the blocked name (a check reading the characters, and a send calling the method, disagree)."""

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        return BLOCKED.encode()


class _SniBytesThatDecodeElsewhere(bytes):
    """Bytes of the allowed name whose ``.decode("ascii")`` (what ``ssl`` calls on a bytes server_hostname)
    answers the blocked name."""

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return BLOCKED


@pytest.mark.parametrize("client", ["ssl.wrap_socket", "asyncio (wrap_bio)"])
@pytest.mark.parametrize("shape", [_SniThatEncodesElsewhere, _SniBytesThatDecodeElsewhere])
def test_an_sni_is_decided_on_the_name_the_handshake_sends(web: Web, tls: Tls, client: str, shape: Any) -> None:
    """A ``str``/``bytes`` subclass as ``server_hostname`` whose methods answer another name than its characters:
    the SNI the server receives is the name the guard decided (the allowed one), never the blocked one."""
    sni = shape(ALLOWED if shape is _SniThatEncodesElsewhere else ALLOWED.encode())
    with guarded(web):
        try:
            SNI_CLIENTS[client](tls, sni)
        except (OSError, ssl.SSLError):
            pass  # refused is fine too; what matters is what reached the server
    connections = tls.server.settled(1)
    assert connections and all(c["sni"] != BLOCKED for c in connections), connections


# -- proxies -----------------------------------------------------------------------------------------------


def _proxied(client: str, url: str) -> Any:
    proxy = f"http://{PROXY}:{PROXY_PORT}"
    if client == "http.client":
        parts = urlsplit(url)
        conn = http.client.HTTPSConnection(PROXY, PROXY_PORT, timeout=3)
        conn.set_tunnel(parts.hostname, parts.port or 443)
        try:
            conn.request("GET", parts.path or "/")
            return conn.getresponse().read()
        finally:
            conn.close()
    if client == "urllib":
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
        with opener.open(url, timeout=3) as response:
            return response.read()
    if client == "requests":
        with requests.Session() as session:
            session.trust_env = False
            return session.get(url, proxies={"http": proxy, "https": proxy}, timeout=3).text
    if client == "urllib3":
        with urllib3.ProxyManager(proxy, retries=False) as pool:
            return pool.request("GET", url, timeout=3).data
    if client == "httpx":
        with httpx.Client(proxy=proxy, trust_env=False, timeout=3) as client_:
            return client_.get(url).text
    if client == "httpx-async":

        async def main_httpx() -> str:
            async with httpx.AsyncClient(proxy=proxy, trust_env=False, timeout=3) as client_:
                return (await client_.get(url)).text

        return _run(main_httpx())

    async def main_aiohttp() -> str:
        async with aiohttp.ClientSession() as session, session.get(url, proxy=proxy) as response:
            return await response.text()

    return _run(main_aiohttp())


PROXY_CLIENTS = ("http.client", "urllib", "requests", "urllib3", "httpx", "httpx-async", "aiohttp")
PROXY_RULE = f"{PROXY}:{PROXY_PORT}"


@pytest.mark.parametrize("client", PROXY_CLIENTS)
def test_https_through_an_allowed_proxy_to_an_unlisted_host_sends_no_connect(web: Web, client: str) -> None:
    """The CONNECT target is decided as a destination before the CONNECT is sent: the proxy is allowed, the
    target is not, and the proxy receives nothing (for these clients, not even a connection)."""
    with guarded(web, PROXY_RULE), pytest.raises(BaseException) as info:
        _proxied(client, f"https://{BLOCKED}/")
    blocked = egress_blocked(info.value)
    assert blocked is not None, repr(info.value)
    assert (blocked.operation, blocked.host, blocked.port, blocked.reason) == ("tunnel", BLOCKED, 443, "not-allowed")
    assert (web.proxy.accepted, web.proxy.received) == (0, 0)
    assert web.blocked_side() == {"tcp": 0, "bytes": 0, "dns": 0}


@pytest.mark.parametrize("client", PROXY_CLIENTS)
def test_https_through_an_allowed_proxy_to_an_allowed_host_sends_the_connect(web: Web, client: str) -> None:
    """The control: an allowed target's CONNECT reaches the proxy (which answers and closes, so the client
    fails afterwards: the lab proxy does not tunnel)."""
    with guarded(web, PROXY_RULE), contextlib.suppress(Exception):
        _proxied(client, f"https://{ALLOWED}/")
    assert [(r["method"], r["path"]) for r in web.proxy.requests] == [("CONNECT", f"{ALLOWED}:443")]


def _tunnel_attempt(conn_class: Any, host: str, headers: dict[str, str] | None = None) -> BaseException:
    conn = conn_class(PROXY, PROXY_PORT, timeout=3)
    conn.set_tunnel(host, 443, headers=headers)
    try:
        conn.connect()
    except BaseException as exc:  # what the application would see, whatever it is
        return exc
    finally:
        conn.close()
    raise AssertionError("the tunnel was made")


@pytest.mark.parametrize(
    ("host", "headers"),
    [("invalid host", None), ("invalid.host\r\nX-Evil: 1", None), (BLOCKED, {"X-Bad\r\nName": "v"}),
     (BLOCKED, {"Name": "evil\r\nHost: x"})],
)  # fmt: skip
def test_a_tunnel_the_client_refuses_itself_fails_with_the_clients_error(web: Web, host: str, headers: Any) -> None:
    """urllib3 2.8 (and CPython 3.11.16+/3.12.14+) refuse a tunnel host with control characters, or a header that
    could split the CONNECT request, with ValueError in ``_tunnel`` before writing it. The guard used to decide the
    target first (EgressBlocked before the proxy connect: urllib3's test_invalid_tunnel_host/_headers); now the
    client's own error wins, exactly as unguarded, and the proxy still receives no CONNECT."""
    from urllib3.connection import HTTPConnection

    unguarded = _tunnel_attempt(HTTPConnection, host, headers)
    assert type(unguarded) is ValueError  # this urllib3 validates (2.8: for every interpreter)
    with guarded(web, PROXY_RULE):
        guarded_error = _tunnel_attempt(HTTPConnection, host, headers)
    assert (type(guarded_error), str(guarded_error)) == (ValueError, str(unguarded))
    assert [r for r in web.proxy.requests if r["method"] == "CONNECT"] == []
    assert web.decisions("tunnel") == []


@pytest.mark.parametrize(("host", "reason"), [("invalid host", "invalid-host"), (BLOCKED, "not-allowed")])
def test_a_tunnel_a_client_would_send_is_decided_on_the_connect_line(web: Web, host: str, reason: str) -> None:
    """The same tunnels through a client that does not validate them (this interpreter's http.client, when it
    predates the fix): the CONNECT line would be written, so its target is decided first and refused; nothing
    reaches the proxy but the connection."""
    import http.client as stdlib_client

    headers = {"X-Bad\r\nName": "v"} if host == BLOCKED else None  # (unusual headers: the deferred path)
    with guarded(web, PROXY_RULE):
        error = _tunnel_attempt(stdlib_client.HTTPConnection, host, headers)
    if isinstance(error, ValueError):  # a patched interpreter refuses them itself: the client's error, as above
        assert web.decisions("tunnel") == []
    else:
        blocked = egress_blocked(error)
        assert blocked is not None, repr(error)
        assert (blocked.operation, blocked.reason) == ("tunnel", reason)
    assert web.proxy.received == 0  # not a byte of the CONNECT request
    assert web.blocked_side() == {"tcp": 0, "bytes": 0, "dns": 0}


class _HostThatEncodesElsewhere(str):
    """An allowed host's characters whose ``encode`` (http.client's CONNECT line) answers the blocked name."""

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        return BLOCKED.encode()


class _HostEqualToEverything(str):
    """A host whose ``__eq__`` says yes to any name (a check comparing with ``==`` would take any Host header
    for the connection's own)."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return str.__hash__(self)


def test_a_tunnel_target_is_decided_on_the_name_the_connect_line_sends(web: Web) -> None:
    """``set_tunnel`` with a str subclass: the CONNECT line the proxy receives names what was decided (held by
    the check of the bytes http.client sends)."""
    conn = http.client.HTTPSConnection(PROXY, PROXY_PORT, timeout=3)
    conn.set_tunnel(_HostThatEncodesElsewhere(ALLOWED), 443)
    with guarded(web, PROXY_RULE), contextlib.suppress(Exception):
        conn.request("GET", "/")
    conn.close()
    assert [(r["method"], r["path"]) for r in web.proxy.requests] in ([], [("CONNECT", f"{ALLOWED}:443")])


def test_a_host_header_is_decided_whatever_the_connections_host_says_it_equals(web: Web) -> None:
    """The connection's own host as a str subclass whose ``__eq__`` matches anything: a Host header naming the
    blocked host is still decided (refused), and the allowed server receives nothing."""
    conn = http.client.HTTPConnection(_HostEqualToEverything(ALLOWED), 80, timeout=3)
    with guarded(web), pytest.raises(BaseException) as info:
        conn.request("GET", "/ok", headers={"Host": BLOCKED})
    conn.close()
    blocked = egress_blocked(info.value)
    assert blocked is not None and (blocked.operation, blocked.host) == ("host-header", BLOCKED), repr(info.value)
    assert (web.api.received, web.api.requests) == (0, [])


@pytest.mark.parametrize("client", PROXY_CLIENTS[1:])
def test_http_through_an_allowed_proxy_decides_the_absolute_form_target(web: Web, client: str) -> None:
    """Plain HTTP through a proxy (``GET http://host/``): the target is decided before the request is sent;
    an allowed one goes out through the proxy, with the proxy named in its request event."""
    with guarded(web, PROXY_RULE), pytest.raises(BaseException) as info:
        _proxied(client, f"http://{BLOCKED}/")
    blocked = egress_blocked(info.value)
    assert blocked is not None, repr(info.value)
    assert (blocked.operation, blocked.host, blocked.reason) == ("proxy-request", BLOCKED, "not-allowed")
    assert (web.proxy.received, web.proxy.requests) == (0, [])
    with guarded(web, PROXY_RULE):
        assert _proxied(client, f"http://{ALLOWED}/ok") in ("via proxy", b"via proxy")
    assert web.proxy.requests[-1]["path"] == f"http://{ALLOWED}/ok"
    event = web.events()[-1]
    assert (event["host"], event["path"], event["status"]) == (ALLOWED, "/ok", 200)
    assert event["proxy"] == f"{PROXY}:{PROXY_PORT}" and event["address"] == PROXY
    web.lab.sync()
    assert web.blocked_side() == {"tcp": 0, "bytes": 0, "dns": 0}


# -- sinks, levels and cost ----------------------------------------------------------------------------------


@pytest.fixture
def sockguard_logger() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("sockguard")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate


def _request_records(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.sockguard.get("event") == "request"]  # type: ignore[attr-defined]


def test_request_events_stay_below_info_on_the_logger(web: Web, sockguard_logger: list[logging.LogRecord]) -> None:
    """An application logging at INFO prints nothing more for allowed requests; at DEBUG it sees each one, in
    the line operators grep."""
    logging.getLogger("sockguard").setLevel(logging.INFO)
    with guarded(web, log=False):
        HttpClientDirect().many(f"http://{ALLOWED}", [("GET", "/ok")])
    assert _request_records(sockguard_logger) == []
    logging.getLogger("sockguard").setLevel(logging.DEBUG)
    with guarded(web, log=False):
        HttpClientDirect().many(f"http://{ALLOWED}", [("GET", "/missing?x=1")])
    [record] = _request_records(sockguard_logger)
    assert record.levelno == logging.DEBUG
    text = record.getMessage()
    assert text.startswith(f"sockguard allowed request GET http://{ALLOWED}/missing -> {ALLOWED_V4} 404 in ")
    assert re.search(rf" 404 in [0-9.]+ ms \(called from {re.escape(HERE)}:many:[0-9]+\)$", text), text


def test_http_log_level_info_raises_them(web: Web, sockguard_logger: list[logging.LogRecord]) -> None:
    logging.getLogger("sockguard").setLevel(logging.INFO)
    with guarded(web, log=False, http_log_level=logging.INFO), pytest.raises(sockguard.EgressBlocked):
        HttpClientDirect().follow(f"http://{ALLOWED}:8081/next")  # 302 to blocked.test: the refused hop
    first, refused = _request_records(sockguard_logger)
    assert first.levelno == refused.levelno == logging.INFO
    assert first.getMessage().startswith(
        f"sockguard allowed request GET http://{ALLOWED}:8081/next -> {ALLOWED_V4} 302 in "
    )
    assert refused.getMessage().startswith(
        f"sockguard blocked request GET http://{BLOCKED}/end (redirect 1 from http://{ALLOWED}:8081/next): "
        f"not-allowed (LookupBlocked) (called from {HERE}:"
    )


def test_http_events_false_turns_them_off_everywhere(web: Web, sockguard_logger: list[logging.LogRecord]) -> None:
    logging.getLogger("sockguard").setLevel(logging.DEBUG)
    with guarded(web, http_events=False):
        HttpClientDirect().many(f"http://{ALLOWED}", [("GET", "/ok")])
    assert web.events() == [] and _request_records(sockguard_logger) == []
    assert len(web.decisions("connect")) == 1  # the connect decision is still logged


@pytest.mark.parametrize("client", CLIENTS)
def test_no_sink_no_stack_walk(web: Web, client: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no sink wanting request events, a request builds nothing: the caller search (the costly part) is
    never reached, and the checks still run."""
    from sockguard.http import events

    def walked(*args: Any) -> None:
        raise AssertionError("the stack was walked for a request event nobody wants")

    monkeypatch.setattr(events, "find_caller", walked)
    logging.getLogger("sockguard").setLevel(logging.WARNING)
    with guarded(web, log=False):
        assert CLIENTS[client]().many(f"http://{ALLOWED}", [("GET", "/ok")]) == [200]
        with pytest.raises(BaseException) as info:
            CLIENTS[client]().many(f"http://{ALLOWED}", [("GET", "/ok")], headers={"Host": BLOCKED})
    assert egress_blocked(info.value) is not None


def test_the_http_hooks_load_only_with_their_libraries(tmp_path: Path) -> None:
    """Activation imports no HTTP hook; importing http.client (or ssl) brings them, already in place."""
    from sockguard.paths import sitecustomize_dir

    code = (
        "import sys\n"
        "before = sorted(m for m in sys.modules if m.startswith('sockguard.http'))\n"
        "import http.client, ssl\n"
        "print(before, http.client.HTTPConnection.endheaders.__sockguard__,"
        " ssl.SSLContext.wrap_socket.__sockguard__)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_")}
    env["PYTHONPATH"] = sitecustomize_dir()
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "True", "True"]


def test_a_failing_event_never_breaks_the_request(
    web: Web, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value the request event cannot describe is reported once on stderr; the request completes. (Only the
    errors formatting can raise are caught: an exception a signal handler raises meanwhile is the application's
    and propagates, tests/test_async_exceptions.py.)"""
    from sockguard.http import events
    from sockguard.sinks import Sinks

    def broken(*args: Any) -> None:
        raise TypeError("sink exploded")

    monkeypatch.setattr(Sinks, "write_request", broken)
    monkeypatch.setattr(Sinks, "write_request_ok", broken)  # (the common event's path)
    monkeypatch.setattr(events, "_failures", [])
    with guarded(web):
        assert HttpClientDirect().many(f"http://{ALLOWED}", [("GET", "/ok"), ("GET", "/missing")]) == [200, 404]
    assert capsys.readouterr().err.count("a request event could not be written (TypeError('sink exploded'))") == 1
