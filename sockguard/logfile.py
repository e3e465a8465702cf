"""The JSON-lines decision log file: never blocks the application, never loses a line silently.

* **Opened without blocking** (``O_NONBLOCK``), and only if it is a regular file: a FIFO without a reader would
  block ``open()`` forever, one with a slow reader every ``write()``. A FIFO, a character device (``/dev/stdout``)
  or another special file is refused with a message unless ``log_special`` (``SOCKGUARD_LOG_SPECIAL=1``) allows
  it; then writes stay non-blocking, and a line the reader has no room for is dropped and counted. The null device
  needs no opt-in (it never blocks).
* **No lock, one descriptor number for life**: each line is one ``write()`` on an ``O_APPEND`` descriptor, so
  lines from threads and forked processes never interleave. Reopening (rotation) puts the new file *onto* the
  same descriptor number with ``dup2()``, which is atomic: a thread writing at that moment writes to the old file
  or the new one, and the number is never free for the application to reuse while a thread still holds it.
* **Whole lines or nothing**: a short write (a full disk) is completed if the fragment is still the end of the
  file, else cut off again (``ftruncate``), never left for the next writer to glue its line onto. After a reopen,
  a file that does not end in a newline (someone else's fragment) gets one first.
* **Outages are retried and reported once**: after a failed write or open the file is retried with a doubling
  back-off (:attr:`LogFile.retry_first` up to :attr:`LogFile.retry_max` seconds); meanwhile lines are dropped and
  counted. The outage is reported once on stderr, the recovery once, and the first line after it is a
  ``log-dropped`` event with the count. What is still uncounted at exit is reported then.
* **Rotation**: at most once a second (:data:`CHECK_INTERVAL_NS`; never per line) the path is compared with the
  open file (``st_dev``/``st_ino``); moved or deleted means reopen the path (logrotate ``create``). A file truncated
  in place (``copytruncate``) needs nothing: ``O_APPEND`` writes go to its new end. No signal handler is installed.

The per-line cost on the hot path is one comparison of the time the caller already took for the event.
"""

from __future__ import annotations

import atexit
import errno
import itertools
import json
import os
import stat
import time
import weakref

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

#: How often the path is compared with the open file (rotation, deletion), in nanoseconds.
CHECK_INTERVAL_NS = 1_000_000_000
_NEVER = 1 << 62
_SPECIAL = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
_write = os.write  # (one global lookup on the hot path instead of two)
_OPEN_FLAGS = os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)


class NotWritable(Exception):
    """The path can never be the decision log as configured (a directory, or a special file not allowed)."""


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a directory"
    return _SPECIAL.get(stat.S_IFMT(mode), "not a regular file")


def _allowed(info: os.stat_result, special: bool) -> bool:
    """A regular file always; a special file with ``log_special``; the null device always (it never blocks:
    ``log = "/dev/null"`` is a way to say "no log")."""
    if stat.S_ISREG(info.st_mode):
        return True
    if stat.S_ISDIR(info.st_mode):
        return False
    if special:
        return True
    if stat.S_ISCHR(info.st_mode):
        try:
            return info.st_rdev == os.stat(os.devnull).st_rdev
        except OSError:
            return False
    return False


def refusal(path: str, mode: int) -> str:
    """The message for a path that is not a regular file (``mode`` from stat)."""
    if stat.S_ISDIR(mode):
        return f"decision log {path!r} is a directory; set log to a file path"
    return (
        f"decision log {path!r} is {kind_of(mode)}, not a regular file: not writing to it (writing to a FIFO or "
        "device can block the application). To write to it anyway, without ever blocking (lines the reader has no "
        "room for are dropped and counted), set log_special = true (SOCKGUARD_LOG_SPECIAL=1, sockguard run "
        "--log-special)"
    )


def problem(path: str, special: bool = False) -> str | None:
    """What would stop ``path`` from being written as the decision log, checked without opening or creating it
    (``sockguard status``, ``sockguard run``); None if nothing is known to."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            return f"decision log {path!r}: the directory {directory!r} does not exist"
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"decision log {path!r}: the directory {directory!r} is not writable"
        return None
    except OSError as exc:
        return f"decision log {path!r}: {exc.strerror or exc}"
    if not _allowed(info, special):
        return refusal(path, info.st_mode)
    if not os.access(path, os.W_OK):
        return f"decision log {path!r} is not writable"
    return None


def _open(path: str, special: bool) -> tuple[int, tuple[int, int], bool, bool]:
    """Open ``path`` for appending without blocking: (descriptor, (st_dev, st_ino), readable, regular).
    Raises OSError, or NotWritable for a path that must not be written."""
    try:
        before = os.stat(path)
    except FileNotFoundError:
        before = None
    if before is not None and not _allowed(before, special):
        raise NotWritable(refusal(path, before.st_mode))
    if before is None or stat.S_ISREG(before.st_mode):
        try:  # readable too, so a torn line can be recognised as ours before it is cut off
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o644)
            readable = True
        except PermissionError:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | _OPEN_FLAGS, 0o644)
            readable = False
    else:  # an allowed special file: never O_RDWR (a FIFO we read ourselves would swallow the lines)
        fd = os.open(path, os.O_WRONLY | _OPEN_FLAGS)
        readable = False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced between stat() and open(): O_NONBLOCK kept open() from hanging
            if not _allowed(info, special):
                raise NotWritable(refusal(path, info.st_mode))
            if readable:  # a FIFO that raced in is never ours to read
                raise OSError(errno.EAGAIN, "the path changed while it was opened")
    except BaseException:
        os.close(fd)
        raise
    regular = stat.S_ISREG(info.st_mode)
    return fd, (info.st_dev, info.st_ino), readable and regular, regular


class LogFile:
    """One JSON-lines file. :meth:`write` is called from any thread and any forked child, with no lock; everything
    rare (opening, the rotation check, retries, reports) happens in :meth:`_maintain`, at most once a second or when
    a retry is due, in one thread at a time."""

    # (slots: the C accelerator's request_end reads _checked, _due and _fd from their offsets, not a dict)
    __slots__ = ("__weakref__", "_backoff", "_busy", "_checked", "_drops", "_drops_logged", "_drops_taken", "_due",
                 "_fd", "_force", "_id", "_lost", "_on_refused", "_outage", "_readable", "_refused", "_regular",
                 "_report", "_retry_at", "_short_reason", "_size_seen", "_slot", "path", "special")  # fmt: skip

    #: First and longest wait before retrying an unwritable file, in seconds.
    retry_first = 0.5
    retry_max = 30.0

    def __init__(
        self,
        path: str,
        *,
        special: bool = False,
        report: Callable[[str, str], None],
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.special = special
        self._report = report  # (key, message): one line on stderr, rate-limited per key
        self._on_refused = on_refused
        self._fd: int | None = None  # the descriptor lines go to; None while not open or in an outage
        self._slot: int | None = None  # the descriptor number we own (kept for life: see the module docstring)
        self._id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file the slot refers to
        self._readable = False
        self._regular = True
        self._force = False  # reopen() asked for a reopen at the next line
        self._checked = 0  # when _maintain last ran (ns, the caller's clock); the hot path compares with _due
        self._due = 0  # when it runs next: 0 = at the first line
        self._retry_at = 0
        self._backoff = self.retry_first
        self._busy = False  # _maintain runs in one thread at a time (set and tested with no call between)
        self._refused = False
        self._outage: tuple[float, str] | None = None  # (since, reason) while lines are being dropped
        self._drops = itertools.count()  # next() is atomic: an exact count without a lock
        self._drops_taken = 0  # how many next() calls on _drops were reads, not drops
        self._drops_logged = 0  # drops already reported in a log-dropped event
        self._lost = 0  # lines written to a file deleted before the rotation check noticed (counted as drops)
        self._size_seen = 0  # the file's size at the last rotation check
        self._short_reason = "No space left on device"  # why a short write could not be completed (last seen)
        _live.add(self)

    # -- the hot path ---------------------------------------------------------------------------------------

    def write(self, data: bytes, now: int) -> None:
        """Append one line (``data`` ends with a newline). ``now``: ``time.time_ns()``, taken by the caller for
        the event's timestamp anyway."""
        if not self._checked <= now < self._due:  # (a clock stepped back counts as due)
            self._maintain(now)
        fd = self._fd
        if fd is None:
            if not self._refused:
                next(self._drops)
            return
        try:
            written = _write(fd, data)
        except OSError as exc:
            self._failed(exc, now)
            return
        if written != len(data):
            self._torn(fd, data, written, now)

    # -- everything rare --------------------------------------------------------------------------------

    def start(self) -> None:
        """Open now (at activation, outside any lock), so a problem is reported before the first decision."""
        self._maintain(time.time_ns())

    def reopen(self) -> None:
        """Reopen the path at the next line (an application's own SIGHUP handler may call this after rotating;
        without it the rotation is noticed within a second)."""
        self._force = True
        self._retry_at = 0
        self._due = 0

    def _maintain(self, now: int) -> None:
        if self._busy:
            return
        self._busy = True  # no call between the test above and this store: one thread at a time
        try:
            self._checked = now
            self._due = now + CHECK_INTERVAL_NS
            if self._refused:
                self._due = _NEVER
            elif self._fd is None:
                if now < self._retry_at:
                    self._due = self._retry_at
                else:
                    self._resume(now)
            elif self._force:
                self._force = False
                self._reopen(now)
            else:
                self._check_path(now)
        except OSError as exc:  # anything else the file system says: an outage like any other, never the app's
            self._outage_begins(now, f"decision log {self.path!r}: {exc.strerror or exc}")
        finally:
            self._busy = False

    def _check_path(self, now: int) -> None:
        """The path still names the file we write to? (logrotate's ``create``: renamed; or deleted)"""
        slot = self._slot
        if slot is None:
            self._reopen(now)
            return
        try:
            held = os.fstat(slot)
        except OSError:  # closed behind our back (an application closing every descriptor)
            self._slot = None
            self._reopen(now)
            return
        if (held.st_dev, held.st_ino) != self._id:  # the number now belongs to someone else's file
            self._slot = None
            self._reopen(now)
            return
        seen, self._size_seen = self._size_seen, held.st_size
        if held.st_nlink == 0:  # deleted: the lines written to it since the last check are lost, and counted
            lost = self._lines_between(slot, seen, held.st_size)
            if lost:
                self._lost += lost
                self._outage_begins(now, f"decision log {self.path!r} was deleted with {lost} new lines in it")
                self._resume(now)  # a new file at once, starting with the count (an outage if it cannot be made)
                return
        try:
            info = os.stat(self.path)
        except OSError:
            info = None
        if info is None or (info.st_dev, info.st_ino) != self._id:  # renamed (logrotate create): nothing lost
            self._reopen(now)

    def _lines_between(self, fd: int, start: int, end: int) -> int:
        """Lines in ``fd`` between two offsets (read back; unknown, so 0, for a file we cannot read)."""
        if not self._readable or end <= start:
            return 0
        lines = 0
        try:
            while start < end:
                chunk = os.pread(fd, min(end - start, 1 << 20), start)
                if not chunk:
                    break
                lines += chunk.count(b"\n")
                start += len(chunk)
        except OSError:
            pass
        return lines

    def _reopen(self, now: int) -> bool:
        """Open the path onto our descriptor number; an outage if it cannot be opened."""
        try:
            fd, ident, readable, regular = _open(self.path, self.special)
        except NotWritable as exc:
            self._refuse(str(exc))
            return False
        except OSError as exc:
            self._fd = None
            self._outage_begins(now, f"cannot open decision log {self.path!r}: {exc.strerror or exc}")
            return False
        if self._slot is None:
            self._slot = fd
        else:
            try:
                os.dup2(fd, self._slot, inheritable=False)
            except OSError:  # keep the new number instead (the old one stays open: a thread may still hold it)
                self._slot = fd
            else:
                os.close(fd)
        self._id = ident
        self._readable = readable
        self._regular = regular
        self._end_with_newline()
        try:
            self._size_seen = os.fstat(self._slot).st_size
        except OSError:
            self._size_seen = 0
        if self._outage is None:
            self._fd = self._slot
        return True

    def _resume(self, now: int) -> None:
        """A retry is due (or this is the first line): open if needed, write the count of dropped lines, and
        go back to writing if that worked."""
        if (self._slot is None or self._stale()) and not self._reopen(now):
            return
        slot = self._slot
        if slot is None or self._outage is None:
            self._fd = slot
            return
        dropped = self._dropped() - self._drops_logged
        line = self._event_line("log-dropped", dropped)
        try:
            written = os.write(slot, line)
        except OSError as exc:
            self._retry_later(now, f"writing decision log {self.path!r} failed: {exc.strerror or exc}")
            return
        if written != len(line) and not self._repair(slot, line, written):
            self._retry_later(now, f"writing decision log {self.path!r} failed: {self._short_reason} (a short write)")
            return
        self._drops_logged += dropped
        since, reason = self._outage
        self._outage = None
        self._backoff = self.retry_first
        self._fd = slot
        self._report(
            "recovered",
            f"sockguard: decision log {self.path!r} is writable again after {time.time() - since:.1f} s "
            f"({reason}); {dropped} lines were dropped meanwhile (counted in a log-dropped event)",
        )

    def _stale(self) -> bool:
        """The path no longer names the file we hold (moved, deleted, replaced while we were out)."""
        try:
            info = os.stat(self.path)
        except OSError:
            return True
        return (info.st_dev, info.st_ino) != self._id

    def _failed(self, exc: OSError, now: int) -> None:
        """A write failed: this line is dropped; so is every line until a retry works."""
        next(self._drops)
        if exc.errno == errno.EBADF:  # the descriptor was closed behind our back: never write to that number again
            self._slot = None
        self._fd = None
        self._outage_begins(now, f"writing decision log {self.path!r} failed: {exc.strerror or exc}")

    def _torn(self, fd: int, data: bytes, written: int, now: int) -> None:
        """Only part of the line was written (a disk that just filled up): complete it or remove it."""
        if self._repair(fd, data, written):
            return
        next(self._drops)
        self._fd = None
        self._outage_begins(now, f"writing decision log {self.path!r} failed: {self._short_reason} (a short write)")

    def _repair(self, fd: int, data: bytes, written: int) -> bool:
        """Complete a line of which only ``written`` bytes went out: True if it is now whole. Else its fragment is
        cut off again, or, where that is impossible (a pipe, an append-only file), ended with a newline, so the
        next writer's line is never glued onto it. A fragment another writer has already appended after is left."""
        if self._regular and not self._at_end(fd, data[:written]):
            return False
        try:
            more = os.write(fd, data[written:])
        except OSError as exc:
            self._short_reason = exc.strerror or str(exc)
            more = 0
        if more == len(data) - written:
            return True
        fragment = data[: written + more]
        if self._regular:
            if not self._at_end(fd, fragment):
                return False
            try:
                os.ftruncate(fd, os.fstat(fd).st_size - len(fragment))
                return False
            except OSError:  # an append-only file: end the fragment instead
                pass
        try:
            os.write(fd, b"\n")
        except OSError:
            pass
        return False

    def _at_end(self, fd: int, fragment: bytes) -> bool:
        """Whether ``fragment`` is what the file ends with (read back; a write-only file: by our offset)."""
        try:
            size = os.fstat(fd).st_size
            if self._readable:
                return size >= len(fragment) and os.pread(fd, len(fragment), size - len(fragment)) == fragment
            return os.lseek(fd, 0, os.SEEK_CUR) == size
        except OSError:
            return False

    def _end_with_newline(self) -> None:
        """A reopened file that ends in the middle of a line (a writer that died mid-line, a torn line of an
        older version) gets a newline first, so our first line is not glued onto it."""
        if not self._readable or self._slot is None:
            return
        try:
            size = os.fstat(self._slot).st_size
            if size and os.pread(self._slot, 1, size - 1) != b"\n":
                os.write(self._slot, b"\n")
        except OSError:
            pass

    def _outage_begins(self, now: int, reason: str) -> None:
        if self._outage is None:
            self._outage = (time.time(), reason)
            self._report(
                "outage",
                f"sockguard: {reason}; decisions are still enforced and sent to the 'sockguard' logger; lines are "
                f"dropped and counted until it works again (retrying, at least every {self.retry_max:g} s)",
            )
        self._retry_later(now, reason)

    def _retry_later(self, now: int, reason: str) -> None:
        self._fd = None
        self._retry_at = now + int(self._backoff * 1e9)
        self._due = min(self._due, self._retry_at)
        self._backoff = min(self._backoff * 2, self.retry_max)

    def _refuse(self, message: str) -> None:
        self._refused = True
        self._fd = None
        self._due = _NEVER
        self._report(
            "refused", f"sockguard: {message}; decisions are still enforced and sent to the 'sockguard' logger"
        )
        if self._on_refused is not None:
            self._on_refused()

    def _dropped(self) -> int:
        """Lines dropped so far in this process (reading the counter costs one next(), remembered)."""
        count = next(self._drops) - self._drops_taken
        self._drops_taken += 1
        return count + self._lost

    def _event_line(self, kind: str, dropped: int) -> bytes:
        since, reason = self._outage or (time.time(), "")
        event = {
            "event": kind,
            "ts": time.time_ns() // 1000 / 1e6,
            "pid": os.getpid(),
            "path": self.path,
            "dropped": dropped,
            "since": round(since, 6),
            "reason": reason,
        }
        return (json.dumps(event, ensure_ascii=True, separators=(",", ":")) + "\n").encode()

    def at_exit(self) -> None:
        """Report lines dropped and not yet counted in the log: one last attempt to write the count, then stderr."""
        dropped = self._dropped() - self._drops_logged
        if dropped <= 0 or self._refused:
            return
        reason = self._outage[1] if self._outage else "a write failed"
        recorded = False
        slot = self._slot
        if slot is not None and not self._stale():  # (never into a file that is gone)
            line = self._event_line("log-dropped", dropped)
            try:
                written = os.write(slot, line)
                recorded = written == len(line) or self._repair(slot, line, written)
            except OSError:
                pass
        self._drops_logged += dropped
        where = "the count is the last line of the log" if recorded else "the log is still unwritable"
        self._report(
            "exit", f"sockguard: {dropped} decision-log lines for {self.path!r} were dropped ({reason}); {where}"
        )

    def after_fork(self) -> None:
        """A forked child counts its own drops."""
        self._drops = itertools.count()
        self._drops_taken = self._drops_logged = self._lost = 0

    def __del__(self) -> None:
        # Unreachable, so no thread is writing through it (a writer holds it): its descriptor can go. A State
        # replaced by another (tests, guarded() blocks, a reloaded configuration) must not leak one.
        slot = getattr(self, "_slot", None)  # (None if __init__ never got that far)
        if slot is not None:
            try:
                os.close(slot)
            except OSError:
                pass

    def close(self) -> None:
        """Close the descriptor (only when no thread can be writing: tests, shutdown)."""
        _live.discard(self)
        slot, self._slot, self._fd = self._slot, None, None
        self._refused = True
        if slot is not None:
            try:
                os.close(slot)
            except OSError:
                pass


_live: weakref.WeakSet[LogFile] = weakref.WeakSet()


def _at_exit() -> None:
    for log in list(_live):
        log.at_exit()


def _after_fork_in_child() -> None:
    for log in list(_live):
        log.after_fork()


atexit.register(_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
