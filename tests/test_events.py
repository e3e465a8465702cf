"""The decision event's shape, and the JSON-lines sink's fast path that relies on it."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from sockguard.events import DECISION_FIELDS, DECISION_FIXED, make_event
from sockguard.sinks import Sinks

TEXT = st.one_of(st.none(), st.text(max_size=20))


def _event(**overrides: object) -> dict[str, object]:
    fields = dict(
        operation="connect", protocol="tcp", host="api.test", port=443, address="203.0.113.7", decision="allow",
        reason="allowed-name", rule="api.test", mode="enforce", caller="app:main:1", detail=None,
    )  # fmt: skip
    fields.update(overrides)
    return make_event(**fields)  # type: ignore[arg-type]


def test_make_event_writes_exactly_the_declared_fields_in_order() -> None:
    """The sink's fast path formats DECISION_FIELDS; a field added to make_event alone must fail here."""
    assert tuple(_event()) == DECISION_FIELDS
    assert set(DECISION_FIXED) <= set(DECISION_FIELDS)


@given(
    host=TEXT,
    port=st.one_of(st.none(), st.integers(0, 65535)),
    rule=TEXT,
    detail=TEXT,
    caller=TEXT,
    ts=st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=4e9),
)
def test_fast_line_is_the_generic_encoding(
    tmp_path_factory: object, host: str | None, port: int | None, rule: str | None, detail: str | None,
    caller: str | None, ts: float,
) -> None:  # fmt: skip
    sinks = Sinks(None)
    sinks._open_encoder()
    event = _event(host=host, port=port, rule=rule, detail=detail, caller=caller)
    event["ts"] = ts
    fast = sinks._line(event)
    generic = json.dumps(event, ensure_ascii=True, separators=(",", ":"), default=str) + "\n"
    assert fast == generic
    assert json.loads(fast) == event


@given(
    host=st.text(max_size=20),
    port=st.one_of(st.none(), st.integers(0, 65535)),
    path=st.text(max_size=30),
    status=st.one_of(st.none(), st.integers(100, 599)),
    texts=st.lists(TEXT, min_size=7, max_size=7),
    duration=st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=1e7),
    hop=st.integers(0, 30),
)
def test_request_line_is_the_generic_encoding(
    host: str, port: int | None, path: str, status: int | None, texts: list[str | None], duration: float, hop: int
) -> None:
    """The request event's fast line (sockguard/http/events.py writes through it) is the generic JSON encoding."""
    from sockguard.events import REQUEST_FIELDS, REQUEST_FIXED, REQUEST_TAIL

    proxy, address, rule, error, reason, previous, caller = texts
    fixed = ("http.client", "GET", "https", host, port, path, proxy, address, rule)
    tail = (status, error, reason, duration, hop, previous, caller, "req-1")
    event = dict(zip(REQUEST_FIELDS, ("request", 1763748153.482211, 4121, *fixed, *tail), strict=True))
    assert tuple(event) == ("event", "ts", "pid", *REQUEST_FIXED, *REQUEST_TAIL)
    sinks = Sinks(None)
    sinks._open_encoder()
    generic = json.dumps(event, ensure_ascii=True, separators=(",", ":"), default=str) + "\n"
    assert sinks._request_line(event) == generic
    assert sinks._line(event) == generic
    assert json.loads(sinks._request_text(event["ts"], event["pid"], fixed, tail) or "") == event


def test_write_request_appends_the_same_line(tmp_path: object) -> None:
    from pathlib import Path

    from sockguard.events import REQUEST_FIELDS, pid

    log = Path(str(tmp_path)) / "log.jsonl"
    sinks = Sinks(str(log))
    fixed = ("httpcore", "POST", "http", "api.test", 80, "/v1", None, "203.0.113.7", "api.test")
    tail = (503, None, None, 12.5, 1, "http://api.test/old", "app:main:3", None)
    sinks.write_request(1763748153.5, fixed, tail)
    sinks.write_request(float("nan"), fixed, tail)  # unusual value: written by the generic encoder
    sinks.close()
    first, second = log.read_text().splitlines()
    assert json.loads(first) == dict(zip(REQUEST_FIELDS, ("request", 1763748153.5, pid[0], *fixed, *tail), strict=True))
    assert json.loads(second)["ts"] != json.loads(second)["ts"]  # NaN survived the generic path


@given(
    us=st.one_of(st.integers(0, 2**63), st.integers(1_000_000_000_000_000, 8_000_000_000_000_000)),
    path=st.text(max_size=30),
    status=st.one_of(st.none(), st.integers(100, 599)),
    texts=st.lists(TEXT, min_size=4, max_size=4),
    duration_us=st.one_of(st.integers(0, 10**7), st.integers(0, 2**64)),
)
def test_write_request_ok_writes_the_generic_encoding(
    tmp_path_factory: object, us: int, path: str, status: int | None, texts: list[str | None], duration_us: int
) -> None:
    """The common request event (a response, no redirect hop) is joined from cached text around its ts and
    duration (``Sinks.write_request_ok``, ts from integer microseconds): byte for byte the generic encoding, also
    the second time (from the cache)."""
    from pathlib import Path

    from sockguard.events import REQUEST_FIELDS, pid

    proxy, address, rule, caller = texts
    log = Path(str(tmp_path_factory.mktemp("ok"))) / "log.jsonl"  # type: ignore[attr-defined]
    sinks = Sinks(str(log))
    fixed = ("http.client", "GET", "https", "api.test", 443, path, proxy)
    for _ in range(2):
        sinks.write_request_ok(us, fixed, address, rule, status, duration_us, caller, "req-1")
    sinks.close()
    event = dict(zip(REQUEST_FIELDS, ("request", us / 1e6, pid[0], *fixed, address, rule, status, None, None,
                                      duration_us / 1000, 0, None, caller, "req-1"), strict=True))  # fmt: skip
    generic = json.dumps(event, ensure_ascii=True, separators=(",", ":"), default=str) + "\n"
    assert log.read_text() == generic * 2


def test_find_caller_survives_an_exception_inside_its_frame_generator() -> None:
    """find_caller reads frames through a generator (no sys._getframe audit event); an exception a signal handler
    raises while it runs ends that generator. The next search still finds the caller (and a new generator)."""
    from sockguard import caller

    def app() -> str | None:
        return caller.find_caller(1)

    assert app() == f"{__name__}:app:{app.__code__.co_firstlineno + 1}"
    try:
        caller._resume.__self__.throw(KeyboardInterrupt)  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        pass
    assert app() == app() == f"{__name__}:app:{app.__code__.co_firstlineno + 1}"
