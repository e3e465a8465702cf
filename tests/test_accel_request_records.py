"""The accelerator's request record and plain end (``_accel.request_new`` / ``request_end``, native/sg_accel.c) against
the Python they stand in for (sockguard/http/events.py: ``_new_request`` and ``end``).

* ``request_new`` makes the same Request as Python: same class, same fields, the caller ``find_caller(depth)`` names
  from the same frame, the correlation id of the current context, clocks read in the same order.
* ``request_end`` writes, for the common case, the very bytes Python writes for the same ts and duration, once;
  for every case it leaves to Python (a redirect, a later hop, an odd status or peer, a rule or line text not
  cached yet, another sink, the file's check due, a replaced ``_write``, no descriptor) it returns False having
  done nothing, and ``end`` writes the line in Python.
* A failing write and a short write reach ``LogFile._failed`` / ``_torn`` with what Python would give them; a signal
  handler's exception during a blocked write propagates, and one that returns lets the write finish.
* Four threads ending requests at once write whole lines, each once.
* Both run under AddressSanitizer and UndefinedBehaviorSanitizer, in a child.

Nothing here opens a network connection: the records are made and ended directly.
"""

from __future__ import annotations

import contextvars
import fcntl
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sockguard import guard, logfile
from sockguard.config import Settings
from sockguard.events import correlation_id
from sockguard.http import events
from tests.accel_support import assert_clean_under_sanitizers

try:
    from sockguard import _accel
except ImportError:  # not built here
    _accel = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(
    _accel is None or events._request_end is None, reason="the accelerator is off or not built in this run"
)

PEER = ("198.51.100.10", 80)  # an address in a record; nothing is sent anywhere
FIXED = ("http.client", "GET", "http", "api.test", 80, "/v1/orders", None)


@pytest.fixture(autouse=True)
def _fresh_logging_memo() -> Iterator[None]:
    """A case that sets the sockguard logger's ``level`` directly leaves isEnabledFor's memo (``_cache``, which
    Sinks reads as its ``_levels``) saying DEBUG is shown: cleared after each test, as setLevel would."""
    yield
    logging.getLogger("sockguard").manager._clear_cache()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Any]:
    settings = Settings(allow=[PEER[0], "api.test"], allow_loopback=False, log=str(tmp_path / "log.jsonl"))
    made = guard.state_from_settings(settings)
    made.sinks._file.start()
    events._last_rule[0] = (None, None, None, None)
    yield made
    made.sinks.close()


def _lines(state: Any) -> list[bytes]:
    return Path(state.sinks._file.path).read_bytes().splitlines(keepends=True)


def _python_end(monkeypatch: pytest.MonkeyPatch, record: Any, status: Any = 200, **kwargs: Any) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(events, "_request_end", None)
        events.end(record, status, **kwargs)


def _record(state: Any, peer: Any = PEER, fixed: Any = FIXED, **fields: Any) -> Any:
    record = _accel.request_new(state, 10, fixed, 1)
    record.peer = peer
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def _warm(state: Any, monkeypatch: pytest.MonkeyPatch, fixed: Any = FIXED) -> None:
    """Requests ended in Python until the rule and the line's text are cached, as after the first requests (the
    very first caller search of a module is Python's, whose text is another str object than the C search's)."""
    for _ in range(2):
        _python_end(monkeypatch, _record(state, fixed=fixed))


def _expected_line(state: Any, line: bytes) -> bytes:
    """What Python writes for the ts and duration in ``line``."""
    event = json.loads(line)
    us, duration_us = round(event["ts"] * 1e6), round(event["duration_ms"] * 1000)
    last = state.sinks._last_request
    head, tail = last[7]
    from sockguard import sinks

    return f'{{"event":"request","ts":{sinks._ts_text(us)}{head}{duration_us / 1000!r}{tail}'.encode()


# -- request_new ---------------------------------------------------------------------------------------------------


def test_request_new_makes_the_record_python_makes(state: Any) -> None:
    def app() -> tuple[Any, Any, int, int, int, int]:
        before_us, before = time.time_ns() // 1000, time.perf_counter_ns()
        in_c, in_python = _accel.request_new(state, 10, FIXED, 1), events._new_request(state, 10, FIXED, 1)
        return in_c, in_python, before_us, before, time.time_ns() // 1000, time.perf_counter_ns()

    context = contextvars.copy_context()
    context.run(correlation_id.set, "req-42")
    in_c, in_python, before_us, before, after_us, after = context.run(app)
    assert type(in_c) is events.Request
    for name in ("state", "level", "fixed", "caller", "cid", "hop", "previous", "outer", "peer"):
        assert getattr(in_c, name) == getattr(in_python, name), name
    assert in_c.caller == f"{__name__}:app:{app.__code__.co_firstlineno + 2}"
    assert in_c.cid == "req-42" and in_c.hop == 0 and in_c.outer is False and in_c.peer is None
    assert before_us <= in_c.us <= after_us and before <= in_c.start <= after
    assert in_c.ts == in_c.us / 1e6 and in_c.url == "http://api.test/v1/orders"


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 5, 40])
def test_request_new_counts_depth_as_find_caller(state: Any, depth: int) -> None:
    def outer() -> tuple[Any, Any]:
        return inner()

    def inner() -> tuple[Any, Any]:
        return _accel.request_new(state, 10, FIXED, depth).caller, events._new_request(state, 10, FIXED, depth).caller

    in_c, in_python = outer()
    assert in_c == in_python


def test_request_new_rejects_bad_arguments(state: Any) -> None:
    with pytest.raises(TypeError):
        _accel.request_new(state, 10, FIXED)
    with pytest.raises(TypeError):
        _accel.request_new(state, 10, FIXED, "1")
    with pytest.raises(RuntimeError):
        _accel.request_setup(events.Request, type(state), correlation_id, [None], [0], vars(logfile), os.write)


# -- request_end: the common case ----------------------------------------------------------------------------------


def test_request_end_writes_the_line_python_writes(state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _warm(state, monkeypatch)
    record = _record(state)
    assert _accel.request_end(record, 200) is True
    lines = _lines(state)
    assert len(lines) == 3
    assert lines[2] == _expected_line(state, lines[2])
    first, second = json.loads(lines[1]), json.loads(lines[2])
    for event in (first, second):
        del event["ts"], event["duration_ms"]
    assert first == second and second["caller"] == record.caller and second["rule"] == PEER[0]


def test_end_uses_the_c_path_for_repeats(state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[Any] = []
    monkeypatch.setattr(events, "_request_end", lambda *args: answers.append(_accel.request_end(*args)) or answers[-1])
    monkeypatch.setattr(state.sinks._file, "_due", logfile._NEVER)  # (the once-a-second check: not due meanwhile)
    # The first ones cache the rule and the line's text; the caller's text is made anew once the interpreter has
    # specialised the calling code (a specialised call leaves another instruction offset, so another cache entry).
    for _ in range(12):
        events.end(_record(state), 200)
    answers.clear()
    for _ in range(20):
        events.end(_record(state), 200)
    assert answers == [True] * 20
    assert len(_lines(state)) == 32


def test_no_file_means_nothing_written(state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _warm(state, monkeypatch)
    file = state.sinks._file
    monkeypatch.setattr(state.sinks, "_file", None)
    assert _accel.request_end(_record(state), 200) is True
    monkeypatch.setattr(state.sinks, "_file", file)
    assert len(_lines(state)) == 2  # the two warm-up lines


# -- request_end: everything it leaves to Python --------------------------------------------------------------------


class Status(int):
    pass


def _declines(state: Any, monkeypatch: pytest.MonkeyPatch, case: str) -> tuple[Any, Any]:
    """Set up ``case``; returns (record, status)."""
    record, status = _record(state), 200
    if case == "redirect":
        status = 302
    elif case == "later hop":
        record.hop, record.previous = 1, "http://api.test/"
    elif case == "int subclass status":
        status = Status(200)
    elif case == "bool status":
        status = True
    elif case == "odd peer":
        record.peer = [PEER[0], 80]
    elif case == "peer port not an int":
        record.peer = (PEER[0], "80")
    elif case == "rule not cached":
        events._last_rule[0] = (None, None, None, None)
    elif case == "other status":
        status = 503
    elif case == "observer":
        monkeypatch.setattr(state.sinks, "observer", lambda event: None)
    elif case == "logger shows debug":
        logger = logging.getLogger("sockguard")
        _restore_level.append((logger, logger.level))  # (set back by setLevel: logging's caches cleared both ways)
        logger.setLevel(logging.DEBUG)
    elif case == "check due":
        monkeypatch.setattr(state.sinks._file, "_due", 0)
    elif case == "write replaced":
        monkeypatch.setattr(logfile, "_write", lambda fd, data: os.write(fd, data))
    elif case == "no descriptor":
        monkeypatch.setattr(state.sinks._file, "_fd", None)
    elif case == "subclass record":

        class Record(events.Request):
            __slots__ = ()

        copy = Record(state, 10, FIXED, record.caller)
        copy.peer = PEER
        record = copy
    else:
        raise AssertionError(case)
    return record, status


_restore_level: list[tuple[logging.Logger, int]] = []


@pytest.fixture(autouse=True)
def _sockguard_logger_level_restored() -> Iterator[None]:
    yield
    while _restore_level:
        logger, level = _restore_level.pop()
        logger.setLevel(level)


CASES = [
    "redirect",
    "later hop",
    "int subclass status",
    "bool status",
    "odd peer",
    "peer port not an int",
    "rule not cached",
    "other status",
    "observer",
    "logger shows debug",
    "check due",
    "write replaced",
    "no descriptor",
    "subclass record",
]


@pytest.mark.parametrize("case", CASES)
def test_request_end_leaves_the_rest_to_python(state: Any, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    _warm(state, monkeypatch)
    before = _lines(state)
    record, status = _declines(state, monkeypatch, case)
    assert _accel.request_end(record, status) is False
    assert _lines(state) == before  # nothing done


@pytest.mark.parametrize("case", [c for c in CASES if c not in ("no descriptor", "observer")])
def test_end_writes_those_lines_in_python(state: Any, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    _warm(state, monkeypatch)
    record, status = _declines(state, monkeypatch, case)
    events.end(record, status, location="http://api.test/next" if status == 302 else None)
    lines = _lines(state)
    assert len(lines) == 3
    event = json.loads(lines[2])
    assert event["status"] == status and event["path"] == "/v1/orders" and event["caller"] == record.caller


# -- request_end: failures, short writes, signals --------------------------------------------------------------------


def _recorder(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(logfile.LogFile, name, lambda self, *args: calls.append(args))
    return calls


def test_a_failed_write_reaches_failed_as_in_python(state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _warm(state, monkeypatch)
    failed = _recorder(monkeypatch, "_failed")
    reader, writer = os.pipe()
    os.close(reader)  # EPIPE (SIGPIPE is ignored by Python)
    monkeypatch.setattr(state.sinks._file, "_fd", writer)
    try:
        assert _accel.request_end(_record(state), 200) is True
        _python_end(monkeypatch, _record(state))
    finally:
        os.close(writer)
    assert len(failed) == 2
    (c_error, c_now), (py_error, py_now) = failed
    assert type(c_error) is type(py_error) is BrokenPipeError and c_error.errno == py_error.errno
    assert str(c_error) == str(py_error) and isinstance(c_now, int) and c_now <= py_now


def test_a_short_write_reaches_torn_as_in_python(state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    long_fixed = (*FIXED[:5], "/" + "p" * 20000, None)
    _warm(state, monkeypatch, long_fixed)
    torn = _recorder(monkeypatch, "_torn")
    for in_python in (False, True):
        reader, writer = os.pipe()
        fcntl.fcntl(writer, fcntl.F_SETFL, fcntl.fcntl(writer, fcntl.F_GETFL) | os.O_NONBLOCK)
        try:
            size = fcntl.fcntl(writer, 1032)  # F_GETPIPE_SZ
            os.write(writer, b"x" * (size - 4096))  # one page left: a 20 kB line is written in part
            monkeypatch.setattr(state.sinks._file, "_fd", writer)
            record = _record(state, fixed=long_fixed)
            if in_python:
                _python_end(monkeypatch, record)
            else:
                assert _accel.request_end(record, 200) is True
        finally:
            os.close(reader)
            os.close(writer)
    assert len(torn) == 2
    (c_fd, c_line, c_written, _), (_, py_line, py_written, _) = torn
    assert c_fd == writer and c_written == py_written == 4096 and len(c_line) > 20000
    assert c_line == _expected_line(state, c_line) and json.loads(c_line)["path"] == json.loads(py_line)["path"]


def test_a_signal_during_a_blocked_write(state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler that raises ends the request's end with its exception (as os.write does); one that makes room
    lets the interrupted write finish."""
    _warm(state, monkeypatch)
    reader, writer = os.pipe()
    size = fcntl.fcntl(writer, 1032)
    fcntl.fcntl(writer, fcntl.F_SETFL, fcntl.fcntl(writer, fcntl.F_GETFL) | os.O_NONBLOCK)
    os.write(writer, b"x" * size)  # full
    fcntl.fcntl(writer, fcntl.F_SETFL, fcntl.fcntl(writer, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    monkeypatch.setattr(state.sinks._file, "_fd", writer)

    class Interrupted(Exception):
        pass

    def raising(signum: int, frame: Any) -> None:
        raise Interrupted

    def draining(signum: int, frame: Any) -> None:
        os.read(reader, size)

    previous = signal.getsignal(signal.SIGALRM)
    try:
        for end in (lambda: _accel.request_end(_record(state), 200), lambda: _python_end(monkeypatch, _record(state))):
            signal.signal(signal.SIGALRM, raising)
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(Interrupted):
                end()
        signal.signal(signal.SIGALRM, draining)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        assert _accel.request_end(_record(state), 200) is True
        line = os.read(reader, 65536)
        assert json.loads(line)["event"] == "request" and line.endswith(b"\n")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.close(reader)
        os.close(writer)


def test_threads_write_whole_lines_once(state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _warm(state, monkeypatch)

    def work() -> None:
        for _ in range(500):
            events.end(_record(state), 200)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = _lines(state)
    assert len(lines) == 2002
    assert all(json.loads(line)["status"] == 200 for line in lines)


# -- request_end: classes and code it must not stand in for (adversarial review, issue 15) ------------------------


def _subclass_sinks(state: Any) -> list[Any]:
    """Make the State's sinks an instance of a Sinks subclass that records its own write_request_ok calls."""
    calls: list[Any] = []
    base = type(state.sinks)

    class Recording(base):  # type: ignore[misc,valid-type]
        __slots__ = ()

        def write_request_ok(self, *args: Any) -> None:
            calls.append(args)
            super().write_request_ok(*args)

    state.sinks.__class__ = Recording
    return calls


def test_a_sinks_subclass_writes_its_own_way(state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Sinks subclass's write_request_ok is what Python calls for every plain request: C must not skip it."""
    _warm(state, monkeypatch)
    calls = _subclass_sinks(state)
    try:
        assert _accel.request_end(_record(state), 200) is False
        for _ in range(3):
            events.end(_record(state), 200)
    finally:
        state.sinks.__class__ = type(state.sinks).__mro__[1]
    assert len(calls) == 3 and len(_lines(state)) == 5


@pytest.mark.parametrize("method", ["write_request_ok", "beyond_file", "_shown"])
def test_a_replaced_sinks_method_is_called(state: Any, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """A monkeypatched method of Sinks on the path (a test's spy, an application's tweak) runs as without C; once it
    is put back, C takes over again."""
    _warm(state, monkeypatch)
    assert _accel.request_end(_record(state), 200) is True  # (C has seen the class as it is)
    calls: list[Any] = []
    cls = type(state.sinks)
    original = vars(cls)[method]
    with monkeypatch.context() as patch:
        patch.setattr(cls, method, lambda self, *args: calls.append(args) or original(self, *args))
        assert _accel.request_end(_record(state), 200) is False
        events.end(_record(state), 200)
        assert len(calls) == 1
    assert _accel.request_end(_record(state), 200) is True
    assert len(_lines(state)) == 5


class _StandIn:
    """A file stand-in with LogFile's attributes (a test double): its write is what Python calls."""

    def __init__(self, real: Any) -> None:
        self._checked, self._due, self._fd, self.lines = real._checked, real._due, real._fd, []

    def write(self, data: bytes, now: int) -> None:
        self.lines.append(data)


def test_a_logfile_stand_in_subclass_or_replaced_write_is_called(state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _warm(state, monkeypatch)
    real = state.sinks._file
    stand_in = _StandIn(real)
    monkeypatch.setattr(state.sinks, "_file", stand_in)
    assert _accel.request_end(_record(state), 200) is False
    events.end(_record(state), 200)
    monkeypatch.setattr(state.sinks, "_file", real)
    assert len(stand_in.lines) == 1 and len(_lines(state)) == 2  # nothing reached the real file's descriptor

    class Counting(logfile.LogFile):
        __slots__ = ()
        writes = 0

        def write(self, data: bytes, now: int) -> None:
            type(self).writes += 1
            super().write(data, now)

    real.__class__ = Counting
    try:
        assert _accel.request_end(_record(state), 200) is False
        events.end(_record(state), 200)
        assert Counting.writes == 1
    finally:
        real.__class__ = logfile.LogFile
    assert _accel.request_end(_record(state), 200) is True  # (C has seen the class as it is)
    written: list[bytes] = []
    original = logfile.LogFile.write
    with monkeypatch.context() as patch:
        patch.setattr(
            logfile.LogFile, "write", lambda self, data, now: written.append(data) or original(self, data, now)
        )
        assert _accel.request_end(_record(state), 200) is False
        events.end(_record(state), 200)
    assert len(written) == 1 and len(_lines(state)) == 5
    assert _accel.request_end(_record(state), 200) is True  # (LogFile as it was: C again)


def test_a_logger_level_property_is_read_as_often_as_in_python(state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A logger class whose ``level`` is a property (logging.setLoggerClass): C must not run it and then decline, so
    Python runs it again; the property runs as many times with and without the accelerator."""
    _warm(state, monkeypatch)
    reads: list[int] = []
    logger = logging.getLogger("sockguard")

    class Spying(logging.Logger):
        @property  # type: ignore[override]
        def level(self) -> int:
            reads.append(1)
            return 0

        @level.setter
        def level(self, value: int) -> None:
            pass

    monkeypatch.setattr(logger, "__class__", Spying)
    monkeypatch.setattr(state.sinks, "_logger", logger)
    counts = []
    for accelerated in (True, False):
        reads.clear()
        with monkeypatch.context() as patch:
            if not accelerated:
                patch.setattr(events, "_request_end", None)
            events.end(_record(state), 200)
        counts.append(len(reads))
    assert counts[0] == counts[1] >= 1
    assert _accel.request_end(_record(state), 200) is False


def test_a_record_with_unset_or_odd_fields_is_left_to_python(state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleted slots (NULL in C), a ts far outside any clock's range (LogFile.write's ``now`` would overflow in C)."""
    _warm(state, monkeypatch)
    for name in ("us", "start", "state", "level", "fixed", "caller", "cid", "hop", "peer"):
        record = _record(state)
        delattr(record, name)
        assert _accel.request_end(record, 200) is False, name
    for us in (2**62, -(2**62), 0):
        assert _accel.request_end(_record(state, us=us), 200) is False
    file = state.sinks._file
    with monkeypatch.context() as patch:
        patch.delattr(state.sinks, "_file")
        assert _accel.request_end(_record(state), 200) is False
    assert state.sinks._file is file and len(_lines(state)) == 2


def test_a_replaced_clock_is_called_as_in_python(state: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frozen clock in events' ``_time_ns`` / ``_perf_counter_ns`` (freezegun replaces module attributes that are
    time's functions): the record and the line carry its times, as without the accelerator, and never a mix of
    real start and frozen end (a duration of decades)."""
    _warm(state, monkeypatch)
    assert _accel.request_end(_record(state), 200) is True
    frozen = 1_700_000_000_123_456_000
    with monkeypatch.context() as patch:
        patch.setattr(events, "_time_ns", lambda: frozen)
        patch.setattr(events, "_perf_counter_ns", lambda: 42)
        record = _record(state)
        assert (record.us, record.start) == (frozen // 1000, 42)
        assert record.caller == _record(state).caller and type(record) is events.Request
        assert _accel.request_end(record, 200) is False
        events.end(record, 200)
    event = json.loads(_lines(state)[-1])
    assert event["ts"] == frozen // 1000 / 1e6 and event["duration_ms"] == 0.0
    events.end(_record(state), 200)  # (the file's check is due: the frozen line's "now" was years ago)
    record = _record(state)
    assert record.us > frozen // 1000
    assert _accel.request_end(record, 200) is True  # (the real clocks again: C again)


# -- under the sanitizers ------------------------------------------------------------------------------------------

SANITIZED_CHILD = r"""
import importlib.util, io, json, os, sys, tempfile, threading
spec = importlib.util.spec_from_file_location("sockguard._accel", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["sockguard._accel"] = module
from sockguard import guard
from sockguard.config import Settings
from sockguard.http import events
assert events.new_request is module.request_new and events._request_end is module.request_end
path = os.path.join(tempfile.mkdtemp(), "log.jsonl")
state = guard.state_from_settings(Settings(allow=["198.51.100.10"], allow_loopback=False, log=path))
state.sinks._file.start()  # (what activation does: open before the first line)
fixed = ("http.client", "GET", "http", "api.test", 80, "/v1", None)
def work():
    for i in range(2000):
        record = events.new_request(state, 10, fixed, 1 + i % 4)
        record.peer = ("198.51.100.10", 80) if i % 7 else None
        events.end(record, (200, 302, 503)[i % 3], location="http://api.test/x" if i % 3 == 1 else None)
threads = [threading.Thread(target=work) for _ in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
with open(path, "rb") as f:
    assert sum(1 for line in f if json.loads(line)["event"] == "request") == 6000
# Adversarial records: deleted fields, a ts whose LogFile "now" would overflow, and code run by a sys.modules key
# that collides with "logging" while request_end looks it up, dropping the record's State, its Sinks and the rule:
# request_end must hold what it uses (run with PYTHONMALLOC=malloc, so ASan sees a freed object).
import gc
for name in ("us", "start", "state", "level", "fixed", "caller", "cid", "hop", "peer"):
    record = events.new_request(state, 10, fixed, 1)
    delattr(record, name)
    assert module.request_end(record, 200) is False
for us in (2**62, 2**63 - 1, -(2**63)):
    record = events.new_request(state, 10, fixed, 1)
    record.peer, record.us = ("198.51.100.10", 80), us
    assert module.request_end(record, 200) is False
for start in (-(2**63), -(2**62), 2**63 - 1):  # (now - start would overflow)
    record = events.new_request(state, 10, fixed, 1)
    record.peer, record.start = ("198.51.100.10", 80), start
    assert module.request_end(record, 200) is False
class Collides:
    armed = None
    def __hash__(self):
        return hash("logging")
    def __eq__(self, other):
        victim, Collides.armed = Collides.armed, None
        if victim is not None:
            victim.state = None
            events._last_rule[0] = (None, None, None, None)
            gc.collect()
        return False
import logging
def made(state):
    record = events.new_request(state, 10, fixed, 1)
    record.peer = ("198.51.100.10", 80)
    return record
done = []
for with_logging, with_file in [(False, True), (True, True), (True, False)] * 7:
    own = guard.state_from_settings(Settings(allow=["198.51.100.10"], allow_loopback=False, log=path))
    own.sinks._file.start()
    own.sinks.logger()
    for _ in range(3):
        events.end(made(own), 200)
    record = made(own)
    record.caller = own.sinks._last_request[4]  # (the line's text is cached for this very caller object)
    if not with_file:  # (then nothing request_end holds keeps the Sinks alive)
        own.sinks._file.close()
        own.sinks._file = None
    own = None
    key = Collides()
    logging_module = sys.modules.pop("logging", None)  # (so the colliding key is probed first)
    sys.modules[key] = None
    if with_logging and logging_module is not None:
        sys.modules["logging"] = logging_module  # (then the sinks' logger is read after the key's __eq__ ran)
    try:
        Collides.armed = record
        done.append(module.request_end(record, 200))
        assert Collides.armed is None  # (the key's __eq__ ran inside request_end)
    finally:
        del sys.modules[key]
        if logging_module is not None:
            sys.modules["logging"] = logging_module
assert done == [True] * 21, done  # (written: the State and Sinks dropped meanwhile were not needed any more)
print("OK")
"""


def test_record_and_end_under_address_and_undefined_behaviour_sanitizers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONMALLOC", "malloc")  # (objects from malloc: ASan sees a use after free of one)
    assert_clean_under_sanitizers(SANITIZED_CHILD, tmp_path)
