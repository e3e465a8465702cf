"""``socket.getaddrinfo`` of an allowed name: the guard's overhead, with and without the resolver.

``stub``: the C resolver is replaced, in every variant alike, by a function that raises the same audit event
(``socket.getaddrinfo``) and returns the answer the real resolver gave at set-up. What remains is everything
Python-side: the guard's wrapper, its audit handler, the decision cache, filtering the answers and recording
which name each address came from. That is the "guard overhead excluding the resolver" target.
``real``: the real ``getaddrinfo`` (the name is in /etc/hosts: glibc reads a file, no DNS query), for the ratio.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from benchmarks import variants
from benchmarks.connect import US
from benchmarks.harness import Context, Row, Stats, Workers, interleave, paired, verdict
from benchmarks.rulesets import FILLER
from benchmarks.worker import Bench, Elapsed, elapsed, stamp


class _StubResolver:
    """Stands in for the ``_socket`` module inside ``socket.getaddrinfo`` during a ``stub`` batch."""

    def __init__(self, real: Any, answers: dict[tuple[Any, ...], list[Any]]) -> None:
        self._real = real
        self._answers = answers

    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0):
        sys.audit("socket.getaddrinfo", host, port, family, type, proto)
        return self._answers[(host, port, family, type, proto, flags)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def setup(variant: str, *, name: str, port: int = 443) -> Bench:
    args = (name, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    real_answer = socket.getaddrinfo(*args)  # before any variant: the plain resolver's answer, recorded
    answers = {(name, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, 0): [tuple(a) for a in real_answer]}
    state = variants.apply(variant, [name, *FILLER], allow_loopback=True)
    stub = _StubResolver(socket._socket, answers)  # type: ignore[attr-defined,assignment]
    getaddrinfo = socket.getaddrinfo
    checked = getaddrinfo(*args)
    if sorted(map(str, checked)) != sorted(map(str, real_answer)):
        raise RuntimeError(f"{variant}: getaddrinfo answered {checked}, expected {real_answer}")

    def real(n: int) -> Elapsed:
        start = stamp()
        for _ in range(n):
            getaddrinfo(*args)
        return elapsed(start)

    def stubbed(n: int) -> Elapsed:
        original = socket._socket  # type: ignore[attr-defined,assignment]
        socket._socket = stub  # type: ignore[attr-defined,assignment]
        try:
            start = stamp()
            for _ in range(n):
                getaddrinfo(*args)
            return elapsed(start)
        finally:
            socket._socket = original  # type: ignore[attr-defined,assignment]

    info = {"answers": len(real_answer), "guard": state is not None}
    return Bench({"real": real, "stub": stubbed}, setup_info=info)


def run(ctx: Context) -> list[Row]:
    name = "static.netlab.test" if ctx.netns else "localhost"
    names = ("bare", "guard")
    with Workers("resolve", {v: {"name": name} for v in names}, copies=ctx.pick(2, 1)) as workers:
        stub = interleave(workers, "stub", n=ctx.pick(5000, 1000), rounds=ctx.pick(30, 5))
        real = interleave(workers, "real", n=ctx.pick(500, 200), rounds=ctx.pick(20, 4))
        answers = next(iter(workers.values())).setup_info["answers"]
    rows = []
    for key, samples, label, target in (
        ("stub", stub, "getaddrinfo of an allowed name: guard overhead (resolver stubbed)", "added ≤ 2 µs"),
        ("real", real, "getaddrinfo of an allowed name from /etc/hosts (real resolver)", "info"),
    ):
        added, ratio = paired(samples["guard"], samples["bare"], US)
        row = Row(
            f"getaddrinfo/{key}",
            label,
            target,
            "µs",
            baseline=Stats.of(samples["bare"], US),
            guarded=Stats.of(samples["guard"], US),
            added=added,
            ratio=ratio,
            note=f"{name!r}, {answers} answers (SOCK_STREAM, AF_UNSPEC)",
        )
        if key == "stub":
            row.verdict = verdict(added <= 2.0)
        rows.append(row)
    return rows
