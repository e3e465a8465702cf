"""Where decision events go: the stdlib logger ``sockguard`` and an optional JSON-lines file.

Nothing here runs on an allowed connect unless a sink wants allow events (``wants_allow``). A failing
file sink is reported once on stderr and skipped; enforcement never depends on a sink.
"""

from __future__ import annotations

import operator
import os
import sys
import time

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
    from collections.abc import Callable
    from typing import Any


def _json_module() -> Any:
    import json

    global _quote
    _quote = json.encoder.encode_basestring_ascii
    return json


_quote: Any = None  # json.encoder.encode_basestring_ascii, once a log file is open
_fixed_fields = operator.itemgetter(*DECISION_FIXED)
_request_fixed = operator.itemgetter(*REQUEST_FIXED)
_request_tail = operator.itemgetter(*REQUEST_TAIL)


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
        self._request_middles: dict[tuple[Any, ...], str] = {}
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
        self._open_encoder()

    def _open_encoder(self) -> None:
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
        return self.observer is not None or ((level >= 30 or "logging" in sys.modules) and self._logger_wants(level))

    def wants(self, level: int) -> bool:
        """Whether an event at ``level`` reaches any sink, so nobody builds one for nothing."""
        if self._fd is not None or self.observer is not None:
            return True
        if level < 30 and "logging" not in sys.modules:
            return False
        return self._logger_wants(level)

    def wants_requests(self, level: int) -> bool:
        """Whether an HTTP request event at ``level`` reaches the JSON-lines file or the logger (the observer
        records decisions, not requests, so it does not count). Asked once per request: a dict read."""
        if self._fd is not None:
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
        if self._fd is not None:
            self._append(self._line(event))

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
        if self._fd is None:
            return
        line = self._request_text(ts, pid[0], fixed, tail)
        if line is None:
            self.write(dict(zip(REQUEST_FIELDS, ("request", ts, pid[0], *fixed, *tail), strict=True)))
        else:
            self._append(line)

    def write_decision(self, fixed: tuple[Any, ...], caller: str | None) -> None:
        """Append a decision given its per-destination fields (in ``DECISION_FIXED`` order) without building the
        event dict: the allowed-connect path when the JSON-lines file is the only sink."""
        fd = self._fd
        if fd is None:
            return
        line = self._decision_line(time.time_ns() // 1000 / 1e6, pid[0], fixed, caller, correlation_id.get())
        if line is None:
            self.write(decision_event(fixed, caller))
            return
        try:  # (inlined _append: this runs for every allowed connect while the log is on)
            os.write(fd, line.encode())
        except OSError as exc:
            self._fd = None
            self._report("write", f"writing decision log {self.log_path!r} failed: {exc.strerror or exc}")

    def _append(self, line: str) -> None:
        """One O_APPEND write of a formatted line, no lock."""
        fd = self._fd
        if fd is None:
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
