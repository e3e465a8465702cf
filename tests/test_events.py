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
