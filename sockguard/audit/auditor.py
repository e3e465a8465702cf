"""The scan itself: files from the walk, through their scanner, to findings, one at a time.

Findings are yielded as they are found, so memory does not grow with their number (a 1 MB YAML with 60,000
hosts, a 10 MB INI of continuation lines). Whatever cannot be scanned, or only in part, is recorded as a
problem ("not scanned: reason") and counted, never dropped in silence. The scan stays inside the tree it was
given: a symlink or a compose ``env_file`` that leads out of it is reported, not followed, and only regular
files are opened (non-blocking, so a FIFO or /proc/kmsg cannot hang the run).
"""

from __future__ import annotations

import os
import stat
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from sockguard.audit.findings import Finding, Target, findings_for
from sockguard.audit.scanners import TEXT_SCANNERS
from sockguard.audit.scanners.base import Ref, Scalar, ScanError, source_lines
from sockguard.audit.scanners.environment import scan_environment
from sockguard.audit.scanners.python import decode_python, scan_python
from sockguard.audit.walk import file_kind, inside, walk
from sockguard.display import path_text

if TYPE_CHECKING:
    from sockguard.policy import Policy

MAX_FILE_BYTES = 10 * 1024 * 1024
ENVIRONMENT = "<environment>"
#: Problems listed one by one (all are counted): bounds memory when a whole tree is unreadable.
MAX_LISTED_PROBLEMS = 1000
_OUR_JSON = b'"tool": "sockguard audit"'


class AuditError(Exception):
    """A usage or input problem: exit status 2, message names the problem."""


class Stats:
    """What the scan read and what it could not; bounded whatever the tree holds."""

    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0
        self.by_scanner: Counter[str] = Counter()
        self.problems: list[tuple[str, str]] = []  # (path, why it was not scanned), the first MAX_LISTED_PROBLEMS
        self.problem_count = 0
        self.started = time.monotonic()
        self.seconds = 0.0

    def problem(self, path: str, why: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append((path, why))

    def to_json(self) -> dict:
        rate = self.files / self.seconds if self.seconds else None
        return {
            "files": self.files,
            "bytes": self.bytes,
            "by_scanner": dict(sorted(self.by_scanner.items())),
            "seconds": round(self.seconds, 3),
            "files_per_second": None if rate is None else round(rate, 1),
            "not_scanned": self.problem_count,
            "problems": [{"path": p, "error": e} for p, e in self.problems],
            "problems_unlisted": self.problem_count - len(self.problems),
        }


class Progress:
    """One status line on stderr: redrawn in place on a terminal, a line every few seconds otherwise."""

    def __init__(self, enabled: bool, stream=None) -> None:
        import sys

        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = enabled
        self.last = 0.0
        self.shown = False

    def update(self, stats: Stats, findings: int, path: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < (0.1 if self.tty else 2.0):
            return
        self.last = now
        from sockguard.display import printable

        elapsed = max(now - stats.started, 1e-6)
        line = f"sockguard audit: {stats.files} files, {findings} findings, {stats.files / elapsed:.0f} files/s  "
        line += printable(path)
        if self.tty:
            self.stream.write("\r" + line[:119] + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.enabled and self.tty and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def display_path(path: str, cwd: str) -> str:
    """Relative to the working directory when below it; always valid Unicode (undecodable bytes as \\xNN)."""
    absolute = os.path.abspath(path)
    rel = os.path.relpath(absolute, cwd)
    shown = absolute if rel.startswith(os.pardir) else rel
    return path_text(shown.replace(os.sep, "/"))


class Positions:
    """(line, column) of a destination inside a scalar. Exact scalars map character for character onto the
    source; their newline offsets are indexed once per scalar, so many destinations in one long value cost
    a bisect each, not a rescan of the value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._lines: list[str] | None = None  # split only when a scalar is not exact (Python, escapes)
        self._scalar: Scalar | None = None
        self._newlines: list[int] = []

    def __call__(self, scalar: Scalar, target: Target) -> tuple[int, int]:
        if scalar.line == 0:
            return 0, 0
        if scalar.exact:
            if scalar is not self._scalar:
                self._scalar = scalar
                value = scalar.value
                self._newlines = [i for i, c in enumerate(value) if c == "\n"] if "\n" in value else []
            newlines = self._newlines
            if not newlines or target.offset <= newlines[0]:
                return scalar.line, scalar.column + target.offset
            k = bisect_right(newlines, target.offset - 1)
            return scalar.line + k, target.offset - newlines[k - 1]
        if self._lines is None:
            self._lines = source_lines(self.text)
        lines = self._lines
        last = max(scalar.end_line, scalar.line)
        for number in range(scalar.line, min(last, len(lines)) + 1):
            text = lines[number - 1]
            found = text.find(target.text, scalar.column - 1 if number == scalar.line else 0)
            if found >= 0:
                return number, found + 1
        return scalar.line, scalar.column


class Auditor:
    """Walks paths lazily and yields findings as they are found."""

    def __init__(
        self,
        policy: Policy,
        *,
        include_tests: bool = False,
        exclude: Iterable[str] = (),
        cwd: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.policy = policy
        self.include_tests = include_tests
        self.exclude = tuple(exclude)
        self.cwd = cwd or os.getcwd()
        self.stats = Stats()
        self.progress = progress or Progress(False)
        self.seen: set[str] = set()
        self.count = 0

    def scan_environment(self, environ) -> Iterator[Finding]:
        position = Positions("")
        for scalar in scan_environment(environ):
            yield from self._count(findings_for(self.policy, scalar, ENVIRONMENT, "env", position))

    def scan_paths(self, paths: Iterable[str]) -> Iterator[Finding]:
        for path in paths:
            if os.path.isdir(path):
                root = os.path.realpath(path)
                for file, kind, problem in walk(path, self.include_tests, self.exclude):
                    if problem is not None:
                        self.stats.problem(display_path(file, self.cwd), problem)
                    elif kind is not None:
                        yield from self.scan_file(file, kind, root)
            elif os.path.exists(path):
                kind = file_kind(os.path.basename(path))
                if kind is None:
                    self.stats.problem(
                        display_path(path, self.cwd), "not a file type audit reads (.env, .py, .toml, .yaml, ...)"
                    )
                    continue
                # A file named on the command line is scanned wherever it lies; what it names stays in its directory.
                yield from self.scan_file(path, kind, os.path.dirname(os.path.realpath(path)))
            else:
                raise AuditError(f"{path}: no such file or directory")
        self.stats.seconds = time.monotonic() - self.stats.started

    def _count(self, findings: Iterable[Finding]) -> Iterator[Finding]:
        for f in findings:
            self.count += 1
            yield f

    def _read(self, path: str, shown: str) -> bytes | None:
        """The file's bytes, or None with the reason recorded. Regular files only, opened non-blocking."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            self.stats.problem(shown, f"cannot read: {exc.strerror or exc}")
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                self.stats.problem(shown, "not a regular file (FIFO, socket or device): not read")
                return None
            if info.st_size > MAX_FILE_BYTES:
                self.stats.problem(shown, f"larger than {MAX_FILE_BYTES // 1024 // 1024} MiB: not scanned")
                return None
            chunks = []
            left = MAX_FILE_BYTES + 1
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            data = b"".join(chunks)
        except OSError as exc:
            self.stats.problem(shown, f"cannot read: {exc.strerror or exc}")
            return None
        finally:
            os.close(fd)
        if len(data) > MAX_FILE_BYTES:  # grew while being read, or st_size lied (/proc)
            self.stats.problem(shown, f"larger than {MAX_FILE_BYTES // 1024 // 1024} MiB: not scanned")
            return None
        return data

    def scan_file(self, path: str, kind: str, root: str | None = None) -> Iterator[Finding]:
        real = os.path.realpath(path)
        if real in self.seen:
            return
        self.seen.add(real)
        shown = display_path(path, self.cwd)
        if os.path.basename(path) == "sockguard.toml":
            return  # the policy itself
        data = self._read(path, shown)
        if data is None:
            return
        if b"\x00" in data[:8192]:
            self.stats.problem(shown, "binary content: not scanned")
            return
        if kind == "json" and _OUR_JSON in data[:200]:
            return  # a baseline or JSON report of ours: its values are findings already
        self.stats.files += 1
        self.stats.bytes += len(data)
        refs: list[Ref] = []
        found = 0
        try:
            if kind == "python":
                text = decode_python(data)
                items: Iterable[Scalar | Ref] = scan_python(data, text)
            else:
                text = data.decode("utf-8-sig", errors="replace")
                if kind in ("yaml", "compose") and "apiVersion:" in text and "kind:" in text:
                    kind = "k8s"
                items = TEXT_SCANNERS[kind](text)
            self.stats.by_scanner[kind] += 1
            position = Positions(text)
            for item in items:
                if isinstance(item, Ref):
                    refs.append(item)
                    continue
                for finding in findings_for(self.policy, item, shown, kind, position):
                    found += 1
                    self.count += 1
                    yield finding
        except ScanError as exc:
            self.stats.problem(shown, _partly(str(exc), found))
            return
        except RecursionError:
            self.stats.problem(shown, _partly("too deeply nested to scan", found))
            return
        except Exception as exc:  # a bug here must not cost the rest of the report; it is listed, not hidden
            self.stats.problem(shown, _partly(f"internal error: {type(exc).__name__}: {exc}", found))
            return
        self.progress.update(self.stats, self.count, shown)
        for ref in refs:  # docker-compose env_file, relative to the compose file
            yield from self._env_file(path, shown, ref, root)

    def _env_file(self, compose: str, shown: str, ref: Ref, root: str | None) -> Iterator[Finding]:
        target = os.path.join(os.path.dirname(compose), ref.path)
        where = f"line {ref.line}: env_file {ref.path}"
        if root is not None and not inside(os.path.realpath(target), root):
            self.stats.problem(shown, f"{where} is outside the scanned tree: not followed")
        elif not os.path.lexists(target):
            self.stats.problem(shown, f"{where} not found")
        else:
            yield from self.scan_file(target, "dotenv", root)


def _partly(why: str, found: int) -> str:
    if found:
        return f"{why}; scanned in part ({found} finding(s) before the problem)"
    return f"{why}: not scanned"
