"""Asynchronous exceptions, the stderr writer and transient load failures (issue 18, items 4-6).

An exception a signal handler raises (Celery's soft time limit, a SIGALRM timeout, KeyboardInterrupt) can land
at any call return inside the guard. The sweeps below raise one at *every* such point of a blocked connect, of
an allowed connect written to the decision log and of the first-use load (tests/faultinject.py): each time it
must reach the application unchanged, and nothing may be left behind (a lock held, a flag set, a failure
cached): another thread's blocked connect still finishes, and the next call is decided afresh.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import sockguard
from sockguard import _hook, active, console, guard, logfile
from sockguard.console import CONSOLE
from sockguard.events import emitting
from sockguard.paths import sitecustomize_dir
from tests.faultinject import Point, sweep
from tests.loopback import CountingTCPServer, CountingUDPServer

PY = sys.executable
STRICT = {"allow_loopback": False}


@pytest.fixture
def allowed():
    with CountingUDPServer("127.0.0.2") as server:
        yield server


@pytest.fixture
def blocked():
    with CountingUDPServer("127.0.0.3") as server:
        yield server


@contextmanager
def without_logging_handlers() -> Iterator[None]:
    """The application configured no logging. (pytest's logging plugin puts its capture handler on the root
    logger for each test's call phase: it is taken off inside the test.)"""
    saved = logging.root.handlers[:], logging.getLogger("sockguard").handlers[:]
    logging.root.handlers[:] = []
    logging.getLogger("sockguard").handlers[:] = []
    try:
        yield
    finally:
        logging.root.handlers[:], logging.getLogger("sockguard").handlers[:] = saved


def connect(server: CountingUDPServer) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect((server.host, server.port))
    finally:
        sock.close()


def blocked_in_another_thread(server: CountingUDPServer, point: Point) -> None:
    """A blocked connect in a fresh thread finishes (no lock left held by the interrupted one)."""
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            connect(server)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), f"another thread's blocked connect hangs after an exception at {point}"
    assert len(outcome) == 1 and isinstance(outcome[0], sockguard.EgressBlocked), (point, outcome)


@pytest.mark.parametrize("console", ["prints every block", "holds repeats back"])
def test_an_exception_at_any_point_of_a_block_propagates_and_leaves_nothing_broken(
    allowed, blocked, capsys, monkeypatch, console
):
    if console == "prints every block":  # the console writer's own write is swept too
        monkeypatch.setattr(CONSOLE, "interval", 0.0)

    def after(point: Point) -> None:
        assert not emitting(), f"the re-entrancy flag stayed set after an exception at {point}"
        blocked_in_another_thread(blocked, point)
        with pytest.raises(sockguard.EgressBlocked):  # decided again, still blocked
            connect(blocked)
        connect(allowed)

    with without_logging_handlers(), sockguard.guarded(allow=["127.0.0.2"], **STRICT):
        with pytest.raises(sockguard.EgressBlocked):
            connect(blocked)  # warm: message cache, console entry
        points = sweep(lambda: connect(blocked), after)
    assert points > 50  # the sweep reached the refusal, the event and the console writer
    assert blocked.settle() == 0
    assert capsys.readouterr().err.count("sockguard blocked") >= 1


def test_an_exception_at_any_point_of_a_logged_allow_propagates_and_leaves_whole_lines(allowed, tmp_path, monkeypatch):
    monkeypatch.setattr(logfile, "CHECK_INTERVAL_NS", 0)  # the rotation check on every line: its points too
    path = tmp_path / "decisions.jsonl"
    rotated: list[Path] = []

    def after(point: Point) -> None:
        connect(allowed)
        if len(rotated) < 20 and int(time.monotonic() * 1000) % 5 == 0:  # now and then a rotation: reopen points
            rotated.append(tmp_path / f"decisions.jsonl.{len(rotated)}")
            os.rename(path, rotated[-1])

    with sockguard.guarded(allow=["127.0.0.2"], log=str(path), **STRICT) as state:
        connect(allowed)
        points = sweep(lambda: connect(allowed), after)
        state.sinks.close()
    assert points > 20
    for file in [*rotated, path]:
        data = file.read_bytes()
        assert data.endswith(b"\n")
        for line in data.splitlines():
            assert json.loads(line)["event"] in ("decision", "log-dropped")


def test_an_exception_at_any_point_of_the_first_use_load_is_not_cached(allowed, blocked, tmp_path, monkeypatch):
    config = tmp_path / "sockguard.toml"
    config.write_text('allow = ["127.0.0.2"]\nallow_loopback = false\n[breaker]\nthreshold = 1000\n')
    monkeypatch.setenv("SOCKGUARD_CONFIG", str(config))
    monkeypatch.setenv("SOCKGUARD_LOG", str(tmp_path / "decisions.jsonl"))
    for var in [v for v in os.environ if v.startswith("SOCKGUARD_") and v not in ("SOCKGUARD_CONFIG", "SOCKGUARD_LOG")]:
        monkeypatch.delenv(var)

    def lazy() -> None:  # as sitecustomize leaves a process (_hook.activate): nothing loaded until the first use
        guard.install(guard.off())
        active.in_force = None
        _hook.set_lazy_handlers()
        _hook.install_audit_hook()
        _hook.watch_imports()

    def after(point: Point) -> None:
        state = active.in_force
        assert state is None or state.error is None, f"a failure was cached after an exception at {point}"
        connect(allowed)  # loads again if needed: allowed, not config-error
        with pytest.raises(sockguard.EgressBlocked) as info:
            connect(blocked)
        assert info.value.reason == "raw-ip", point

    previous = guard.install(guard.off())
    try:
        points = sweep(lambda: connect(allowed), after, prepare=lazy)
    finally:
        guard.restore(previous)
    assert points > 100  # the sweep went through reading and compiling the configuration
    assert blocked.settle() == 0


STORM = textwrap.dedent(
    """
    import json, signal, socket, sys, threading, time
    import sockguard

    class Injected(Exception):
        pass

    armed = [False]

    def alarm(signum, frame):  # raises only while a connect is under way, never into this script's own loop
        if armed[0]:
            raise Injected()

    def connect():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.connect(("127.0.0.3", int(sys.argv[1])))
        finally:
            sock.close()

    stop = time.monotonic() + 1.5
    progress = []

    def other():
        while time.monotonic() < stop:
            try:
                connect()
            except sockguard.EgressBlocked:
                progress.append(1)

    sockguard.install(allow_loopback=False, from_environment=False)
    thread = threading.Thread(target=other, daemon=True)
    thread.start()
    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
    interrupted = blocked = 0
    while time.monotonic() < stop:
        try:
            armed[0] = True
            connect()
        except Injected:
            interrupted += 1
        except sockguard.EgressBlocked:
            blocked += 1
        finally:
            armed[0] = False
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    thread.join(10)
    print(json.dumps({"hung": thread.is_alive(), "interrupted": interrupted, "blocked": blocked,
                      "other": len(progress)}), flush=True)
    """
)


def test_a_real_signal_storm_never_hangs_another_threads_block(tmp_path, blocked):
    """Not deterministic (the sweeps above are): a SIGALRM every 0.5 ms raising into blocked connects in one
    thread, while another thread keeps connecting; in a child process, away from pytest's own hooks."""
    path = tmp_path / "storm.py"
    path.write_text(STORM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_")}
    result = subprocess.run([PY, str(path), str(blocked.port)], env=env, capture_output=True, text=True, timeout=120)
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["hung"] is False, result.stderr[-2000:]
    assert outcome["interrupted"] > 0 and outcome["blocked"] > 0 and outcome["other"] > 10, outcome
    assert blocked.settle() == 0


# -- the console writer instead of logging.lastResort -------------------------------------------------------------


def test_blocks_without_logging_config_bypass_last_resort_and_are_rate_limited(blocked, capsys, monkeypatch):
    handled: list[logging.LogRecord] = []
    monkeypatch.setattr(logging.lastResort, "handle", handled.append)  # (identity kept: still the stock one)
    with without_logging_handlers(), sockguard.guarded(**STRICT):
        for _ in range(200):
            with pytest.raises(sockguard.EgressBlocked):
                connect(blocked)
        err = capsys.readouterr().err
        assert err.count("sockguard blocked") == 1 and err.count("sockguard ALERT") <= 1
        later = time.monotonic() + CONSOLE.interval  # the interval has passed
        monkeypatch.setattr(console, "time", types.SimpleNamespace(monotonic=lambda: later))
        with pytest.raises(sockguard.EgressBlocked):
            connect(blocked)
    err = capsys.readouterr().err
    assert err.count("sockguard blocked") == 1 and "(repeated 199 more times in the last" in err
    assert handled == []  # never through lastResort (its lock is what a signal could leave held)
    assert blocked.settle() == 0


APP = textwrap.dedent(
    """
    import logging, socket, sys
    if sys.argv[1] == "configured":
        logging.basicConfig(format="APP %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(50):
        try:
            sock.connect(("127.0.0.3", 9))
        except OSError:
            pass
    """
)


def run_app(tmp_path: Path, *args: str, script: str = APP, **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "app.py"
    path.write_text(script)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_")}
    environ.update(PYTHONPATH=sitecustomize_dir(), SOCKGUARD_ALLOW_LOOPBACK="0", **env)
    return subprocess.run([PY, str(path), *args], env=environ, capture_output=True, text=True, timeout=60)


def test_held_back_blocks_are_counted_at_exit(tmp_path):
    result = run_app(tmp_path, "plain", SOCKGUARD_BREAKER="off")
    lines = [line for line in result.stderr.splitlines() if line.startswith("sockguard blocked")]
    assert len(lines) == 2, result.stderr  # the first block, and at exit the count of the 49 held back
    assert lines[1].endswith("s, not shown)") and "(repeated 49 more times in the last" in lines[1]


def test_an_application_that_configured_logging_gets_every_block_through_its_handler(tmp_path):
    result = run_app(tmp_path, "configured", SOCKGUARD_BREAKER="off")
    assert result.stderr.count("APP WARNING sockguard: sockguard blocked") == 50, result.stderr


# -- transient failures of the first-use load -----------------------------------------------------------------------

SIGNAL_DURING_LOAD = textwrap.dedent(
    """
    import json, signal, socket, sys

    class SoftTimeLimitExceeded(Exception):  # what Celery raises from its SIGUSR1 handler
        pass

    def handler(signum, frame):
        raise SoftTimeLimitExceeded()

    signal.signal(signal.SIGUSR1, handler)

    def deliver(frame, event, arg):  # the signal arrives while the configuration is being read
        code = frame.f_code
        if event == "call" and code.co_name == "settings_from_source" and "sockguard" in code.co_filename:
            sys.setprofile(None)
            signal.raise_signal(signal.SIGUSR1)

    sys.setprofile(deliver)
    results = []
    for host, port in [(sys.argv[1], int(sys.argv[2])), (sys.argv[1], int(sys.argv[2])), ("127.0.0.3", 9)]:
        try:
            socket.create_connection((host, port), timeout=2).close()
            results.append("connected")
        except SoftTimeLimitExceeded:
            results.append("SoftTimeLimitExceeded")
        except OSError as exc:
            results.append(getattr(exc, "reason", repr(exc)))
    print(json.dumps(results))
    """
)


@pytest.fixture
def tcp_allowed():
    with CountingTCPServer("127.0.0.2") as server:
        yield server


def test_an_exception_from_a_signal_handler_during_the_load_reaches_the_app_and_is_not_cached(tmp_path, tcp_allowed):
    result = run_app(
        tmp_path, tcp_allowed.host, str(tcp_allowed.port), script=SIGNAL_DURING_LOAD, SOCKGUARD_ALLOW="127.0.0.2"
    )
    assert json.loads(result.stdout) == ["SoftTimeLimitExceeded", "connected", "raw-ip"], result.stderr
    assert "loading the configuration was interrupted by SoftTimeLimitExceeded()" in result.stderr
    assert "nothing was cached" in result.stderr and "config-error" not in result.stderr
    assert tcp_allowed.settle(1) == 1


NO_FILE_DESCRIPTORS = textwrap.dedent(
    """
    import json, os, resource, socket, sys
    target = (sys.argv[1], int(sys.argv[2]))
    if sys.argv[3] == "loader-imported":
        import sockguard.guard  # the loader is in memory; reading the configuration needs descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    first, second = socket.socket(), socket.socket()
    spare = []
    try:
        while True:
            spare.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    results = []
    try:
        first.connect(target)  # the first socket use loads the configuration: no descriptor left to read it
        results.append("connected")
    except OSError as exc:
        results.append([getattr(exc, "reason", None), str(exc)])
    for fd in spare:
        os.close(fd)
    second.connect(target)  # loads again: allowed
    results.append("connected")
    print(json.dumps(results))
    """
)


@pytest.mark.parametrize("stage", ["loader-imported", "nothing-imported"])
def test_running_out_of_file_descriptors_at_the_first_socket_use_is_not_cached(tmp_path, tcp_allowed, stage):
    config = tmp_path / "sockguard.toml"
    config.write_text('allow = ["127.0.0.2"]\n')
    result = run_app(
        tmp_path, tcp_allowed.host, str(tcp_allowed.port), stage, script=NO_FILE_DESCRIPTORS,
        SOCKGUARD_CONFIG=str(config),
    )  # fmt: skip
    first, second = json.loads(result.stdout)
    if stage == "loader-imported":  # refused by the guard, saying why
        assert first[0] == "config-unavailable", result.stderr
        assert "the configuration could not be loaded" in first[1] and "the next attempt loads it again" in first[1]
        assert "could not load the configuration" in result.stderr and "not a configuration error" in result.stderr
    else:  # not even the loader could be read: the OSError itself, from the connect that needed it
        assert first == [None, f"[Errno 24] Too many open files: {first[1].split(': ', 1)[1]}"], result.stderr
        assert "sockguard" in first[1]
    assert second == "connected"  # nothing was cached: the next socket use loaded the configuration
    assert tcp_allowed.settle(1) == 1


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_exception_at_any_point_of_a_logged_http_request_propagates(tmp_path):
    """The request-event path (sockguard/http: the http.client hook, the event, the file) swept the same way."""
    server = ThreadingHTTPServer(("127.0.0.2", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.2:{server.server_address[1]}/orders"
    path = tmp_path / "decisions.jsonl"

    def request() -> None:
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == b"ok"

    def after(point: Point) -> None:
        assert not emitting(), f"the re-entrancy flag stayed set after an exception at {point}"
        request()

    try:
        with sockguard.guarded(allow=["127.0.0.2"], log=str(path), **STRICT) as state:
            request()
            points = sweep(request, after)
            state.sinks.close()
    finally:
        server.shutdown()
        server.server_close()
    assert points > 50
    kinds = {json.loads(line)["event"] for line in path.read_bytes().splitlines()}  # every line whole
    assert "request" in kinds
