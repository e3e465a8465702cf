"""Decision events: the application caller, and the two sinks.

Sinks: the stdlib logger ``sockguard`` (blocks at WARNING, allows at INFO) and
a JSON-lines file. Nothing here runs on an allowed connect unless a sink wants
allow events; the stack walk and the formatting happen only then.
"""

from __future__ import annotations

import contextvars
import operator
import os
import sys
import time
from typing import Any

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

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
        "outcome",
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
_STDLIB_NAMES = frozenset(sys.stdlib_module_names)
_plumbing_modules: dict[str, bool] = {}


def _module_is_plumbing(name: str, module_globals: dict[str, Any]) -> bool:
    top = name.partition(".")[0]
    if top in _PLUMBING:
        return True
    filename = module_globals.get("__file__")
    if isinstance(filename, str):
        return filename.startswith(_STDLIB_DIR) and "-packages" not in filename
    return top in _STDLIB_NAMES or top.startswith("_frozen")  # frozen and built-in modules


def find_caller(depth: int = 2) -> str | None:
    """``module:function:line`` of the first frame outside sockguard, the
    standard library and known client libraries."""
    # Reading frame.f_code raises an audit event (object.__getattr__) through every hook in the
    # process, so frames are judged by their module (f_globals raises none); only the caller's
    # own frame reads f_code, for the function name.
    try:
        frame: Any = sys._getframe(depth)
    except ValueError:
        return None
    cache = _plumbing_modules
    last = None
    while frame is not None:
        module_globals = frame.f_globals
        name = module_globals.get("__name__")
        if name.__class__ is not str:
            name = ""
        plumbing = cache.get(name)
        if plumbing is None:
            plumbing = _module_is_plumbing(name, module_globals)
            if len(cache) < 4096:
                cache[name] = plumbing
        if not plumbing:
            return f"{module_globals.get('__name__', '?')}:{frame.f_code.co_name}:{frame.f_lineno}"
        last = frame
        frame = frame.f_back
    if last is not None:  # only plumbing on the stack (e.g. a resolver thread)
        return f"{last.f_globals.get('__name__', '?')}:{last.f_code.co_name}:{last.f_lineno}"
    return None


def _json_module():
    import json

    global _quote
    _quote = json.encoder.encode_basestring_ascii
    return json


_quote: Any = None  # json.encoder.encode_basestring_ascii, once a log file is open
#: make_event's fields that stay the same for every connection to one destination, in order.
_FIXED = ("op", "proto", "host", "port", "address", "decision", "reason", "rule", "detail", "mode")
_FIXED_PARAMS = ("operation", "protocol", "host", "port", "address", "decision", "reason", "rule", "detail", "mode")
_fixed_fields = operator.itemgetter(*_FIXED)


def _value(chunks: Any, value: Any) -> str:
    return "null" if value is None else "".join(chunks(value, 0))


class Sinks:
    """The logger and the optional JSON-lines file. A failing sink is reported
    once on stderr and then skipped; enforcement never depends on a sink."""

    def __init__(self, log_path: str | None, observer: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.log_path = log_path
        #: Called with every event, whatever the levels (the pytest plugin records blocks through it).
        self.observer = observer
        self._fd: int | None = None
        self._dumps = None
        self._chunks = None
        self._middles: dict[tuple[Any, ...], str] = {}
        self._logger = None
        self._levels: dict[int, bool] | None = None  # the logger's own isEnabledFor memo (see wants_allow)
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
        json = _json_module()
        self._dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str).encode
        # The same encoding without JSONEncoder.encode's per-call set-up (a third of the cost of a
        # logged decision); events are flat, so no circular-reference bookkeeping either.
        make = getattr(json.encoder, "c_make_encoder", None)
        if make is not None:
            self._chunks = make(None, str, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)

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
        """Asked on every allowed connect: one dict read once logging is loaded."""
        if self._fd is not None:
            return True
        levels = self._levels
        if levels is not None:
            enabled = levels.get(20)
            if enabled is not None and not self._logger.disabled:  # type: ignore[attr-defined]
                return enabled
        if "logging" not in sys.modules:  # nothing can be configured to show INFO
            return False
        return self._logger_wants(20)

    def beyond_file(self, level: int) -> bool:
        """Whether anything but the JSON-lines file takes an event at ``level`` (the logger shows it, or a
        subclass's own emit): only then is the message text needed, and a guard against recursion (a
        logging handler may use the network; a file write cannot)."""
        return self.observer is not None or ((level >= 30 or "logging" in sys.modules) and self._logger_wants(level))

    def wants(self, level: int) -> bool:
        """Whether an event at ``level`` reaches any sink, so nobody builds one for nothing."""
        if self._fd is not None or self.observer is not None:
            return True
        if level < 30 and "logging" not in sys.modules:
            return False
        return self._logger_wants(level)

    def emit(self, event: dict[str, Any], message: str, level: int) -> None:
        if self.observer is not None:
            self.observer(event)
        self.write(event)
        if (level >= 30 or "logging" in sys.modules) and self._logger_wants(level):
            self._logger.log(level, "%s", message, extra={"sockguard": event})  # type: ignore[attr-defined]

    def write(self, event: dict[str, Any]) -> None:
        """Append the event to the JSON-lines file, if one is open: one O_APPEND write, no lock."""
        fd = self._fd
        if fd is not None:
            try:
                os.write(fd, self._line(event).encode())
            except OSError as exc:
                self._fd = None
                self._report("write", f"writing decision log {self.log_path!r} failed: {exc.strerror or exc}")

    def _line(self, event: dict[str, Any]) -> str:
        """One JSON object and a newline, as JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str)
        writes it."""
        chunks = self._chunks
        if chunks is None:
            return self._dumps(event) + "\n"  # type: ignore[misc]
        if len(event) == 15 and event.get("event") == "decision":
            try:
                fixed = _fixed_fields(event)
            except KeyError:  # not make_event's layout
                return "".join(chunks(event, 0)) + "\n"
            line = self._decision_line(
                event.get("ts"), event.get("pid"), fixed, event.get("caller"), event.get("correlation_id")
            )
            if line is not None:
                return line
        return "".join(chunks(event, 0)) + "\n"

    def _decision_line(self, ts: Any, pid: Any, fixed: tuple[Any, ...], caller: Any, cid: Any) -> str | None:
        """A decision event repeats all but four of its fields for every connection to the same destination:
        their encoding is cached, which halves the cost of a logged decision. None if a value is unusual."""
        chunks = self._chunks
        if chunks is None or not (ts.__class__ is float and ts - ts == 0.0 and pid.__class__ is int):
            return None  # (finite floats only: their repr is their JSON)
        try:
            middle = self._middles.get(fixed)
        except TypeError:  # an unhashable value
            return None
        if middle is None:
            middle = "".join(chunks(dict(zip(_FIXED, fixed, strict=True)), 0))[1:-1]
            if len(self._middles) >= 1024:
                self._middles.clear()
            self._middles[fixed] = middle
        who = _quote(caller) if caller.__class__ is str else _value(chunks, caller)
        tag = "null" if cid is None else _quote(cid) if cid.__class__ is str else _value(chunks, cid)
        return f'{{"event":"decision","ts":{ts!r},"pid":{pid},{middle},"caller":{who},"correlation_id":{tag}}}\n'

    def write_decision(self, fixed: tuple[Any, ...], caller: str | None) -> None:
        """Append a decision given its per-destination fields (in ``_FIXED`` order) without building the
        event dict: the allowed-connect path when the JSON-lines file is the only sink."""
        fd = self._fd
        if fd is None:
            return
        line = self._decision_line(time.time_ns() // 1000 / 1e6, _pid[0], fixed, caller, correlation_id.get())
        if line is None:
            self.write(decision_event(fixed, caller))
            return
        try:
            os.write(fd, line.encode())
        except OSError as exc:
            self._fd = None
            self._report("write", f"writing decision log {self.log_path!r} failed: {exc.strerror or exc}")

    def _logger_wants(self, level: int) -> bool:
        levels = self._levels
        if levels is not None:
            enabled = levels.get(level)
            if enabled is not None and not self._logger.disabled:  # type: ignore[attr-defined]
                return enabled
        logger = self.logger()
        enabled = logger.isEnabledFor(level)
        # isEnabledFor memoises per level in ``logger._cache``, which logging clears in place on every
        # level change (setLevel, disable, dictConfig): reading it directly is as current as calling it.
        self._levels = getattr(logger, "_cache", None)
        return enabled

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


_pid = [os.getpid()]  # getpid() is a system call; forks update it
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


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
        "ts": time.time_ns() // 1000 / 1e6,  # microseconds; round(time.time(), 6) costs 5x more
        "pid": _pid[0],
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


def decision_event(fixed: tuple[Any, ...], caller: str | None) -> dict[str, Any]:
    """make_event from the per-destination fields in ``_FIXED`` order."""
    return make_event(**dict(zip(_FIXED_PARAMS, fixed, strict=True)), caller=caller)
