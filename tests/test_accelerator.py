"""The C accelerator (native/sg_accel.c, issue 16) against the Python floor it stands in for.

* Differential: for every address shape (plain tuples, subclasses, bytes and str-subclass hosts, int-subclass and
  ``__index__`` ports, 3- and 4-tuples, other families) and every State shape (breaker on/off, monitor mode, a
  decision log, logging at DEBUG, a cold cache), whenever the C hook would answer a ``socket.connect``/``sendto``
  itself, the Python handler run on the same event raises nothing, emits nothing and changes no cache or breaker
  record: the fast path only ever skips work the handler would have found nothing to do for. And it does answer
  the plain, cached, allowed case (the test is not vacuous).
* The floor cannot be switched off from Python: the hook installs once, the fast path is set up once, and the
  module has no setting that changes either.
* The extension built with AddressSanitizer and UndefinedBehaviorSanitizer runs the enforcement paths in a child.

The whole suite's enforcement tests also run a second time without the accelerator (``scripts/test``), with the
same outcomes expected.
"""

from __future__ import annotations

import collections
import copy
import enum
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockguard import EgressBlocked, floor, guard
from sockguard.accelerator import accelerator
from sockguard.config import Settings
from tests.accel_support import build_sanitized_extension, run_sanitized

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
    status = fast.status()
    assert status["hook"] and status["fast_path"]
    with pytest.raises(RuntimeError):
        fast.install({}, ["socket.connect"])
    with pytest.raises(RuntimeError):
        fast.fast_path(*[None] * 8)
    settable = {name for name in vars(fast) if not name.startswith("__")}
    # (caller_setup, find_caller and request_line serve request events' text: no decision reads them)
    request_events = {"caller_setup", "find_caller", "request_line"}
    assert settable == {"install", "fast_path", "status", "answers", "wrap", "Wrapper"} - {"Wrapper"} | request_events


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
print("OK", module.status()["fast_answers"])
"""


def test_the_extension_under_address_and_undefined_behaviour_sanitizers(tmp_path: Path) -> None:
    extension = build_sanitized_extension(tmp_path)
    result = run_sanitized(SANITIZED_CHILD, extension)
    assert result.returncode == 0 and result.stdout.startswith("OK"), result.stdout + result.stderr[-4000:]
    assert "runtime error" not in result.stderr and "AddressSanitizer" not in result.stderr, result.stderr[-4000:]
