"""A refused call frees its frames at once: no frame of the refusing function outlives the handled exception.

An enforcement point that writes ``error = refuse(...)`` then ``raise error`` keeps its own frame alive: the
exception's traceback holds the frame, the frame's local ``error`` holds the exception. Only the cyclic garbage
collector frees that circle, and with it every frame the traceback names (the application's too) and their locals:
sockets, buffers, whatever the caller held. A caught exception kept in a list (``blocked.append(exc)``) makes the
same circle. Every test here runs the refused call with the collector off, so any such circle shows: an object only
the calling frame holds must die as soon as the exception is handled, the exception itself too, and no frame of
sockguard's code may be left over.

Where a call would send anything, the far side proves it did not (nothing accepted, received or asked of DNS).
"""

from __future__ import annotations

import _socket
import errno
import gc
import os
import socket
import sys
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import sockguard
from sockguard import _hook, active, floor, guard, integrations, lowlevel, testing
from sockguard.config import Settings
from sockguard.errors import InvalidHost
from tests.netlab import Lab

_SOCKGUARD = os.path.dirname(sockguard.__file__) + os.sep
ALLOWED = "api.allowed.test"
BLOCKED = "blocked.test"
FAR = "198.51.100.11"  # a lab address no rule allows
STRANGER = "192.0.2.1"  # not on the lab's lo (a reverse lookup of this host's own addresses is allowed)


class _Local:
    """An object that only the calling frame holds (a frame itself cannot be weakly referenced)."""


def _sockguard_frames() -> list[types.FrameType]:
    """Frame objects of sockguard's code that no thread is executing now (finished, or a suspended generator's)."""
    running = set()
    for frame in sys._current_frames().values():
        while frame is not None:
            running.add(id(frame))
            frame = frame.f_back  # type: ignore[assignment]
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, types.FrameType) and obj.f_code.co_filename.startswith(_SOCKGUARD) and id(obj) not in running
    ]


def _handled_in_a_frame(
    call: Callable[[], object], expected: type[BaseException] | None, check: Callable[[Any], None] | None
) -> tuple[weakref.ref[_Local], weakref.ref[BaseException] | None]:
    local = _Local()
    if expected is None:
        call()
        return weakref.ref(local), None
    try:
        call()
    except expected as exc:
        if check is not None:
            check(exc)
        # sockguard's exceptions (and psycopg's) are weakly referenceable, the built-in OSErrors not
        raised = weakref.ref(exc) if hasattr(exc, "__weakref__") else None
    else:
        pytest.fail(f"{call} was not refused")
    return weakref.ref(local), raised


def refused_and_freed(
    call: Callable[[], object],
    expected: type[BaseException] | None = sockguard.EgressBlocked,
    check: Callable[[Any], None] | None = None,
) -> None:
    """``call`` raises ``expected``; once it is handled, reference counting alone frees the caller's frame and its
    locals, the exception and every frame of sockguard's the traceback named (``expected`` None: ``call`` returns,
    and the same holds for the exceptions it handled on the way)."""
    gc.collect()
    before = _sockguard_frames()  # held, so that no id is reused (a suspended generator's frame, say)
    known = {id(frame) for frame in before}
    gc.disable()
    try:
        local, raised = _handled_in_a_frame(call, expected, check)
        left = [
            f"{frame.f_code.co_name} ({os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno})"
            for frame in _sockguard_frames()
            if id(frame) not in known
        ]
    finally:
        gc.enable()
    assert not left, f"frames left for the garbage collector: {left}"
    assert local() is None, "the caller's frame outlived the handled exception"
    assert raised is None or raised() is None, "the exception outlived its handling"


def _state(**settings: Any) -> guard.State:
    values: dict[str, Any] = {
        "allow": [ALLOWED, "198.51.100.10"],
        "allow_loopback": False,
        "allow_unix": False,
        "breaker": {"enabled": False},
    }
    values.update(settings)
    return guard.state_from_settings(Settings(**values))


@pytest.fixture
def refusing() -> Iterator[guard.State]:
    """The policy in force: a name and one lab address allowed, nothing else (no loopback, no AF_UNIX)."""
    with guard.applied(_state()) as state:
        yield state


def _nothing_waiting(listener: socket.socket) -> bool:
    listener.setblocking(False)
    try:
        listener.accept()[0].close()
    except BlockingIOError:
        return True
    return False


# -- sockets: the floor, the wrappers, raw sockets and source routes ------------------------------------------------


def test_a_refused_unix_connect_frees_its_frames(refusing: guard.State) -> None:
    path = f"\0sockguard-frames-{os.getpid()}"  # abstract: nothing on disk
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client,
    ):
        listener.bind(path)
        listener.listen()
        refused_and_freed(lambda: client.connect(path))
        refused_and_freed(lambda: client.connect_ex(path))
        assert _nothing_waiting(listener)


def test_a_refused_datagram_frees_its_frames(refusing: guard.State) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        receiver.bind(("127.0.0.2", 0))
        target = receiver.getsockname()
        refused_and_freed(lambda: sender.sendto(b"x", target))
        refused_and_freed(lambda: sender.sendmsg([b"x"], [], 0, target))
        receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            receiver.recv(16)


def test_a_connect_in_a_shape_only_c_saw_frees_its_frames(refusing: guard.State) -> None:
    """A bytearray host handed to ``_socket`` directly: the floor cannot know what C used, and refuses it."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client,
    ):
        listener.bind(("127.0.0.2", 0))
        listener.listen()
        port = listener.getsockname()[1]
        refused_and_freed(lambda: _socket.socket.connect(client, (bytearray(b"127.0.0.2"), port)))
        assert _nothing_waiting(listener)


class _OtherFamily:
    """A socket of a family the guard has no checks for, as the floor's handler sees it."""

    family = getattr(socket, "AF_VSOCK", 40)


def test_a_connect_of_another_family_frees_its_frames(refusing: guard.State) -> None:
    refused_and_freed(lambda: floor.HANDLERS["socket.connect"]((_OtherFamily(), (3, 1024))))


def test_a_refused_raw_socket_frees_its_frames(refusing: guard.State) -> None:
    refused_and_freed(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
    refused_and_freed(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))


def test_a_refused_source_route_frees_its_frames(refusing: guard.State) -> None:
    loose_source_route = bytes((0x83, 3, 4, 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        refused_and_freed(lambda: sock.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, loose_source_route))


def test_a_host_no_rule_can_name_frees_its_frames(refusing: guard.State) -> None:
    """Refused while the InvalidHost is handled: the refusal keeps it as its context, as before."""

    def chained(exc: sockguard.EgressBlocked) -> None:
        assert isinstance(exc.__context__, InvalidHost) and exc.__cause__ is None, repr(exc.__context__)

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        refused_and_freed(lambda: sock.connect((b"\xff.test", 80)), check=chained)


def test_a_bind_to_a_name_c_resolved_frees_its_frames(refusing: guard.State, netlab: Lab) -> None:
    """A name in a bind that bypassed the wrappers (from the lab's /etc/hosts: no DNS query either way)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        refused_and_freed(lambda: _socket.socket.bind(sock, ("static.netlab.test", 0)))
    assert netlab.dns.log() == []


# -- lookups: the wrappers and the floor ----------------------------------------------------------------------------


def test_a_refused_lookup_frees_its_frames(netlab: Lab) -> None:
    netlab.dns.set(BLOCKED, A=[FAR])
    netlab.dns.set(ALLOWED, A=["198.51.100.10"])
    with guard.applied(_state()):
        refused_and_freed(lambda: socket.getaddrinfo(BLOCKED, 443))  # the wrapper
        refused_and_freed(lambda: socket.gethostbyname(BLOCKED))
        refused_and_freed(lambda: _socket.getaddrinfo(BLOCKED, 443))  # the floor
        refused_and_freed(lambda: _socket.getaddrinfo(type("Name", (str,), {})(ALLOWED), 443))  # a str subclass
    assert netlab.dns.log() == []


def test_a_lookup_that_would_reach_a_search_list_frees_its_frames(netlab: Lab) -> None:
    netlab.dns.set(ALLOWED, A=["198.51.100.10"])
    with guard.applied(_state()):
        os.environ["LOCALDOMAIN"] = "evil.test"
        try:
            refused_and_freed(lambda: _socket.getaddrinfo(ALLOWED, 443), check=_reason("search-list"))
        finally:
            del os.environ["LOCALDOMAIN"]  # while the guard sees it (os.unsetenv's audit event), as it saw it set
    assert netlab.dns.log() == []


def test_a_lookup_past_the_pinned_resolver_frees_its_frames(netlab: Lab) -> None:
    from sockguard.resolver import Resolver

    with guard.applied(_state()) as state:
        state.resolver = Resolver([f"{netlab.BLACKHOLE_DNS}:53"], timeout=0.5, attempts=1)
        refused_and_freed(lambda: _socket.getaddrinfo(ALLOWED, 443), check=_reason("pinned-resolver"))
    assert netlab.dns.log() == [] and netlab.dns.blackhole_queries() == 0


def test_a_refused_reverse_lookup_frees_its_frames(netlab: Lab) -> None:
    with guard.applied(_state()):
        refused_and_freed(lambda: _socket.gethostbyaddr(STRANGER))
        refused_and_freed(lambda: socket.gethostbyaddr(STRANGER))
    assert netlab.dns.log() == []


def _reason(reason: str) -> Callable[[sockguard.EgressBlocked], None]:
    def check(exc: sockguard.EgressBlocked) -> None:
        assert exc.reason == reason, exc

    return check


# -- the public door for other resolvers and C clients (sockguard.lowlevel), and answers ----------------------------


def test_refusals_of_the_lowlevel_door_free_their_frames(refusing: guard.State, netlab: Lab) -> None:
    """These decide and send nothing themselves; the lab's DNS server sees no query."""
    refused_and_freed(lambda: lowlevel.check_lookup(BLOCKED))
    refused_and_freed(lambda: lowlevel.check_reverse(STRANGER))
    refused_and_freed(lambda: lowlevel.check_connect(FAR, 443))
    refused_and_freed(lambda: lowlevel.check_send(FAR, 53))
    refused_and_freed(lambda: lowlevel.check_unix("/run/postgresql/.s.PGSQL.5432"))
    refused_and_freed(lambda: lowlevel.admit_answers(ALLOWED, 443, ["10.20.30.40"]))  # internal behind a name
    assert netlab.dns.log() == []


# -- integrations: psycopg (libpq), and the uvloop connect helper ---------------------------------------------------


def test_a_refused_psycopg_connection_frees_its_frames(netlab: Lab) -> None:
    """Every host refused: psycopg's OperationalError, the refusal its cause, as before."""
    psycopg = pytest.importorskip("psycopg")
    netlab.dns.set(BLOCKED, A=[FAR])
    server = netlab.tcp(FAR, 5432)

    def caused(exc: Any) -> None:
        assert isinstance(exc.__cause__, sockguard.EgressBlocked), repr(exc.__cause__)

    with guard.applied(_state()):
        for hosts in (f"host={BLOCKED}", f"host={BLOCKED},other.test", f"host=db.test hostaddr={FAR}"):
            conninfo = f"{hosts} port=5432 user=app dbname=app"
            refused_and_freed(
                lambda conninfo=conninfo: psycopg.connect(conninfo, connect_timeout=2), psycopg.OperationalError, caused
            )
    assert netlab.dns.log() == []
    assert server.accepted == 0


class _Loop:
    """The two event-loop methods the uvloop connect helper awaits, answered at once (no event loop); the lookup
    answers ``targets`` in order."""

    def __init__(self, *targets: tuple[str, int]) -> None:
        self.infos = [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", target) for target in targets]

    async def getaddrinfo(self, host: Any, port: Any, **kwargs: Any) -> Any:
        return self.infos

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        sock.setblocking(True)
        sock.connect(address)


def _run(coroutine: Any) -> Any:
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine waited")


def test_the_uvloop_connect_helper_frees_its_frames() -> None:
    """The helper keeps each failed attempt to raise the failure itself, as asyncio does: whatever ends it (the one
    failure, a refusal of the next address, a connection to it) lets go of them, and with them of its frame."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as refused_listener,
    ):
        closed.bind(("127.0.0.1", 0))  # bound, never listening: a connect to it is refused by the kernel
        listener.bind(("127.0.0.1", 0))
        refused_listener.bind(("127.0.0.2", 0))
        for server in (listener, refused_listener):
            server.listen()
        failing, listening, refused = closed.getsockname(), listener.getsockname(), refused_listener.getsockname()

        def connect(*targets: tuple[str, int]) -> Any:
            return _run(integrations._uv_connected_socket(_Loop(*targets), "db.test", 0, None, stream=True))

        with guard.applied(_state(allow=["127.0.0.1"])):
            refused_and_freed(lambda: connect(failing), ConnectionRefusedError)
            refused_and_freed(lambda: connect(failing, refused))
            refused_and_freed(lambda: connect(failing, listening).close(), None)
        assert _nothing_waiting(refused_listener)
        listener.accept()[0].close()  # the one connection the policy allowed


# -- failures of allowed lookups that sockguard answers in Python ---------------------------------------------------


def test_a_failed_search_list_lookup_frees_its_frames(netlab: Lab) -> None:
    """Not a refusal: every allowed search-list candidate is missing, and the failure glibc would give is raised."""
    with (
        netlab.nameservers(netlab.DNS_SERVER, search=["a.allowed.test", "b.allowed.test"]),
        guard.applied(_state(allow=["api", "*.allowed.test"])),
    ):
        testing.reset()
        refused_and_freed(lambda: socket.getaddrinfo("api", 443, socket.AF_INET), socket.gaierror)
    assert {name for name, _, _, _ in netlab.dns.log()} == {"api.a.allowed.test", "api.b.allowed.test", "api"}


def test_a_pinned_resolver_without_an_answer_frees_its_frames(netlab: Lab) -> None:
    from sockguard.resolver import Resolver

    with guard.applied(_state()) as state:
        state.resolver = Resolver([f"{netlab.BLACKHOLE_DNS}:53"], timeout=0.2, attempts=1)
        refused_and_freed(lambda: socket.getaddrinfo(ALLOWED, 443, socket.AF_INET), socket.gaierror)
    assert netlab.dns.blackhole_queries(ALLOWED) == 1 and netlab.dns.queries() == 0


# -- a first use whose load fails for a reason other than the configuration (issue 18) -------------------------------


class _Interrupt(Exception):
    """What a signal handler raises into the load (it reaches the application unchanged)."""


@pytest.mark.parametrize("failure", ["no descriptor left", "interrupted"])
def test_a_failed_load_frees_its_frames(monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    """The first socket use loads the configuration; when that fails, the use is refused (config-unavailable) or
    gets the application's own exception, and the loader's frame keeps neither."""

    def load_fails() -> guard.State:
        if failure == "interrupted":
            raise _Interrupt()
        raise OSError(errno.EMFILE, "Too many open files")

    expected: type[BaseException] = _Interrupt if failure == "interrupted" else sockguard.EgressBlocked
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client,
    ):
        listener.bind(("127.0.0.2", 0))
        listener.listen()
        target = listener.getsockname()
        previous = guard.install(guard.off())
        try:
            active.in_force = None  # as sitecustomize leaves a process: nothing loaded until the first use
            _hook.set_lazy_handlers()
            _hook.install_audit_hook()
            monkeypatch.setattr(guard, "_load_from_environment", load_fails)
            refused_and_freed(lambda: client.connect(target), expected)
        finally:
            guard.restore(previous)
        assert _nothing_waiting(listener)
