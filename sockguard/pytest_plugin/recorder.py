"""Recording every blocked attempt, even one the code under test swallowed, against the part of the run it hit.

The guard tells the plugin about each refusal through its observer; the plugin keeps one :class:`Blocked` per
distinct attempt and place (repeats only count), charged to the test and phase in progress, so a test's report can
name what it tried and the session's summary can group everything by destination. What the test expected is
marked here too: a block inside ``sockguard.expect_blocked()``, or one a ``pytest.raises`` caught (so that neither
fails the test as swallowed).
"""

from __future__ import annotations

import os
from typing import Any

from sockguard.pytest_plugin.records import Blocked, _explain, _suggest

_MAX_RECORDS = 10000


class Recorder:
    """The records of one pytest config (the controller's include its workers')."""

    def __init__(self) -> None:
        self.records: list[Blocked] = []
        self._index: dict[tuple[Any, ...], Blocked] = {}
        self.by_node: dict[str, list[Blocked]] = {}
        self.expecting: list[list[Blocked]] = []  # one list per open expect_blocked() block

    def record(
        self, event: dict[str, Any], state: Any, context: tuple[str, str, str], *, compat: bool, child: bool
    ) -> None:
        """A decision event that refused something (``state``: the guard State that decided, for the suggested
        rule), charged to ``context`` (node id, phase, where); ``compat``: pytest-socket's semantics in force."""
        op, address = event.get("op"), event.get("address")
        if op == "resolve" and address is not None:
            return  # an answer dropped from a lookup, not an attempt (the lookup raises if none is left)
        nodeid, when, where = context
        expected = bool(self.expecting)
        key: tuple[Any, ...] = (nodeid, when, where, op, event.get("host"), event.get("port"), address)
        key += (event.get("decision"), event.get("caller"), child, expected)
        found = self._index.get(key)
        if found is not None:
            found.count += 1
            return
        if len(self.records) >= _MAX_RECORDS:
            return
        record = Blocked(
            nodeid=nodeid,
            when=when,
            where=where,
            operation=str(op),
            protocol=str(event.get("proto")),
            host=event.get("host"),
            port=event.get("port"),
            address=address,
            decision=str(event.get("decision")),
            reason=str(event.get("reason")),
            rule=event.get("rule"),
            explanation=event.get("explanation")
            or _explain(str(event.get("reason")), event.get("rule"), event.get("detail")),
            caller=event.get("caller"),
            suggestion=_suggest(state, event),
            pid=int(event.get("pid") or os.getpid()),
            child=child,
            expected=expected,
            compat=compat,
        )
        self._index[key] = record
        self.records.append(record)
        self.by_node.setdefault(nodeid, []).append(record)
        for found_list in self.expecting:
            found_list.append(record)

    def add_worker_records(self, records: list[dict[str, Any]]) -> None:
        """The records an xdist worker sent back with its output."""
        for data in records:
            record = Blocked(**data)
            self.records.append(record)
            self.by_node.setdefault(record.nodeid, []).append(record)

    def caught(self, exc: BaseException, nodeid: str, when: str) -> None:
        """``pytest.raises`` in the test caught ``exc``: the blocks in its cause/context chain were expected."""
        from sockguard.errors import EgressBlocked

        seen: set[int] = set()
        todo: list[BaseException | None] = [exc]
        while todo:
            current = todo.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            if isinstance(current, EgressBlocked):
                for record in self.by_node.get(nodeid, ()):
                    if (
                        record.when == when
                        and record.checked < record.count
                        and (
                            record.operation,
                            record.host,
                            record.port,
                            record.address,
                        )
                        == (current.operation, current.host, current.port, current.address)
                    ):
                        record.checked += 1
                        break
            todo += [current.__cause__, current.__context__, *getattr(current, "exceptions", ())]
