"""What the plugin records: one :class:`Blocked` per blocked attempt, grouped for the summary and the report."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest


class SockguardWarning(pytest.PytestWarning):
    """A blocked attempt was swallowed by the code under test (``--sockguard-swallowed=warn``)."""


# --- what the plugin records ---------------------------------------------------------------------


@dataclasses.dataclass
class Blocked:
    """One blocked (or, in monitor mode, would-block) attempt, and where in the run it happened."""

    nodeid: str  # the test (or collector) it is charged to; "" for the session
    when: str  # "setup" | "call" | "teardown" | "collect" | "session"
    where: str  # e.g. "call", "setup of fixture 'db' (session scope)"
    operation: str  # "connect" | "send" | "resolve"
    protocol: str
    host: str | None
    port: int | None
    address: str | None
    decision: str  # "block" | "would-block"
    reason: str
    rule: str | None
    explanation: str
    caller: str | None
    suggestion: str | None
    pid: int
    child: bool = False
    expected: bool = False
    count: int = 1
    checked: int = 0  # times a pytest.raises in the test caught it (or an exception chained from it)
    compat: bool = False  # under pytest-socket's semantics: the advice names its markers and options

    @property
    def destination(self) -> str:
        host = self.host if self.host is not None else self.address
        if host is None:
            return "?"
        text = f"[{host}]" if ":" in host and self.port is not None else host
        text = f"{text}:{self.port}" if self.port is not None else text
        if self.address and self.host and self.address != self.host:
            text += f" ({self.address})"
        return text

    @property
    def action(self) -> str:
        if self.reason == "socket-disabled":
            return f"creation of {self.host}" if self.operation == "socket" else str(self.host)
        verb = {"connect": "connection to", "send": "datagram to", "resolve": "DNS lookup of"}
        return f"{verb.get(self.operation, self.operation)} {self.destination}"

    def advice(self) -> str:
        if self.reason == "denied":
            return f"it matches the deny rule {self.rule!r}; remove or narrow that rule to allow it"
        if self.reason == "unix-socket":
            return (
                "AF_UNIX is blocked here: drop --sockguard-no-unix / sockguard_allow_unix = false "
                "(pytest-socket style: --allow-unix-socket)"
            )
        if self.reason == "socket-disabled":
            return (
                "sockets are disabled here: @pytest.mark.enable_socket or the socket_enabled fixture enables them "
                "(--allow-unix-socket: AF_UNIX)"
            )
        if self.reason == "config-error":
            return "fix the sockguard configuration"
        if not self.suggestion:
            return "no allow rule can permit it"
        rule = self.suggestion
        if self.compat:
            host = self.address or self.host
            return (
                f"to allow it, list {host!r} in @pytest.mark.allow_hosts([...]) or --allow-hosts, or use "
                f"@pytest.mark.enable_socket; sockguard's own rule: @pytest.mark.sockguard(allow=[{rule!r}])"
            )
        return (
            f"to allow it, add the rule {rule!r}: --sockguard-allow={rule}, a line in the sockguard_allow ini "
            f"option, or @pytest.mark.sockguard(allow=[{rule!r}])"
        )

    def describe(self) -> str:
        head = "would block" if self.decision == "would-block" else "blocked"
        times = f" ({self.count} times)" if self.count > 1 else ""
        child = f" in child process {self.pid}" if self.child else ""
        return (
            f"{head} {self.action} ({self.protocol}){times}{child}: {self.explanation}\n"
            f"    during {self.where}, called from {self.caller or 'unknown code'}\n"
            f"    {self.advice()}"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _explain(reason: str, rule: str | None, detail: str | None) -> str:
    from sockguard.policy import Decision

    return Decision(False, reason, rule, detail).explain()


def _group(records: list[Blocked]) -> list[list[Blocked]]:
    """Records by destination, blocks before would-blocks."""
    groups: dict[tuple[Any, ...], list[Blocked]] = {}
    for record in records:
        key = (record.decision, record.operation, record.host or record.address, record.port)
        groups.setdefault(key, []).append(record)
    return sorted(groups.values(), key=lambda g: (g[0].decision != "block", g[0].destination))


def _suggest(state: Any, event: dict[str, Any]) -> str | None:
    """The rule that would allow the destination, as the guard's own messages suggest it."""
    if state is None:
        return None
    try:
        from sockguard.policy import Decision
        from sockguard.refusal import suggestion

        decision = Decision(False, event.get("reason") or "", event.get("rule"), event.get("detail"))
        return suggestion(state, decision, event.get("host"), event.get("port"), event.get("address"))
    except Exception:
        return None
