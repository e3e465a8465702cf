"""Transparent for what is allowed, and refusals a client classifies as it would the real failure (issue 11).

* A blocked lookup is a ``socket.gaierror`` (``LookupBlocked``, errno EAI_FAIL) that every client reports as a
  name-resolution failure; blocked connects and sends stay ``OSError(EACCES)``.
* The error classes survive pickling (multiprocessing, xdist) with their class, errno and attributes.
* Allowed decisions log at DEBUG: an application logging at INFO sees no sockguard line for them.
* The caller of an event is the application frame that started the work, or null: never a runner's or
  ``threading``'s frame.
"""

from __future__ import annotations

import asyncio
import errno
import json
import pickle
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import sockguard
from sockguard import caller as caller_module
from sockguard import guard
from sockguard.config import Settings
from sockguard.errors import (
    BreakerOpen,
    BreakerOpenRefused,
    BreakerOpenTimeout,
    EgressBlocked,
    LookupBlocked,
    breaker_open_class,
)
from tests.loopback import CountingTCPServer

ROOT = Path(__file__).resolve().parent.parent
BLOCKED_NAME = "exfil.blocked.test"


# -- the error classes ------------------------------------------------------------------------------


def _attrs(exc: EgressBlocked) -> tuple:
    return (type(exc), exc.errno, exc.strerror, exc.args, str(exc), exc.host, exc.port, exc.address, exc.reason,
            exc.rule, exc.operation, exc.caller, exc.suggestion)  # fmt: skip


def test_a_blocked_lookup_is_a_gaierror_with_eai_fail():
    exc = LookupBlocked("sockguard blocked DNS lookup to x.test:443", host="x.test", port=443, reason="not-allowed")
    assert LookupBlocked.__mro__[1:4] == (EgressBlocked, socket.gaierror, OSError)
    assert isinstance(exc, socket.gaierror) and isinstance(exc, sockguard.EgressBlocked)
    assert exc.errno == socket.EAI_FAIL and exc.args == (socket.EAI_FAIL, str(exc))
    assert exc.strerror == str(exc) == "sockguard blocked DNS lookup to x.test:443"
    assert sockguard.LookupBlocked is LookupBlocked  # public, built once


@pytest.mark.parametrize(
    ("code", "cls", "builtin"),
    [
        (errno.ECONNREFUSED, BreakerOpenRefused, ConnectionRefusedError),
        (errno.ETIMEDOUT, BreakerOpenTimeout, TimeoutError),
        (errno.ECONNRESET, breaker_open_class(errno.ECONNRESET), ConnectionResetError),
        (errno.ECONNABORTED, breaker_open_class(errno.ECONNABORTED), ConnectionAbortedError),
        (errno.EHOSTUNREACH, BreakerOpen, OSError),
    ],
)
def test_a_breaker_open_error_has_the_class_and_errno_of_the_failure_it_replaces(code, cls, builtin):
    assert breaker_open_class(code) is cls
    exc = cls("circuit breaker open", code=code, reason="breaker-open", operation="connect")
    assert isinstance(exc, builtin) and isinstance(exc, EgressBlocked) and isinstance(exc, BreakerOpen)
    assert exc.errno == code and type(OSError(code, "x")) is builtin  # what the kernel's failure would be
    assert not isinstance(exc, PermissionError)


@pytest.mark.parametrize(
    "exc",
    [
        EgressBlocked(
            "blocked",
            host="a.test",
            port=1,
            address="203.0.113.7",
            reason="raw-ip",
            operation="connect",
            caller="app:f:1",
            suggestion="203.0.113.7:1",
        ),
        LookupBlocked("blocked lookup", host="a.test", port=443, reason="not-allowed", operation="resolve"),
        BreakerOpenRefused("open", code=errno.ECONNREFUSED, address="198.51.100.9", port=80, reason="breaker-open"),
        BreakerOpen("open", code=errno.EHOSTUNREACH, reason="breaker-open"),
        BreakerOpen("open (policy)", reason="breaker-open"),
    ],
    ids=["EgressBlocked", "LookupBlocked", "BreakerOpenRefused", "BreakerOpen-unreachable", "BreakerOpen-eacces"],
)
def test_errors_survive_pickling_whole(exc):
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        again = pickle.loads(pickle.dumps(exc, protocol))
        assert _attrs(again) == _attrs(exc)
    assert BreakerOpen("x").errno == errno.EACCES


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (EgressBlocked, None),
        (LookupBlocked, None),
        (BreakerOpenRefused, errno.ECONNREFUSED),
        (BreakerOpen, None),
        (BreakerOpen, errno.EHOSTUNREACH),
    ],
)
def test_build_error_gives_what_the_keyword_call_gives(cls, code):
    """sockguard.refusal builds its exceptions with errors.build_error (the keyword call costs four times more): the
    same class, errno, args, text, repr, attributes in the same order, pickle."""
    from sockguard.errors import build_error

    attrs = {"host": "a.test", "port": 1, "address": "203.0.113.7", "reason": "raw-ip", "rule": None,
             "operation": "connect", "caller": "app:f:1", "suggestion": "203.0.113.7:1"}  # fmt: skip
    made = cls("sockguard blocked it", code=code, **attrs)
    built = build_error(cls, code, "sockguard blocked it", dict(attrs))
    for exc in (made, built, pickle.loads(pickle.dumps(built))):
        assert (_attrs(exc), repr(exc), list(exc.__dict__.items())) == (_attrs(made), repr(made), list(attrs.items()))
        assert exc.__traceback__ is None and exc.__context__ is None and exc.filename is None


def test_an_old_two_argument_pickle_still_loads():
    from sockguard.errors import _rebuild

    exc = _rebuild("sockguard blocked connection", {"reason": "raw-ip", "host": None})
    assert type(exc) is EgressBlocked and exc.errno == errno.EACCES and exc.reason == "raw-ip"


# -- every client classifies a blocked lookup as a name-resolution failure ----------------------------


@pytest.fixture
def blocked_name(netlab):
    """A name the lab's DNS would answer, under a policy that does not allow it; after the test, the DNS
    server must have seen no query for it."""
    netlab.dns.set(BLOCKED_NAME, A=["198.51.100.10"])
    server = netlab.tcp("198.51.100.10", 80, http=True)
    with sockguard.guarded(allow=["api.partner.test"], allow_loopback=False):
        yield BLOCKED_NAME
    assert netlab.dns.queries(BLOCKED_NAME) == 0
    assert server.accepted == 0


@pytest.mark.netlab
def test_stdlib_lookups_raise_gaierror(blocked_name):
    for call in (
        lambda: socket.getaddrinfo(blocked_name, 80),
        lambda: socket.gethostbyname(blocked_name),
        lambda: socket.gethostbyname_ex(blocked_name),
        lambda: socket.create_connection((blocked_name, 80), timeout=2),
        lambda: socket.socket().connect((blocked_name, 80)),
        lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", (blocked_name, 53)),
    ):
        with pytest.raises(socket.gaierror) as info:
            call()
        assert isinstance(info.value, sockguard.EgressBlocked) and info.value.reason == "not-allowed"
        assert info.value.errno == socket.EAI_FAIL and info.value.operation == "resolve"


@pytest.mark.netlab
def test_a_fallback_that_catches_gaierror_takes_its_fallback(blocked_name):
    def resolve_or_default(name: str) -> str:
        try:
            return socket.gethostbyname(name)
        except socket.gaierror:
            return "fallback"

    assert resolve_or_default(blocked_name) == "fallback"


@pytest.mark.netlab
def test_blocked_connects_and_sends_stay_eacces(netlab):
    server = netlab.tcp("203.0.113.10", 80)
    udp = netlab.udp("203.0.113.10", 53)
    with sockguard.guarded(allow=["api.partner.test"], allow_loopback=False):
        with pytest.raises(sockguard.EgressBlocked) as info:
            socket.create_connection(("203.0.113.10", 80), timeout=2)
        assert info.value.errno == errno.EACCES and not isinstance(info.value, socket.gaierror)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(sockguard.EgressBlocked) as info:
            s.sendto(b"x", ("203.0.113.10", 53))
        assert info.value.errno == errno.EACCES and type(info.value) is EgressBlocked
    assert server.accepted == 0 and udp.datagrams == 0


@pytest.mark.netlab
def test_urllib3_and_requests_report_name_resolution_error(blocked_name):
    urllib3 = pytest.importorskip("urllib3")
    requests = pytest.importorskip("requests")
    from urllib3.exceptions import MaxRetryError, NameResolutionError

    pool = urllib3.PoolManager(retries=urllib3.Retry(total=1))
    with pytest.raises(MaxRetryError) as info:
        pool.request("GET", f"http://{blocked_name}/")
    assert isinstance(info.value.reason, NameResolutionError)
    assert isinstance(info.value.reason.__cause__, sockguard.EgressBlocked)

    session = requests.Session()
    session.trust_env = False  # never an environment proxy
    with pytest.raises(requests.exceptions.ConnectionError) as caught:
        session.get(f"http://{blocked_name}/", timeout=2)
    assert isinstance(caught.value.args[0].reason, NameResolutionError)


def _caused_by_gaierror(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, socket.gaierror):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@pytest.mark.netlab
def test_httpx_aiohttp_and_asyncio_see_a_lookup_failure(blocked_name):
    httpx = pytest.importorskip("httpx")
    aiohttp = pytest.importorskip("aiohttp")

    with httpx.Client(trust_env=False) as client, pytest.raises(httpx.ConnectError) as info:
        client.get(f"http://{blocked_name}/")
    assert _caused_by_gaierror(info.value)  # httpx <- httpcore ConnectError <- LookupBlocked

    async def scenarios() -> None:
        with pytest.raises(socket.gaierror):
            await asyncio.open_connection(blocked_name, 80)
        with pytest.raises(socket.gaierror):
            await asyncio.get_running_loop().getaddrinfo(blocked_name, 80)
        async with httpx.AsyncClient(trust_env=False) as client:
            with pytest.raises(httpx.ConnectError) as info:
                await client.get(f"http://{blocked_name}/")
            assert _caused_by_gaierror(info.value)
        for resolver in (aiohttp.ThreadedResolver(), None):  # None: aiohttp's default (aiodns when installed)
            connector = aiohttp.TCPConnector(resolver=resolver) if resolver else aiohttp.TCPConnector()
            async with aiohttp.ClientSession(connector=connector) as session:
                with pytest.raises(aiohttp.ClientConnectorDNSError):
                    await session.get(f"http://{blocked_name}/")

    asyncio.run(scenarios())


# -- log levels: an app at INFO sees no line per allowed connection -------------------------------------

_APP = """
import logging, socket, sys
logging.basicConfig(level=getattr(logging, sys.argv[1]), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
if sys.argv[4]:  # allowed decisions are opt-in: the sockguard logger's own level
    logging.getLogger("sockguard").setLevel(getattr(logging, sys.argv[4]))
import sockguard
sockguard.install(allow=[], allow_loopback=True, log=sys.argv[3] or None)
port = int(sys.argv[2])
for _ in range(3):
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
logging.getLogger("app").info("app says hello")
with sockguard.guarded(allow_loopback=False, log=sys.argv[3] or None):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2)
    except sockguard.EgressBlocked:
        pass
"""


def _run_app(level: str, port: int, tmp_path: Path, log: str = "", sockguard_level: str = "") -> list[str]:
    script = tmp_path / "app.py"
    script.write_text(_APP)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "SOCKGUARD_CONFIG": str(tmp_path / "none.toml")}
    (tmp_path / "none.toml").write_text("")
    result = subprocess.run(
        [sys.executable, str(script), level, str(port), log, sockguard_level],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stderr.splitlines()


def test_an_app_logging_at_info_sees_no_line_for_allowed_connects(tmp_path):
    log = tmp_path / "decisions.jsonl"
    with CountingTCPServer() as server:
        info = _run_app("INFO", server.port, tmp_path, str(log))
        everything_debug = _run_app("DEBUG", server.port, tmp_path)
        debug = _run_app("INFO", server.port, tmp_path, sockguard_level="DEBUG")
        assert server.settle(9) == 9
    ours = [line for line in info if " sockguard " in line]
    assert "INFO app app says hello" in info
    assert len(ours) == 1 and ours[0].startswith("WARNING sockguard sockguard blocked connection to 127.0.0.1")
    # the decision log still has every decision
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["decision"] for e in events if e["op"] == "connect"] == ["allow"] * 3 + ["block"]
    # root at DEBUG (pytest's log_level = DEBUG, basicConfig(level=DEBUG)) does not turn allowed traffic on ...
    assert not [line for line in everything_debug if "allowed" in line and " sockguard " in line]
    assert any(line.startswith("WARNING sockguard sockguard blocked") for line in everything_debug)
    # ... the sockguard logger's own level does
    allowed = [line for line in debug if line.startswith("DEBUG sockguard sockguard allowed connect to 127.0.0.1")]
    assert len(allowed) == 3
    assert any(line.startswith("WARNING sockguard sockguard blocked") for line in debug)


# -- caller attribution --------------------------------------------------------------------------------


@pytest.fixture
def decisions(tmp_path):
    """The guard with a decision log; yields a function returning the events logged so far."""
    log = tmp_path / "decisions.jsonl"
    state = guard.state_from_settings(Settings(allow_loopback=True, log=str(log)))
    with guard.applied(state):
        yield lambda: [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def app_connects(port: int) -> None:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_thread_running_application_code_names_it(decisions):
    with CountingTCPServer() as server:
        thread = threading.Thread(target=app_connects, args=(server.port,))
        thread.start()
        thread.join(10)
    [event] = [e for e in decisions() if e["op"] == "connect"]
    assert event["caller"].startswith("tests.test_transparency:app_connects:")


def test_a_thread_running_only_library_code_has_no_caller(decisions):
    with CountingTCPServer() as server, socket.socket() as sock:
        thread = threading.Thread(target=sock.connect, args=(("127.0.0.1", server.port),))
        thread.start()
        thread.join(10)
        assert server.settle(1) == 1
    [event] = [e for e in decisions() if e["op"] == "connect"]
    assert event["caller"] is None  # not "threading:_bootstrap": nothing of the application asked for it


def test_an_event_loop_callback_of_library_code_is_not_blamed_on_the_asyncio_run_site(decisions):
    with CountingTCPServer() as server, socket.socket() as sock:

        async def main() -> None:
            loop = asyncio.get_running_loop()
            done = loop.create_future()

            def callback() -> None:  # application code run as a loop callback: named
                app_connects(server.port)
                loop.call_soon(sock.connect, ("127.0.0.1", server.port))  # only library code: no caller
                loop.call_soon(done.set_result, None)

            loop.call_soon(callback)
            await done

        asyncio.run(main())
        assert server.settle(2) == 2
    callers = [e["caller"] for e in decisions() if e["op"] == "connect"]
    assert len(callers) == 2
    assert callers[0].startswith("tests.test_transparency:app_connects:")
    assert callers[1] is None  # before: this test function, the asyncio.run call site


@pytest.mark.netlab
def test_an_asyncio_lookup_is_blamed_on_the_awaiting_coroutine(decisions):
    async def app_resolves() -> None:
        with pytest.raises(socket.gaierror):
            await asyncio.get_running_loop().getaddrinfo(BLOCKED_NAME, 80)

    asyncio.run(app_resolves())
    blocks = [e for e in decisions() if e["decision"] == "block"]
    assert len(blocks) == 1 and blocks[0]["caller"].startswith("tests.test_transparency:app_resolves:")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_connect_in_a_task_group_child_is_blamed_on_the_task_that_started_it(decisions, backend):
    """anyio's connect_tcp (httpx's async transport) races its attempts in child tasks of a task group: the
    connect's own stack holds only anyio, so the caller is the application coroutine of the task that started
    the group (before: null for every async httpx connection, httpx's suite)."""
    anyio = pytest.importorskip("anyio")
    if backend == "trio":
        pytest.importorskip("trio")

    async def app_connects_async(port: int) -> None:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        await stream.aclose()

    async def app_child_of_child(port: int) -> None:  # two task groups deep: the grandparent asked
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.connect_tcp, "127.0.0.1", port)

    with CountingTCPServer() as server:
        anyio.run(app_connects_async, server.port, backend=backend)
        anyio.run(app_child_of_child, server.port, backend=backend)
        assert server.settle(2) == 2
    callers = [e["caller"] for e in decisions() if e["op"] == "connect"]
    assert len(callers) == 2, callers
    assert callers[0].startswith("tests.test_transparency:app_connects_async:"), callers
    assert callers[1].startswith("tests.test_transparency:app_child_of_child:"), callers


def test_a_plain_asyncio_task_keeps_no_parent_and_has_no_caller(decisions):
    """asyncio records no parent for create_task: a task running only library code stays null (no guess)."""
    with CountingTCPServer() as server, socket.socket() as sock:
        sock.setblocking(False)

        async def main() -> None:
            await asyncio.create_task(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port)))

        asyncio.run(main())
        assert server.settle(1) == 1
    [event] = [e for e in decisions() if e["op"] == "connect"]
    assert event["caller"] is None


def test_runner_and_launcher_frames_are_plumbing(tmp_path):
    judge = caller_module._module_is_plumbing
    for name in ("pytest", "_pytest.python", "pluggy._callers", "unittest.case", "xdist.remote", "pytest_asyncio",
                 "click.core", "click.testing"):  # fmt: skip
        assert judge(name, {"__name__": name}), name
    spec = type("Spec", (), {"name": "pytest.__main__"})()
    assert judge("__main__", {"__name__": "__main__", "__spec__": spec})  # python -m pytest
    wrapper = str(Path(sys.executable).parent / "pytest")  # the entry-point script pip writes
    assert judge("__main__", {"__name__": "__main__", "__spec__": None, "__file__": wrapper})
    script = str(tmp_path / "app.py")
    assert not judge("__main__", {"__name__": "__main__", "__spec__": None, "__file__": script})
    app_spec = type("Spec", (), {"name": "myapp.__main__"})()
    assert not judge("__main__", {"__name__": "__main__", "__spec__": app_spec})
    assert caller_module._display_name({"__name__": "__main__", "__spec__": app_spec}) == "myapp.__main__"
