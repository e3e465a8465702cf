"""Shared pieces for the pytest-plugin tests (no tests here).

The counters never accept in a thread: connections wait in the listen backlog (datagrams in the receive
buffer) and ``count()`` drains them afterwards with the C-level ``_accept``. So nothing an inner run does
(pytest-socket replaces ``socket.socket``, sockguard blocks loopback) can break them, and a count of zero
proves from the server side that nothing arrived.
"""

from __future__ import annotations

import _socket
import ipaddress
import os
import socket
from collections.abc import Iterator

import pytest

# Imported here, before any inner run: pytester restores sys.modules after an in-process run, and a guard
# module imported for the first time inside one would be dropped and later re-imported as a second copy.
from sockguard import api, config, guard, paths, policy, pytest_plugin, rules  # noqa: F401

BASE_INI = """\
[pytest]
addopts = -p no:cacheprovider
asyncio_default_fixture_loop_scope = function
"""

APP = '''
import socket


def fetch(host="api.example.test", port=443):
    """Application code: the call site the reports must name."""
    return socket.create_connection((host, port), timeout=5)


def fetch_or_raise(host="api.example.test", port=443):
    """Application code that wraps connection errors in its own exception."""
    try:
        return socket.create_connection((host, port), timeout=5)
    except OSError as exc:
        raise RuntimeError("backend unreachable") from exc


def fetch_quietly(host="api.example.test", port=443):
    """Application code that swallows every error (the pytest-socket complaint)."""
    try:
        socket.create_connection((host, port), timeout=5).close()
    except Exception:
        return None
    return "ok"
'''


PROBE = '''
import os
import socket
import types

import pytest

BLOCKED = ("EgressBlocked", "LookupBlocked", "SocketBlockedError", "SocketConnectBlockedError")


def outcome(action):
    """"ok" or "blocked" (by sockguard or by pytest-socket); anything else is raised."""
    try:
        action()
    except Exception as exc:
        if type(exc).__name__ in BLOCKED:
            return "blocked"
        raise
    return "ok"


def tcp(host="127.0.0.1", env="SG_PORT"):
    def go():
        with socket.create_connection((host, int(os.environ[env])), timeout=5):
            pass

    return outcome(go)


def udp(host="127.0.0.1"):
    def go():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"x", (host, int(os.environ["SG_UDP_PORT"])))

    return outcome(go)


def unix():
    def go():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(os.environ["SG_UNIX"])

    return outcome(go)


def lookup(name="api.example.test"):
    def go():
        socket.getaddrinfo(name, 443)

    return outcome(go)


@pytest.fixture
def probe():
    return types.SimpleNamespace(tcp=tcp, udp=udp, unix=unix, lookup=lookup)
'''


class Counter:
    """A TCP listener on a loopback address; ``count()`` is how many connections reached it."""

    def __init__(self, host: str = "127.0.0.1", family: int = socket.AF_INET) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()[:2]
        self.total = 0

    def count(self) -> int:
        while True:
            try:
                fd, _ = self.sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return self.total
            os.close(fd)
            self.total += 1

    def close(self) -> None:
        self.sock.close()


class UdpCounter:
    """A UDP socket on a loopback address; ``count()`` is how many datagrams reached it."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()
        self.total = 0

    def count(self) -> int:
        while True:
            try:
                self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return self.total
            self.total += 1

    def close(self) -> None:
        self.sock.close()


class UnixCounter(Counter):
    """An AF_UNIX listener; ``count()`` is how many connections reached it."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.host, self.port = path, 0
        self.total = 0


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[dict[str, Counter | UdpCounter]]:
    """Counting servers, their addresses exported to inner runs as SG_* environment variables."""
    made: dict[str, Counter | UdpCounter] = {
        "tcp": Counter("127.0.0.1"),
        "tcp2": Counter("127.0.0.1"),
        "udp": UdpCounter("127.0.0.1"),
        "unix": UnixCounter(str(tmp_path / "sg.sock")),
    }
    monkeypatch.setenv("SG_PORT", str(made["tcp"].port))
    monkeypatch.setenv("SG_PORT2", str(made["tcp2"].port))
    monkeypatch.setenv("SG_UDP_PORT", str(made["udp"].port))
    monkeypatch.setenv("SG_UNIX", str(made["unix"].host))
    yield made
    for server in made.values():
        server.close()


def _numeric(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


@pytest.fixture
def dns_net(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Belt and braces for inner runs: a name other than localhost never reaches the real resolver, even if
    the code under test failed to block it. Returns every name that got as far as the resolver."""
    seen: list[str] = []
    real_getaddrinfo = _socket.getaddrinfo
    real_gethostbyname = _socket.gethostbyname
    real_gethostbyname_ex = _socket.gethostbyname_ex

    def check(host: object) -> None:
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str):
            seen.append(name)
            if name != "localhost" and not _numeric(name):
                raise socket.gaierror(socket.EAI_NONAME, f"test DNS net: {name!r} never reaches a resolver")

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        check(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host):  # type: ignore[no-untyped-def]
        check(host)
        return real_gethostbyname(host)

    def gethostbyname_ex(host):  # type: ignore[no-untyped-def]
        check(host)
        return real_gethostbyname_ex(host)

    monkeypatch.setattr(_socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(_socket, "gethostbyname", gethostbyname)
    monkeypatch.setattr(_socket, "gethostbyname_ex", gethostbyname_ex)
    return seen


@pytest.fixture
def sg(pytester: pytest.Pytester, dns_net: list[str]) -> pytest.Pytester:
    """A pytester with the base ini, the app module and the probe fixture (conftest); names are netted."""
    pytester.makeini(BASE_INI)
    pytester.makepyfile(app=APP)
    pytester.makeconftest(PROBE)
    return pytester


def run(pytester: pytest.Pytester, *args: str, pytest_socket: bool = False) -> pytest.RunResult:
    """An in-process run; pytest-socket is blocked unless asked for, so sockguard owns its names.
    Hypothesis stays out: re-importing it in-process trips a CPython 3.11.7 AST bug (and costs seconds)."""
    blocked: tuple[str, ...] = ("-p", "no:hypothesispytest", "-o", "asyncio_default_fixture_loop_scope=function")
    blocked += () if pytest_socket else ("-p", "no:socket")
    return pytester.runpytest(*blocked, *args)


def text(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines + result.errlines)
