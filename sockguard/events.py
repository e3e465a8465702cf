"""Decision events: the application caller, and the two sinks.

Sinks: the stdlib logger ``sockguard`` (blocks at WARNING, allows at INFO) and
a JSON-lines file. Nothing here runs on an allowed connect unless a sink wants
allow events; the stack walk and the formatting happen only then.
"""

from __future__ import annotations

import contextvars
import os
import sys
import time
from typing import Any

#: Correlation id the application can set (per task / thread via contextvars).
correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("sockguard_correlation_id", default=None)

# Frames from these top-level packages are plumbing, not "the application".
_PLUMBING = frozenset(
    [
        "sockguard",
        "urllib3",
        "requests",
        "httpx",
        "httpcore",
        "h11",
        "h2",
        "hpack",
        "aiohttp",
        "aiohappyeyeballs",
        "aiodns",
        "anyio",
        "sniffio",
        "trio",
        "asyncio",
        "gevent",
        "eventlet",
        "websockets",
        "dns",
        "socks",
        "certifi",
        "idna",
        "concurrent",
        "threading",
        "selectors",
        "socket",
        "ssl",
        "http",
        "urllib",
        "smtplib",
        "ftplib",
        "poplib",
        "imaplib",
        "nntplib",
        "xmlrpc",
        "multiprocessing",
        "wsgiref",
        "pytest",
        "_pytest",
        "pluggy",
        "uvloop",
        "botocore",
        "boto3",
        "s3transfer",
        "grpc",
        "psycopg",
        "redis",
    ]
)
_STDLIB_DIR = os.path.dirname(os.__file__) + os.sep
_plumbing_code: dict[Any, bool] = {}


def _is_plumbing(frame) -> bool:
    code = frame.f_code
    cached = _plumbing_code.get(code)
    if cached is not None:
        return cached
    module = frame.f_globals.get("__name__") or ""
    filename = code.co_filename
    result = (
        module.partition(".")[0] in _PLUMBING
        or (filename.startswith(_STDLIB_DIR) and "-packages" not in filename)
        or filename.startswith("<frozen")
    )
    if len(_plumbing_code) < 4096:
        _plumbing_code[code] = result
    return result


def find_caller(depth: int = 2) -> str | None:
    """``module:function:line`` of the first frame outside sockguard, the
    standard library and known client libraries."""
    try:
        frame: Any = sys._getframe(depth)
    except ValueError:
        return None
    last = None
    while frame is not None:
        if not _is_plumbing(frame):
            return f"{frame.f_globals.get('__name__', '?')}:{frame.f_code.co_name}:{frame.f_lineno}"
        last = frame
        frame = frame.f_back
    if last is not None:  # only plumbing on the stack (e.g. a resolver thread)
        return f"{last.f_globals.get('__name__', '?')}:{last.f_code.co_name}:{last.f_lineno}"
    return None


def _json_module():
    import json

    return json


class Sinks:
    """The logger and the optional JSON-lines file. A failing sink is reported
    once on stderr and then skipped; enforcement never depends on a sink."""

    def __init__(self, log_path: str | None) -> None:
        self.log_path = log_path
        self._fd: int | None = None
        self._dumps = None
        self._logger = None
        self._reported: set[str] = set()
        if log_path:
            self._open()

    def _open(self) -> None:
        assert self.log_path
        try:
            self._fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self._report("open", f"cannot open decision log {self.log_path!r}: {exc.strerror or exc}")
            return
        self._dumps = _json_module().JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str).encode

    def _report(self, key: str, message: str) -> None:
        if key in self._reported:
            return
        self._reported.add(key)
        try:
            sys.stderr.write(f"sockguard: {message}; decisions are still enforced and sent to the 'sockguard' logger\n")
        except Exception:
            pass

    def logger(self):
        if self._logger is None:
            import logging

            self._logger = logging.getLogger("sockguard")
        return self._logger

    def wants_allow(self) -> bool:
        if self._fd is not None:
            return True
        if "logging" not in sys.modules:  # nothing can be configured to show INFO
            return False
        return self.logger().isEnabledFor(20)

    def emit(self, event: dict[str, Any], message: str, level: int) -> None:
        fd = self._fd
        if fd is not None:
            try:
                os.write(fd, (self._dumps(event) + "\n").encode())  # type: ignore[misc]
            except OSError as exc:
                self._fd = None
                self._report("write", f"writing decision log {self.log_path!r} failed: {exc.strerror or exc}")
        logger = self.logger() if level >= 30 or "logging" in sys.modules else None
        if logger is not None and logger.isEnabledFor(level):
            logger.log(level, "%s", message, extra={"sockguard": event})

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def make_event(
    *,
    operation: str,
    protocol: str,
    host: str | None,
    port: int | None,
    address: str | None,
    decision: str,
    reason: str,
    rule: str | None,
    mode: str,
    caller: str | None,
    detail: str | None = None,
    kind: str = "decision",
) -> dict[str, Any]:
    return {
        "event": kind,
        "ts": round(time.time(), 6),
        "pid": os.getpid(),
        "op": operation,
        "proto": protocol,
        "host": host,
        "port": port,
        "address": address,
        "decision": decision,
        "reason": reason,
        "rule": rule,
        "detail": detail,
        "mode": mode,
        "caller": caller,
        "correlation_id": correlation_id.get(),
    }
