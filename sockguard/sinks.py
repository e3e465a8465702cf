"""Where decision events go: the stdlib logger ``sockguard`` and an optional JSON-lines file.

Nothing here runs on an allowed connect unless a sink wants allow events (``wants_allow``). Enforcement never
depends on a sink: the file (sockguard.logfile) never blocks and reports its outages once; a block that no
configured logging handler would show goes to sockguard.console (lock-free, rate-limited) instead of
``logging.lastResort``. Nothing here catches an exception it did not expect: one raised by a signal handler
while an event is being written reaches the application unchanged.
"""

from __future__ import annotations

import operator
import sys
import time

from sockguard.accelerator import accelerator
from sockguard.console import CONSOLE
from sockguard.events import (
    ALLOWED_LEVEL,
    DECISION_FIELDS,
    DECISION_FIXED,
    REQUEST_FIELDS,
    REQUEST_FIXED,
    REQUEST_TAIL,
    correlation_id,
    decision_event,
    pid,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Hashable
    from typing import Any

    from sockguard.logfile import LogFile


def _json_module() -> Any:
    import json

    global _quote
    _quote = json.encoder.encode_basestring_ascii
    return json


_accelerator = accelerator()
#: The C join of a plain request line (native/sg_accel.c), or None: the f-string in write_request_ok, same bytes.
_request_line: Any = None if _accelerator is None else _accelerator.request_line
_quote: Any = None  # json.encoder.encode_basestring_ascii, once a log file is open
_fixed_fields = operator.itemgetter(*DECISION_FIXED)
_request_fixed = operator.itemgetter(*REQUEST_FIXED)
_request_tail = operator.itemgetter(*REQUEST_TAIL)


def _ts_text(us: int) -> str:
    """``repr(us / 1e6)``, the ``ts`` of an event, from its integer microseconds (a float's repr is the costliest
    part of a line): between 2001 and 2223 every microsecond is a distinct double whose shortest repr is its six
    decimals without trailing zeros. Any other value: repr."""
    if not 1_000_000_000_000_000 <= us < 8_000_000_000_000_000:
        return repr(us / 1e6)
    text = str(us)
    fraction = text[10:]
    if fraction[5] == "0":
        fraction = fraction.rstrip("0") or "0"
    return f"{text[:10]}.{fraction}"


def _value(chunks: Any, value: Any) -> str:
    return "null" if value is None else "".join(chunks(value, 0))


class Sinks:
    """The logger and the optional JSON-lines file. No I/O when built (a State is built under the loader's lock):
    the file opens at :meth:`start` or at its first line."""

    # Slots: the C accelerator reads ``_file``, ``_levels`` and ``_logger`` on every allowed connect (wants_allow).
    __slots__ = (
        "_chunks",
        "_dumps",
        "_file",
        "_last_request",
        "_levels",
        "_logger",
        "_middles",
        "_request_middles",
        "_request_parts",
        "log_path",
        "observer",
    )

    def __init__(
        self,
        log_path: str | None,
        observer: Callable[[dict[str, Any]], None] | None = None,
        *,
        log_special: bool = False,
    ) -> None:
        self.log_path = log_path
        #: Called with every event, whatever the levels (the pytest plugin records blocks through it).
        self.observer = observer
        self._file: LogFile | None = None
        self._dumps = None
        self._chunks = None
        self._middles: dict[tuple[Any, ...], str] = {}
        self._request_middles: dict[tuple[Any, ...], str] = {}
        self._request_parts: dict[tuple[Any, ...], tuple[str, str]] = {}
        #: The last plain request line's key values and text (write_request_ok): keep-alive requests from one place
        #: to one path repeat the very same objects, compared by identity (no hashing, no code run).
        self._last_request: tuple[Any, ...] = (None,) * 8
        self._logger = None
        self._levels: dict[int, bool] | None = None  # the logger's own isEnabledFor memo (see wants_allow)
        if log_path:
            from sockguard.logfile import LogFile

            self._file = LogFile(log_path, special=log_special, report=self._report, on_refused=self._file_refused)
            self._open_encoder()

    def start(self) -> None:
        """Open the decision log now, outside any lock, so a problem with it is reported at activation."""
        file = self._file
        if file is not None:
            file.start()

    def reopen_log(self) -> None:
        """Reopen the decision log's path at the next line (after a rotation; it is noticed within a second
        anyway)."""
        file = self._file
        if file is not None:
            file.reopen()

    def _file_refused(self) -> None:
        self._file = None  # not a file we may write (a FIFO not allowed, a directory): no allow events for it

    def _open_encoder(self) -> None:
        json = _json_module()
        self._dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str).encode
        # The same encoding without JSONEncoder.encode's per-call set-up (a third of the cost of a
        # logged decision); events are flat, so no circular-reference bookkeeping either.
        make = getattr(json.encoder, "c_make_encoder", None)
        if make is not None:
            self._chunks = make(None, str, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)

    def _report(self, key: str, message: str) -> None:
        """The file's outages, recoveries and refusal: one line on stderr each (rate-limited per path and kind)."""
        CONSOLE.say(("decision-log", self.log_path, key), message)

    def logger(self):
        if self._logger is None:
            import logging

            self._logger = logging.getLogger("sockguard")
        return self._logger

    def wants_allow(self) -> bool:
        """Asked on every allowed connect: one dict read once logging is loaded."""
        if self._file is not None:
            return True
        levels = self._levels
        if levels is not None:
            enabled = levels.get(ALLOWED_LEVEL)
            if enabled is not None and not self._logger.disabled:  # type: ignore[attr-defined]
                return enabled
        if "logging" not in sys.modules:  # nothing can be configured to show DEBUG
            return False
        return self._logger_wants(ALLOWED_LEVEL)

    def beyond_file(self, level: int) -> bool:
        """Whether anything but the JSON-lines file takes an event at ``level`` (the logger shows it, or a
        subclass's own emit): only then is the message text needed, and a guard against recursion (a
        logging handler may use the network; a file write cannot)."""
        if self.observer is not None:
            return True
        return self._shown(level)

    def _shown(self, level: int) -> bool:
        """Whether the logger shows an event at ``level`` (or, with logging never imported, the console writer:
        WARNING and above). The default configuration's answer for DEBUG (the ``sockguard`` logger's own level
        unset) without a call."""
        if "logging" not in sys.modules:
            return level >= 30
        if level < 20:  # (_logger_wants's first test)
            logger = self._logger
            if logger is None:
                logger = self.logger()
            if not 0 < logger.level <= level:
                return False
        return self._logger_wants(level)

    def wants(self, level: int) -> bool:
        """Whether an event at ``level`` reaches any sink, so nobody builds one for nothing."""
        if self._file is not None or self.observer is not None:
            return True
        if "logging" not in sys.modules:
            return level >= 30
        return self._logger_wants(level)

    def wants_requests(self, level: int) -> bool:
        """Whether an HTTP request event at ``level`` reaches the JSON-lines file or the logger (the observer
        records decisions, not requests, so it does not count). Asked once per request: a dict read."""
        if self._file is not None:
            return True
        return self._shown(level)

    def emit(self, event: dict[str, Any], message: str, level: int) -> None:
        if self.observer is not None:
            self.observer(event)
        self.write(event)
        self.show(event, message, level)

    def show(self, event: dict[str, Any], message: str, level: int) -> None:
        """The ``sockguard`` logger, or, when the application configured no handler that would take the event,
        what ``logging.lastResort`` would print, through the lock-free, rate-limited console writer."""
        if "logging" not in sys.modules:  # the application never imported logging: nothing is configured
            if level >= 30:
                CONSOLE.say(_console_key(event, message), message)
            return
        if not self._logger_wants(level):
            return
        logger = self._logger
        if level >= 30 and _to_last_resort(logger, level):
            CONSOLE.say(_console_key(event, message), message)
        else:
            logger.log(level, "%s", message, extra={"sockguard": event})  # type: ignore[attr-defined]

    def write(self, event: dict[str, Any]) -> None:
        """Append the event to the JSON-lines file, if there is one: one O_APPEND write, no lock."""
        file = self._file
        if file is not None:
            file.write(self._line(event).encode(), time.time_ns())

    def _line(self, event: dict[str, Any]) -> str:
        """One JSON object and a newline, as JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str)
        writes it."""
        chunks = self._chunks
        if chunks is None:
            return self._dumps(event) + "\n"  # type: ignore[misc]
        if len(event) == len(REQUEST_FIELDS) and event.get("event") == "request":
            line = self._request_line(event)
            if line is not None:
                return line
        elif len(event) == len(DECISION_FIELDS) and event.get("event") == "decision":
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
            middle = "".join(chunks(dict(zip(DECISION_FIXED, fixed, strict=True)), 0))[1:-1]
            if len(self._middles) >= 1024:
                self._middles.clear()
            self._middles[fixed] = middle
        who = _quote(caller) if caller.__class__ is str else _value(chunks, caller)
        tag = "null" if cid is None else _quote(cid) if cid.__class__ is str else _value(chunks, cid)
        return f'{{"event":"decision","ts":{ts!r},"pid":{pid},{middle},"caller":{who},"correlation_id":{tag}}}\n'

    def _request_line(self, event: dict[str, Any]) -> str | None:
        """A request event as :meth:`_line` writes it (fast path), or None."""
        try:
            fixed = _request_fixed(event)
            tail = _request_tail(event)
        except KeyError:  # not the layout of sockguard/http/events.py
            return None
        return self._request_text(event["ts"], event["pid"], fixed, tail)

    def _request_text(self, ts: Any, pid: Any, fixed: tuple[Any, ...], tail: tuple[Any, ...]) -> str | None:
        """One request event as a JSON line, its fields in ``REQUEST_FIELDS`` order, with the ones that repeat for
        every request to one path on one connection (``REQUEST_FIXED``) encoded once. None if a value is unusual:
        the generic encoding then writes it."""
        chunks = self._chunks
        status, error, reason, duration, hop, previous, caller, cid = tail
        if (
            chunks is None
            or not (ts.__class__ is float and ts - ts == 0.0 and pid.__class__ is int)
            or not (duration.__class__ is float and duration - duration == 0.0 and hop.__class__ is int)
            or not (status is None or status.__class__ is int)
        ):
            return None
        try:
            middle = self._request_middles.get(fixed)
            if middle is None:
                middle = "".join(chunks(dict(zip(REQUEST_FIXED, fixed, strict=True)), 0))[1:-1]
                if len(self._request_middles) >= 1024:
                    self._request_middles.clear()
                self._request_middles[fixed] = middle
            quote = _quote  # (str only: anything else raises TypeError, and the generic encoding writes it)
            return (
                f'{{"event":"request","ts":{ts!r},"pid":{pid},{middle},'
                f'"status":{"null" if status is None else status},'
                f'"error":{"null" if error is None else quote(error)},'
                f'"reason":{"null" if reason is None else quote(reason)},'
                f'"duration_ms":{duration!r},"redirect_hop":{hop},'
                f'"redirected_from":{"null" if previous is None else quote(previous)},'
                f'"caller":{"null" if caller is None else quote(caller)},'
                f'"correlation_id":{"null" if cid is None else quote(cid)}}}\n'
            )
        except TypeError:  # an unhashable fixed value, or a text field that is not a str
            return None

    def write_request(self, ts: float, fixed: tuple[Any, ...], tail: tuple[Any, ...]) -> None:
        """Append a request event given its ``REQUEST_FIXED`` and ``REQUEST_TAIL`` values, without building the
        event dict: the path of every request when the JSON-lines file is the only sink that wants it."""
        file = self._file
        if file is None:
            return
        line = self._request_text(ts, pid[0], fixed, tail)
        if line is None:
            self.write(dict(zip(REQUEST_FIELDS, ("request", ts, pid[0], *fixed, *tail), strict=True)))
        else:
            file.write(line.encode(), time.time_ns())

    def write_request_ok(
        self,
        us: int,
        fixed: tuple[Any, ...],
        address: Any,
        rule: Any,
        status: Any,
        duration_us: int,
        caller: Any,
        cid: Any,
    ) -> None:
        """:meth:`write_request` for the common event: a response came (no error, no redirect hop). ``fixed``: the
        first seven ``REQUEST_FIXED`` values; ``us``: ``ts`` in integer microseconds; ``duration_us``: the duration
        in integer microseconds (``duration_ms`` is ``duration_us / 1000``). All but those two numbers repeat for
        every request from one place in the code to one path: that text is cached, so a line is four pieces
        joined (by the C accelerator when it is on: ``_accel.request_line``, the same bytes)."""
        file = self._file
        if file is None:
            return
        last = self._last_request
        if (
            last[0] is fixed
            and last[1] is address
            and last[2] is rule
            and last[3] is status
            and last[4] is caller
            and last[5] is cid
            and last[6] is pid[0]
        ):
            parts = last[7]
        else:
            parts = key = None
            if (status is None or status.__class__ is int) and (cid is None or cid.__class__ is str):
                key = (fixed, address, rule, status, caller, cid, pid[0])
                try:
                    parts = self._request_parts.get(key)
                except TypeError:  # an unhashable value: the generic encoding writes it
                    key = None
            if parts is None:
                parts = self._request_parts_for(key, fixed, address, rule, status, caller, cid)
                if parts is None:
                    tail = (status, None, None, duration_us / 1000, 0, None, caller, cid)
                    self.write_request(us / 1e6, (*fixed, address, rule), tail)
                    return
            if key is not None:
                self._last_request = (*key, parts)
        line = None if _request_line is None else _request_line(us, parts[0], duration_us, parts[1])
        if line is None:
            line = f'{{"event":"request","ts":{_ts_text(us)}{parts[0]}{duration_us / 1000!r}{parts[1]}'.encode()
        file.write(line, (us + duration_us) * 1000)  # (the wall clock now, near enough for the file's checks)

    def _request_parts_for(
        self, key: Any, fixed: tuple[Any, ...], address: Any, rule: Any, status: Any, caller: Any, cid: Any
    ) -> tuple[str, str] | None:
        """The text of a request line around its ``duration_ms`` (after ``ts``; from ``redirect_hop`` on), as
        :meth:`_request_text` writes it, cached under ``key``; None if a value is unusual."""
        line = self._request_text(0.0, pid[0], (*fixed, address, rule), (status, None, None, 0.5, 0, None, caller, cid))
        if line is None:
            return None
        head, _, tail = line.partition(',"duration_ms":0.5,')
        parts = (head[len('{"event":"request","ts":0.0') :] + ',"duration_ms":', "," + tail)
        if key is not None:
            if len(self._request_parts) >= 1024:
                self._request_parts.clear()
            self._request_parts[key] = parts
        return parts

    def write_decision(self, fixed: tuple[Any, ...], caller: str | None) -> None:
        """Append a decision given its per-destination fields (in ``DECISION_FIXED`` order) without building the
        event dict: the allowed-connect path when the JSON-lines file is the only sink."""
        file = self._file
        if file is None:
            return
        now = time.time_ns()
        line = self._decision_line(now // 1000 / 1e6, pid[0], fixed, caller, correlation_id.get())
        if line is None:
            self.write(decision_event(fixed, caller))
            return
        file.write(line.encode(), now)

    def _logger_wants(self, level: int) -> bool:
        if level < 20:
            # Allowed traffic (DEBUG) reaches the logger only when the ``sockguard`` logger itself is set to DEBUG:
            # an application (or a test harness such as pytest's caplog) that turns on DEBUG for everything must
            # not start seeing a line per connection. One attribute read.
            own = self.logger().level
            if not 0 < own <= level:
                return False
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
        """Close the decision log (only when no thread can still be writing to it)."""
        file, self._file = self._file, None
        if file is not None:
            file.close()


def _console_key(event: dict[str, Any], message: str) -> Hashable:
    """One console line per blocked destination per interval; any other event (alerts, warnings) by its text."""
    if event.get("event") == "decision":
        return ("decision", event.get("op"), event.get("host"), event.get("address"), event.get("port"))
    return message


def _to_last_resort(logger: Any, level: int) -> bool:
    """Whether logging would hand this record to its stock ``lastResort`` handler: no handler for the logger or
    an ancestor. (An application that replaced ``logging.lastResort``, or set it to None, gets what it chose.)"""
    logging: Any = sys.modules["logging"]
    last = logging.lastResort
    return (
        last is not None
        and level >= last.level
        and last is getattr(logging, "_defaultLastResort", None)
        and not logger.hasHandlers()
    )
