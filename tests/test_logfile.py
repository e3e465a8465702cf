"""The JSON-lines decision log under faults (issue 18): FIFOs, a full disk, a deleted directory, rotation.

Every test reads the file back: each line must be one whole JSON object, and every decision must be either in the
file or counted in a ``log-dropped`` event. The full disk is a real 64 KiB tmpfs mounted inside the suite's
private mount namespace (tests/netlab.py), so a write really comes back short and then fails with ENOSPC.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import sockguard
from sockguard import logfile
from sockguard.events import make_event
from sockguard.paths import sitecustomize_dir
from sockguard.sinks import Sinks
from tests import netlab
from tests.loopback import CountingTCPServer

PY = sys.executable
STRICT = {"allow_loopback": False}


def decision(n: int, pad: int = 0) -> dict[str, object]:
    """A decision event; ``n`` goes into the caller, so every line is unique; ``pad`` makes it longer."""
    return make_event(
        operation="connect", protocol="tcp", host="api.test", port=443, address="203.0.113.7", decision="block",
        reason="raw-ip", rule=None, mode="enforce", caller=f"app:f:{n}" + "x" * pad,
    )  # fmt: skip


def read_events(*paths: Path) -> list[dict[str, object]]:
    """Every line of the files, each of which must be a whole JSON object ending in a newline."""
    events = []
    for path in paths:
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path} ends in a fragment: {data[-80:]!r}"
        for number, line in enumerate(data.splitlines(), 1):
            try:
                events.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"{path}:{number} is not a whole JSON object: {line[:120]!r}") from None
    return events


def callers(events: list[dict[str, object]]) -> list[str]:
    return [str(e["caller"]) for e in events if e.get("event") == "decision"]


def dropped(events: list[dict[str, object]]) -> int:
    return sum(int(e["dropped"]) for e in events if e.get("event") == "log-dropped")  # type: ignore[call-overload]


@pytest.fixture
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries after 10-50 ms instead of 0.5-30 s, and a rotation check every 50 ms instead of every second."""
    monkeypatch.setattr(logfile.LogFile, "retry_first", 0.01)
    monkeypatch.setattr(logfile.LogFile, "retry_max", 0.05)
    monkeypatch.setattr(logfile, "CHECK_INTERVAL_NS", 50_000_000)


class SmallDisk:
    """A 64 KiB tmpfs (16 pages): ``fill()`` takes every free page, ``free()`` gives them back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        assert os.statvfs(self.path).f_bfree == 0

    def free(self) -> None:
        self.filler.unlink()


@pytest.fixture
def make_disk(tmp_path: Path) -> object:
    """``make_disk(size)``: a tmpfs of ``size`` (e.g. "64k") mounted in the suite's private mount namespace."""
    if not netlab.STATUS.active:
        pytest.skip(f"needs the suite's private mount namespace: {netlab.STATUS.reason}")
    mounts: list[Path] = []

    def make(size: str) -> SmallDisk:
        mount = tmp_path / f"disk{len(mounts)}"
        mount.mkdir()
        options = f"size={size},mode=0755"
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "sockguard-test", str(mount)], check=True)
        mounts.append(mount)
        return SmallDisk(mount)

    yield make
    for mount in mounts:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(make_disk) -> SmallDisk:  # type: ignore[no-untyped-def]
    return make_disk("64k")


# -- a full disk ------------------------------------------------------------------------------------------


def test_full_disk_tears_no_line_and_logging_resumes_with_the_count(small_disk, fast_retry, capsys, monkeypatch):
    repairs = []
    original = logfile.LogFile._repair

    def spy(self, fd, data, written):  # type: ignore[no-untyped-def]
        repairs.append(written)
        return original(self, fd, data, written)

    monkeypatch.setattr(logfile.LogFile, "_repair", spy)
    path = small_disk / "decisions.jsonl"
    sinks = Sinks(str(path))
    for n in range(5):
        sinks.write(decision(n, pad=300))  # ~2.2 KB: the first page is half full
    small_disk.fill()
    for n in range(5, 60):  # the page fills up, one line comes back short, the rest fail with ENOSPC
        sinks.write(decision(n, pad=300))
    assert repairs and 0 < repairs[0] < 600, "no short write happened: the test did not test a torn line"
    events = read_events(path)  # whole lines only: the torn one was removed again
    written_before = callers(events)
    assert written_before == [f"app:f:{n}" + "x" * 300 for n in range(len(written_before))]
    err = capsys.readouterr().err
    assert err.count("No space left") == 1 and "decisions are still enforced" in err

    small_disk.free()
    time.sleep(0.1)  # past the longest back-off
    for n in range(60, 70):
        sinks.write(decision(n, pad=300))
    events = read_events(path)
    assert [e["event"] for e in events[len(written_before) :]][:1] == ["log-dropped"]
    assert callers(events)[len(written_before) :] == [f"app:f:{n}" + "x" * 300 for n in range(60, 70)]
    assert dropped(events) == 60 - len(written_before)  # every decision is in the file or in the count
    err = capsys.readouterr().err
    assert err.count("is writable again") == 1 and f"{60 - len(written_before)} lines were dropped" in err
    sinks.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_writers_through_a_disk_full_episode_leave_only_whole_lines(make_disk, fast_retry):
    disk = make_disk("2m")  # room for every line once the filler is gone
    path = disk / "decisions.jsonl"
    sinks = Sinks(str(path))
    sinks.write(decision(-1))
    disk.fill()
    attempts = 300
    children = []
    for _child in range(4):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for n in range(attempts):
                    sinks.write(decision(n, pad=120))
                    time.sleep(0.002)
                logfile._at_exit()  # os._exit skips atexit: count what is still uncounted
            except BaseException:
                code = 1
            os._exit(code)
        children.append(pid)
    time.sleep(0.25)  # the children run into the full disk...
    disk.free()  # ...and come back once a retry finds room again
    assert [os.waitpid(pid, 0)[1] for pid in children] == [0, 0, 0, 0]
    events = read_events(path)  # every line whole
    per_pid: Counter[int] = Counter()
    for event in events:
        pid = int(event["pid"])  # type: ignore[call-overload]
        if pid in children:
            per_pid[pid] += int(event["dropped"]) if event["event"] == "log-dropped" else 1  # type: ignore[call-overload]
    assert per_pid == {pid: attempts for pid in children}  # each child: written + counted == attempted
    assert any(e["event"] == "log-dropped" and e["dropped"] for e in events), "the disk never filled up"
    sinks.close()


# -- a deleted directory, a deleted file --------------------------------------------------------------------


def test_deleted_log_directory_is_reported_once_counted_and_recovered(tmp_path, fast_retry, capsys):
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "decisions.jsonl"
    sinks = Sinks(str(path))
    for n in range(5):
        sinks.write(decision(n))
    time.sleep(0.06)
    sinks.write(decision(5))  # a rotation check runs first (lines 0-4 are in the file then), then line 5
    shutil.rmtree(directory)
    for n in range(6, 26):  # lines to the deleted file until the next check, then none: all counted
        sinks.write(decision(n))
        time.sleep(0.005)
    time.sleep(0.06)
    sinks.write(decision(26))
    err = capsys.readouterr().err
    assert err.count("dropped and counted") == 1, err  # the outage, reported once
    assert "was deleted with" in err and "decisions are still enforced" in err
    directory.mkdir()
    time.sleep(0.1)
    for n in range(27, 30):
        sinks.write(decision(n))
    events = read_events(path)
    assert events[0]["event"] == "log-dropped" and events[0]["dropped"] == 22  # 5..26: none silently lost
    assert callers(events) == [f"app:f:{n}" for n in range(27, 30)]
    assert capsys.readouterr().err.count("is writable again") == 1
    sinks.close()


def test_a_deleted_log_file_is_recreated_and_its_lost_lines_counted(tmp_path, fast_retry, capsys):
    path = tmp_path / "decisions.jsonl"
    sinks = Sinks(str(path))
    sinks.write(decision(0))
    time.sleep(0.06)
    sinks.write(decision(1))  # a rotation check runs first (line 0 is in the file then), then line 1
    path.unlink()
    for n in range(2, 7):
        sinks.write(decision(n))  # within the check interval: into the deleted file
    time.sleep(0.06)
    sinks.write(decision(7))  # the check notices: lines 1-6 lost, counted; a new file
    events = read_events(path)
    assert events[0]["event"] == "log-dropped" and events[0]["dropped"] == 6
    assert callers(events) == ["app:f:7"]
    assert "was deleted with 6 new lines in it" in capsys.readouterr().err
    sinks.close()


# -- rotation -------------------------------------------------------------------------------------------------


def test_rename_rotation_switches_to_the_new_file_without_losing_a_line(tmp_path, fast_retry):
    path = tmp_path / "decisions.jsonl"
    sinks = Sinks(str(path))
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        n = 0
        while not stop.is_set():
            sinks.write(decision(n))
            written.append(f"app:f:{n}")
            n += 1
            time.sleep(0.001)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.1)
        os.rename(path, tmp_path / "decisions.jsonl.1")  # logrotate "create": rename, then a new file
        path.touch()
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    old, new = read_events(tmp_path / "decisions.jsonl.1"), read_events(path)
    assert callers(new), "nothing reached the new file after the rotation check"
    assert sorted(callers(old) + callers(new), key=lambda c: int(c.rsplit(":", 1)[1])) == written  # none lost
    sinks.close()


def test_copytruncate_rotation_keeps_writing_whole_lines_at_the_start(tmp_path, fast_retry):
    path = tmp_path / "decisions.jsonl"
    sinks = Sinks(str(path))
    for n in range(10):
        sinks.write(decision(n))
    shutil.copyfile(path, tmp_path / "decisions.jsonl.1")  # logrotate "copytruncate": copy, then truncate
    os.truncate(path, 0)
    for n in range(10, 15):
        sinks.write(decision(n))
    assert callers(read_events(tmp_path / "decisions.jsonl.1")) == [f"app:f:{n}" for n in range(10)]
    data = path.read_bytes()
    assert b"\0" not in data  # O_APPEND: no hole where the old content was
    assert callers(read_events(path)) == [f"app:f:{n}" for n in range(10, 15)]
    sinks.close()


@pytest.mark.parametrize("mode", ["create", "copytruncate"])
def test_real_logrotate(tmp_path, fast_retry, mode):
    logrotate = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin:/sbin")
    if logrotate is None:
        pytest.skip("logrotate is not installed (scripts/test installs it as root on Debian)")
    path = tmp_path / "decisions.jsonl"
    config = tmp_path / "logrotate.conf"
    config.write_text(f"{path} {{\n    {mode}\n    rotate 2\n    missingok\n    nocompress\n}}\n")
    sinks = Sinks(str(path))
    for n in range(10):
        sinks.write(decision(n))
    subprocess.run([logrotate, "-f", "-s", str(tmp_path / "state"), str(config)], check=True)
    time.sleep(0.06)  # the rotation check (50 ms here, 1 s by default)
    for n in range(10, 20):
        sinks.write(decision(n))
    rotated = tmp_path / "decisions.jsonl.1"
    assert callers(read_events(rotated)) == [f"app:f:{n}" for n in range(10)]
    assert callers(read_events(path)) == [f"app:f:{n}" for n in range(10, 20)]
    sinks.close()


def test_rotation_check_is_periodic_not_per_line(tmp_path, monkeypatch):
    calls = Counter()
    real_stat, real_fstat = os.stat, os.fstat

    def counting(name, real):  # type: ignore[no-untyped-def]
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    path = tmp_path / "decisions.jsonl"
    sinks = Sinks(str(path))
    sinks.write(decision(0))  # opens the file
    monkeypatch.setattr(os, "stat", counting("stat", real_stat))
    monkeypatch.setattr(os, "fstat", counting("fstat", real_fstat))
    start = time.monotonic()
    for n in range(5000):
        sinks.write(decision(n))
    seconds = time.monotonic() - start
    monkeypatch.undo()
    assert calls["stat"] <= seconds + 1 and calls["fstat"] <= seconds + 1, (calls, seconds)
    sinks.close()


def test_reopen_log_switches_at_once_and_no_sighup_handler_is_installed(tmp_path):
    before = signal.getsignal(signal.SIGHUP)
    path = tmp_path / "decisions.jsonl"
    with CountingTCPServer("127.0.0.2") as server, sockguard.guarded(allow=["127.0.0.2"], log=str(path), **STRICT):
        socket.create_connection((server.host, server.port), timeout=2).close()
        os.rename(path, tmp_path / "old.jsonl")
        sockguard.reopen_log()  # what an application's own SIGHUP handler may call
        socket.create_connection((server.host, server.port), timeout=2).close()
    assert signal.getsignal(signal.SIGHUP) == before  # sockguard never touches the application's signals
    assert len(callers(read_events(tmp_path / "old.jsonl"))) == 1
    assert len(callers(read_events(path))) == 1


# -- FIFOs and other special files --------------------------------------------------------------------------------

CONNECT = textwrap.dedent(
    """
    import json, socket, sys
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
        print(json.dumps("connected"), flush=True)
    except OSError as exc:
        print(json.dumps(getattr(exc, "reason", repr(exc))), flush=True)
    """
)


def guarded_run(tmp_path: Path, target: CountingTCPServer, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "connect.py"
    script.write_text(CONNECT)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_")}
    environ.update(PYTHONPATH=sitecustomize_dir(), SOCKGUARD_ALLOW="127.0.0.2", SOCKGUARD_ALLOW_LOOPBACK="0", **env)
    return subprocess.run(
        [PY, str(script), target.host, str(target.port)], env=environ, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def allowed_server():
    with CountingTCPServer("127.0.0.2") as server:
        yield server


def test_fifo_without_a_reader_is_refused_without_hanging(tmp_path, allowed_server):
    fifo = tmp_path / "decisions.fifo"
    os.mkfifo(fifo)
    result = guarded_run(tmp_path, allowed_server, SOCKGUARD_LOG=str(fifo))  # used to hang forever in open()
    assert result.stdout.strip() == '"connected"', result.stderr
    assert allowed_server.settle(1) == 1
    assert "is a FIFO (named pipe), not a regular file" in result.stderr
    assert "SOCKGUARD_LOG_SPECIAL=1" in result.stderr


def test_the_null_device_is_a_log_that_needs_no_opt_in(tmp_path, allowed_server):
    result = guarded_run(tmp_path, allowed_server, SOCKGUARD_LOG=os.devnull)
    assert result.stdout.strip() == '"connected"', result.stderr
    assert "decision log" not in result.stderr


def test_status_names_a_log_it_cannot_write_and_exits_1(tmp_path):
    fifo = tmp_path / "decisions.fifo"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_")}

    def status(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PY, "-m", "sockguard", "status", "--format", "json"], env={**env, **extra}, capture_output=True,
            text=True, cwd=tmp_path, timeout=60,
        )  # fmt: skip

    refused = status(SOCKGUARD_LOG=str(fifo))
    assert refused.returncode == 1 and "is a FIFO" in refused.stderr
    assert "is a FIFO" in json.loads(refused.stdout)["log_problem"]
    missing = status(SOCKGUARD_LOG=str(tmp_path / "no-such-dir" / "x.jsonl"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    allowed = status(SOCKGUARD_LOG=str(fifo), SOCKGUARD_LOG_SPECIAL="1")
    assert allowed.returncode == 0 and json.loads(allowed.stdout)["log_problem"] is None
    fine = status(SOCKGUARD_LOG=str(tmp_path / "decisions.jsonl"))
    assert fine.returncode == 0, fine.stderr


def test_allowed_fifo_never_blocks_and_its_reader_gets_whole_lines(tmp_path, fast_retry, capsys):
    fifo = tmp_path / "decisions.fifo"
    os.mkfifo(fifo)
    sinks = Sinks(str(fifo), log_special=True)
    sinks.write(decision(0))  # no reader: ENXIO, an outage (open() would have blocked without O_NONBLOCK)
    assert "No such device or address" in capsys.readouterr().err
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        time.sleep(0.1)
        for n in range(1, 2000):  # more than the pipe holds: the rest is dropped, never waited for
            sinks.write(decision(n))
        data = b""
        while chunk := _read_some(reader):
            data += chunk
    finally:
        os.close(reader)
    lines = data.splitlines()
    assert data.endswith(b"\n") and lines
    assert all(json.loads(line) for line in lines)
    assert len(lines) < 2000  # the pipe was full: lines were dropped, not waited for
    sinks.close()


def _read_some(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


def test_dropped_lines_are_reported_at_exit(tmp_path, allowed_server):
    result = guarded_run(tmp_path, allowed_server, SOCKGUARD_LOG=str(tmp_path / "missing" / "decisions.jsonl"))
    assert result.stdout.strip() == '"connected"', result.stderr
    assert result.stderr.count("sockguard: cannot open decision log") == 1
    assert "1 decision-log lines for" in result.stderr and "the log is still unwritable" in result.stderr


def test_log_special_is_read_from_the_file_and_the_environment_and_passed_on(tmp_path):
    from sockguard.config import load_settings
    from sockguard.errors import ConfigError

    config = tmp_path / "sockguard.toml"
    config.write_text('log = "decisions.fifo"\nlog_special = true\n')
    settings = load_settings({"SOCKGUARD_CONFIG": str(config)}, str(tmp_path))
    assert settings.log_special is True and settings.log == str(tmp_path / "decisions.fifo")
    assert settings.to_env()["SOCKGUARD_LOG_SPECIAL"] == "1"  # children of sockguard run get it too
    assert load_settings({"SOCKGUARD_LOG_SPECIAL": "off"}, str(tmp_path)).log_special is False
    with pytest.raises(ConfigError, match="SOCKGUARD_LOG_SPECIAL must be true/false"):
        load_settings({"SOCKGUARD_LOG_SPECIAL": "maybe"}, str(tmp_path))


@pytest.mark.parametrize("reader", [False, True])
def test_native_layer_never_hangs_on_a_fifo_log(tmp_path, reader):
    """A program run with the preload library (a non-Python program, or a C extension's connect) writes its
    blocks to the same log: a FIFO there must not hang it either."""
    from tests.native_support import require_library

    require_library()
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    fifo = tmp_path / "decisions.fifo"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK) if reader else None
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_")}
    env["SOCKGUARD_ALLOW_LOOPBACK"] = "0"
    try:
        with CountingTCPServer("127.0.0.3") as blocked:
            result = subprocess.run(
                [PY, "-m", "sockguard", "run", "--log", str(fifo), "--", curl, "-s", "-m", "5",
                 f"http://127.0.0.3:{blocked.port}/"],
                env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert blocked.settle() == 0
    finally:
        if held is not None:
            os.close(held)
    assert result.returncode != 0  # blocked, not hung
    expected = "is not a regular file" if reader else "No such device or address"
    assert f"native layer: {'decision log' if reader else 'cannot open decision log'}" in result.stderr
    assert expected in result.stderr, result.stderr
