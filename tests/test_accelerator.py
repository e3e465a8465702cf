"""The C accelerator (native/sg_accel.c, issue 16) against the Python floor it stands in for.

* Differential: for every address shape (plain tuples, subclasses, bytes and str-subclass hosts, int-subclass and
  ``__index__`` ports, 3- and 4-tuples, other families) and every State shape (breaker on/off, monitor mode, a
  decision log, logging at DEBUG, a cold cache), whenever the C hook would answer a ``socket.connect``/``sendto``
  itself, the Python handler run on the same event raises nothing, emits nothing and changes no cache or breaker
  record: the fast path only ever skips work the handler would have found nothing to do for. And it does answer
  the plain, cached, allowed case (the test is not vacuous).
* The floor cannot be switched off from Python: the hook installs once, the fast path is set up once, and the
  module has no setting that changes either.
* Blocked: a connect/sendto whose cached decision is blocked, refused by the C hook itself where refuse() would
  only raise, gives the very exception the Python handler gives (class, errno, args, text, repr, attributes,
  pickling), for every State shape (the C hook refuses only in the quiet one); nothing is sent, and no frame or
  object outlives the refusal.
* The extension built with AddressSanitizer and UndefinedBehaviorSanitizer runs the enforcement paths in a child.

The whole suite's enforcement tests also run a second time without the accelerator (``scripts/test``), with the
same outcomes expected.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import enum
import functools
import gc
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import traceback
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sockguard import EgressBlocked, _hook, addrmap, floor, guard
from sockguard.accelerator import accelerator
from sockguard.config import Settings
from tests.accel_support import assert_clean_under_sanitizers

ROOT = Path(__file__).resolve().parent.parent
fast = accelerator()
needs_accelerator = pytest.mark.skipif(fast is None, reason="the accelerator is off or not built in this run")


class Text(str):
    pass


class Forged(str):
    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash("127.0.0.1")


class Number(int):
    pass


class Changing:
    def __index__(self) -> int:
        return 9


class Pair(tuple):
    pass


Endpoint = collections.namedtuple("Endpoint", "host port")


def shapes(host: str, port: int) -> list[object]:
    service = enum.IntEnum("Service", {"P": port}).P
    return [
        (host, port),
        Pair((host, port)),
        Endpoint(host, port),
        (Text(host), port),
        (Forged(host), port),
        (host.encode(), port),
        (bytearray(host.encode()), port),
        (host, Number(port)),
        (host, service),
        (host, Changing()),
        (host, port, 0),
        (host, port, 0, 0),
        [host, port],
        (host,),
        host,
        (None, port),
        (host, str(port)),
    ]


def snapshot(state: guard.State, events: list[dict]) -> tuple[object, ...]:
    breaker = state.breaker
    return (
        copy.deepcopy(state.addrs),
        dict(state.names),
        None if breaker is None else set(breaker.healthy),
        None if breaker is None else {k: (d.failures and len(d.failures), d.trips) for k, d in breaker.dests.items()},
        None if breaker is None else dict(breaker.watched),
        len(events),
    )


def states(tmp_path: Path, port: int) -> Iterator[tuple[str, guard.State, list[dict], bool]]:
    """``(label, state, events, logged)``: ``logged`` when a sink wants allow events (the C hook must not answer)."""
    rules = [f"127.0.0.1:{port}", f"127.0.0.0/8:{port + 1}", "::1"]
    for label, options, logged in (
        ("breaker on", {}, False),
        ("breaker off", {"breaker": {"enabled": False}}, False),
        ("monitor", {"mode": "monitor"}, False),
        ("decision log", {"log": str(tmp_path / "decisions.jsonl")}, True),
        ("debug logging", {}, True),
    ):
        events: list[dict] = []
        settings = Settings(allow=rules, allow_loopback=False, **options)
        yield label, guard.state_from_settings(settings, observer=events.append), events, logged


def _receiver(family: int, host: str, port: int = 0) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, port))
    return sock


@needs_accelerator
def test_the_c_hook_answers_only_what_the_python_handler_has_nothing_to_do_for(tmp_path: Path) -> None:
    assert fast is not None
    sockguard_logger = logging.getLogger("sockguard")
    answered = 0
    with _receiver(socket.AF_INET, "127.0.0.1") as r4:
        port = r4.getsockname()[1]
        with _receiver(socket.AF_INET6, "::1", port) as r6:
            for label, state, events, logged in states(tmp_path, port):
                level = sockguard_logger.level
                if label == "debug logging":
                    sockguard_logger.setLevel(logging.DEBUG)
                try:
                    answered += _compare(state, events, logged, label, port)
                finally:
                    sockguard_logger.setLevel(level)
                assert r6.getsockname()
    assert answered


def _compare(state: guard.State, events: list[dict], logged: bool, label: str, port: int) -> int:
    assert fast is not None
    answered = 0
    with (
        guard.applied(state),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as v6,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix,
    ):
        allowed = ("127.0.0.1", port)
        assert not fast.answers((v4, allowed), True)  # a cold cache: the handler decides
        for _ in range(2):  # decided, then (breaker on) healthy
            v4.connect(allowed)
            v4.sendto(b"", allowed)
            v6.connect(("::1", port))
        try:
            v4.connect(("127.0.0.2", port))
        except EgressBlocked:
            assert state.mode == "enforce"
        else:
            assert state.mode == "monitor"  # logged as would-block, and let through
        for sock, host, where in (
            (v4, "127.0.0.1", port),
            (v4, "127.0.0.2", port),
            (v4, "127.0.0.1", port + 1),
            (v6, "::1", port),
            (unix, "127.0.0.1", port),
        ):
            for shape in shapes(host, where):
                for connect in (True, False):
                    args = (sock, shape)
                    if not fast.answers(args, connect):
                        continue
                    answered += 1
                    before = snapshot(state, events)
                    (floor._on_connect if connect else floor._on_sendto)(args)
                    assert snapshot(state, events) == before, (label, shape, connect)
        plain = fast.answers((v4, allowed), True), fast.answers((v4, allowed), False)
        assert plain == ((False, False) if logged else (True, True)), label
        assert fast.answers((v6, ("::1", port)), True) is not logged, label
        assert not fast.answers((v4, Pair(allowed)), True)  # a subclass never keys the cache
        assert not fast.answers((v4, (Text("127.0.0.1"), port)), True)
        assert not fast.answers((v4, ("127.0.0.1", Number(port))), True)
        assert not fast.answers((unix, allowed), True)
        assert not fast.answers((v4, ("127.0.0.2", port)), True)  # refused: never answered in C
    return answered


@needs_accelerator
def test_a_state_swap_is_seen_at_the_next_event(tmp_path: Path) -> None:
    """The hook reads the State in force at every event: a stricter State put in force refuses at once."""
    assert fast is not None
    wide = guard.state_from_settings(Settings(allow=["127.0.0.1"], allow_loopback=False))
    narrow = guard.state_from_settings(Settings(allow=["127.0.0.3"], allow_loopback=False))
    with _receiver(socket.AF_INET, "127.0.0.1") as receiver, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        address = receiver.getsockname()
        with guard.applied(wide):
            sock.connect(address)
            sock.connect(address)
            before = fast.status()["fast_answers"]
            sock.connect(address)
            assert fast.status()["fast_answers"] == before + 1  # answered in C
            with guard.applied(narrow), pytest.raises(EgressBlocked):
                sock.connect(address)
            sock.connect(address)


@needs_accelerator
def test_the_floor_cannot_be_switched_off_or_redirected_from_python() -> None:
    assert fast is not None
    _hook.install_audit_hook()  # (what activation does; once per process, as the earlier tests of a run may have)
    status = fast.status()
    assert status["hook"] and status["fast_path"]
    with pytest.raises(RuntimeError):
        fast.install({}, ["socket.connect"])
    with pytest.raises(RuntimeError):
        fast.fast_path(*[None] * 8)
    assert status["blocked_path"]
    with pytest.raises(RuntimeError):
        fast.blocked_path({}, {}, set(), EgressBlocked)
    settable = {name for name in vars(fast) if not name.startswith("__")}
    # (these serve request events: their text and their line in the log; no decision reads them, and the set-up of
    # the record and its end is once only)
    request_events = {"caller_setup", "find_caller", "request_line", "request_setup", "request_new", "request_end"}
    from sockguard.http import events

    with pytest.raises(RuntimeError):
        fast.request_setup(events.Request, object, None, [None], [0], {}, print)
    assert settable == {"install", "fast_path", "status", "answers", "wrap", "blocked_path"} | request_events


def _attempt(call: object, argument: object) -> EgressBlocked | None:
    """``call(argument)``'s refusal; both paths are called from this one line, so both name the same caller."""
    try:
        call(argument)  # type: ignore[operator]
    except EgressBlocked as exc:
        return exc
    return None


def _facts(exc: EgressBlocked | None) -> object:
    if exc is None:
        return None
    copy_ = pickle.loads(pickle.dumps(exc))
    return (
        type(exc),
        exc.args,
        exc.errno,
        exc.strerror,
        str(exc),
        repr(exc),
        list(exc.__dict__.items()),
        traceback.format_exception_only(exc),
        (type(copy_), copy_.args, str(copy_), list(copy_.__dict__.items())),
        exc.__cause__,
        exc.__context__,
    )


def _handler(event: str) -> object:
    """The floor's handler for ``event`` as the hook in use calls it: the Python hook calls it from _hook._audit (one
    frame more, which the caller search counts: floor._AUDIT)."""
    return floor.HANDLERS[event] if fast is not None else functools.partial(_hook._audit, event)


def _refusals() -> int:
    return 0 if fast is None else fast.status()["fast_refusals"]


BLOCKED_SHAPES = (
    # label, settings, logger level, a name known for the address, refused in C
    ("quiet", {"breaker": {"enabled": False}}, logging.CRITICAL, False, True),
    ("breaker on", {}, logging.CRITICAL, False, False),
    ("monitor", {"mode": "monitor", "breaker": {"enabled": False}}, logging.CRITICAL, False, False),
    ("warning wanted", {"breaker": {"enabled": False}}, logging.WARNING, False, False),
    ("decision log", {"breaker": {"enabled": False}, "log": "LOG"}, logging.CRITICAL, False, False),
    ("observer", {"breaker": {"enabled": False}}, logging.CRITICAL, False, False),
    ("address of a name", {"breaker": {"enabled": False}}, logging.CRITICAL, True, False),
)


@pytest.mark.parametrize("shape", BLOCKED_SHAPES, ids=[shape[0] for shape in BLOCKED_SHAPES])
def test_a_blocked_repeat_gives_the_python_handlers_exception(tmp_path: Path, shape: tuple) -> None:
    """The same refusal through the real call (the C hook, when it refuses itself) and through the Python handler:
    identical exceptions, events and sends (none); the C hook refuses only where refuse() would only raise."""
    label, options, level, named, in_c = shape
    options = {**options, "log": str(tmp_path / "decisions.jsonl")} if "log" in options else options
    events: list[dict] = []
    settings = Settings(allow=["127.0.0.1"], allow_loopback=False, **options)
    state = guard.state_from_settings(settings, observer=events.append if label == "observer" else None)
    logger = logging.getLogger("sockguard")
    saved = logger.level
    logger.setLevel(level)
    try:
        with (
            _receiver(socket.AF_INET, "127.0.0.2") as receiver,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
            guard.applied(state),
        ):
            receiver.setblocking(False)
            target = receiver.getsockname()
            if named:
                addrmap.remember(target[0], "blocked.example")
            try:
                for operation, real, handler, argument in (
                    ("connect", sock.connect, _handler("socket.connect"), target),
                    ("send", functools.partial(sock.sendto, b"x"), _handler("socket.sendto"), target),
                ):
                    first = _attempt(real, argument)  # decided, message cached (the Python handler)
                    before = _refusals()
                    logged = len(events)
                    in_c_exc = _attempt(real, argument)
                    refused_in_c = _refusals() - before
                    python_exc = _attempt(handler, (sock, argument))
                    assert _facts(in_c_exc) == _facts(python_exc), (label, operation)
                    assert _facts(first) == _facts(in_c_exc), (label, operation)
                    if state.mode == "monitor":
                        assert in_c_exc is None
                    else:
                        assert in_c_exc is not None and in_c_exc.caller is not None
                        assert in_c_exc.caller.startswith("tests.test_accelerator:_attempt:"), in_c_exc.caller
                        assert in_c_exc.operation == operation and in_c_exc.address == target[0]
                    expect_c = in_c and fast is not None
                    assert refused_in_c == (1 if expect_c else 0), (label, operation)
                    assert len(events) - logged == (2 if label == "observer" else 0), label
                arrived = 0
                while True:
                    try:
                        receiver.recv(16)
                    except BlockingIOError:
                        break
                    arrived += 1
                assert arrived == (2 if state.mode == "monitor" else 0), label  # monitor: logged, let through
            finally:
                if named:
                    addrmap.forget()
    finally:
        logger.setLevel(saved)


def _quiet_state() -> guard.State:
    return guard.state_from_settings(Settings(allow=["127.0.0.1"], allow_loopback=False, breaker={"enabled": False}))


def test_a_blocked_repeat_from_plumbing_alone_names_no_caller() -> None:
    """A thread that runs the connect itself (only threading's frames above it): find_caller stops at the thread's
    start and finds nobody ("unknown code"), through the C hook and the Python handler alike."""
    logger = logging.getLogger("sockguard")
    saved = logger.level
    logger.setLevel(logging.CRITICAL)
    caught: list[BaseException | None] = []
    previous_hook = threading.excepthook

    def keep(args: threading.ExceptHookArgs) -> None:
        caught.append(args.exc_value)

    try:
        threading.excepthook = keep
        with (
            _receiver(socket.AF_INET, "127.0.0.2") as receiver,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
            guard.applied(_quiet_state()),
        ):
            target = receiver.getsockname()
            for call, argument in (
                (sock.connect, target),
                (sock.connect, target),
                (_handler("socket.connect"), (sock, target)),
            ):
                thread = threading.Thread(target=call, args=(argument,))
                thread.start()
                thread.join()
    finally:
        threading.excepthook = previous_hook
        logger.setLevel(saved)
    assert len(caught) == 3 and all(isinstance(exc, EgressBlocked) for exc in caught), caught
    facts = [_facts(exc) for exc in caught]  # type: ignore[arg-type]
    assert facts[0] == facts[1] == facts[2]
    assert caught[0].caller is None and "called from unknown code." in str(caught[0])  # type: ignore[union-attr]


@contextlib.contextmanager
def _blocked_repeats() -> Iterator[tuple[socket.socket, Any]]:
    """A UDP socket and a receiver's address it is refused to reach under the quiet State, the ``sockguard``
    logger silenced (what the C refusal of a blocked repeat needs)."""
    logger = logging.getLogger("sockguard")
    saved = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with (
            _receiver(socket.AF_INET, "127.0.0.2") as receiver,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
            guard.applied(_quiet_state()),
        ):
            yield sock, receiver.getsockname()
    finally:
        logger.setLevel(saved)


def test_a_blocked_repeat_inside_an_except_block_chains_as_the_python_handler_does() -> None:
    """Raised while another exception is being handled, the refusal has it as its ``__context__``, from C as from
    the Python handler."""
    handling = ValueError("being handled")
    with _blocked_repeats() as (sock, target):
        found = []
        for call, argument in (
            (sock.connect, target),
            (sock.connect, target),
            (_handler("socket.connect"), (sock, target)),
        ):
            try:
                raise handling
            except ValueError:
                found.append(_attempt(call, argument))
    assert all(exc is not None and exc.__context__ is handling for exc in found)
    assert _facts(found[0]) == _facts(found[1]) == _facts(found[2])


class _Marker:
    pass


def _refused_with_a_local(sock: socket.socket, target: object, refs: list[weakref.ref] | None) -> None:
    marker = _Marker()
    if refs is not None:
        refs.append(weakref.ref(marker))
    try:
        sock.connect(target)
    except EgressBlocked:
        pass


def test_a_blocked_repeat_keeps_no_frame_or_object_alive() -> None:
    """The caller search reads frames and lets them go: once a refusal is handled, the caller's frame and its locals
    are freed (no reference kept, no cycle), and many refusals leave no allocations behind."""
    refs: list[weakref.ref] = []
    with _blocked_repeats() as (sock, target):
        for _ in range(200):  # decided, message cached; the caches and free lists settle
            _refused_with_a_local(sock, target, None)
        gc.collect()
        before = _refusals()
        blocks = sys.getallocatedblocks()
        for _ in range(5000):
            _refused_with_a_local(sock, target, None)
        gc.collect()
        grown = sys.getallocatedblocks() - blocks
        assert _refusals() - before == (5000 if fast is not None else 0)
        for _ in range(10):
            _refused_with_a_local(sock, target, refs)
    assert all(ref() is None for ref in refs)  # freed by reference counting alone: no cycle through the frame
    assert grown < 100, grown


def test_accelerator_off_by_the_environment_uses_the_python_floor(tmp_path: Path) -> None:
    code = (
        "import socket, sys, sockguard\n"
        "from sockguard.accelerator import status\n"
        "sockguard.install(allow=['127.0.0.1:9'], from_environment=False, allow_loopback=False)\n"
        "print(status(), 'sockguard._accel' in sys.modules)\n"
        "try:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(('127.0.0.2', 9))\n"
        "except sockguard.EgressBlocked:\n    print('blocked')\n"
    )
    env = {**os.environ, "SOCKGUARD_ACCELERATOR": "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert result.stdout.split("\n")[:2] == ["off (SOCKGUARD_ACCELERATOR=0) False", "blocked"], result.stderr


SANITIZED_CHILD = r"""
import importlib.util, logging, socket, sys, threading
spec = importlib.util.spec_from_file_location("sockguard._accel", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["sockguard._accel"] = module
import sockguard
from sockguard import guard
from sockguard.config import Settings
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind(("127.0.0.1", 0))
PORT = r.getsockname()[1]
sockguard.install(allow=[f"127.0.0.1:{PORT}", "::1"], from_environment=False, allow_loopback=False)
assert module.status()["hook"] and module.status()["fast_path"], module.status()
class Pair(tuple): pass
class Text(str): pass
def work():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(3000):
        s.connect(("127.0.0.1", PORT))
        s.sendto(b"x", ("127.0.0.1", PORT))
        s.connect(Pair(("127.0.0.1", PORT)))
        s.sendto(b"x", 0, (Text("127.0.0.1"), PORT))
        for bad in (("127.0.0.2", PORT), ("127.0.0.1", PORT + 1)):
            try:
                s.connect(bad)
            except OSError:
                pass
        try:
            s.connect(("127.0.0.1", "x"))
        except TypeError:
            pass
        open(sys.argv[1], "rb").close()
    s.close()
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
logging.getLogger("sockguard").setLevel(logging.DEBUG)
logging.getLogger("sockguard").addHandler(logging.NullHandler())
work()
assert module.status()["fast_answers"] > 0
# A cached blocked decision refused in C (breaker off, no sink wants the WARNING), from threads and from a thread
# whose stack is plumbing alone (Python decides), with the caches cleared under it.
from sockguard import testing
from sockguard.caller import _kinds
guard.install(guard.state_from_settings(Settings(allow=[f"127.0.0.1:{PORT}"], allow_loopback=False,
                                                 breaker={"enabled": False})))
logging.getLogger("sockguard").setLevel(logging.CRITICAL)
def refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(3000):
        for bad in (("127.0.0.2", PORT), ("127.0.0.1", PORT + 1)):
            for call in (s.connect, lambda a: s.sendto(b"x", a)):
                try:
                    call(bad)
                except sockguard.EgressBlocked as exc:
                    assert str(exc) and exc.caller is not None
        if i % 500 == 0:
            testing.reset()
            _kinds.clear()
    s.close()
threads = [threading.Thread(target=refused) for _ in range(4)]
plumbing = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
threads += [threading.Thread(target=plumbing.connect, args=(("127.0.0.2", PORT),))]
threading.excepthook = lambda args: None
for t in threads: t.start()
for t in threads: t.join()
assert module.status()["fast_refusals"] > 0, module.status()
print("OK", module.status()["fast_answers"], module.status()["fast_refusals"])
"""


def test_the_extension_under_address_and_undefined_behaviour_sanitizers(tmp_path: Path) -> None:
    assert_clean_under_sanitizers(SANITIZED_CHILD, tmp_path)
