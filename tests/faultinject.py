"""Deliver an exception where a signal handler's exception can really land, deterministically.

CPython runs a Python signal handler at the "eval breaker" checks: when a call returns (Python or C) and when a
function starts. An exception the handler raises then comes out of that call. ``raise_at(k)`` raises
:class:`Injected` at exactly the ``k``-th such point inside sockguard's own code (a call made from a sockguard
frame has just returned, or a sockguard function has just started), through ``sys.setprofile``: the same place,
the same frame, the same exception-table entry as a real ``SIGALRM`` handler that raises. Sweeping ``k`` from 0
until nothing fires covers every point of an operation (the reproducers of issue 18 did this by hand).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import sockguard

PACKAGE = os.path.dirname(os.path.abspath(sockguard.__file__)) + os.sep


class Injected(Exception):
    """What an application's signal handler raises (a soft time limit, a timeout)."""


def _ours(frame: FrameType | None) -> bool:
    return frame is not None and frame.f_code.co_filename.startswith(PACKAGE)


def _implicit(frame: FrameType) -> bool:
    """A function the interpreter ran on its own (a weakref callback, ``__del__``, a ``gc.callbacks`` hook at
    garbage collection): an exception there is "unraisable" wherever it comes from, never the code's that
    happened to be running."""
    code = frame.f_code
    if code.co_name == "__del__" or os.path.basename(code.co_filename) in ("_weakrefset.py", "weakref.py"):
        return True
    return any(getattr(callback, "__code__", None) is code for callback in gc.callbacks)


class Point:
    """Where the exception was raised: for a failure message."""

    def __init__(self, event: str, frame: FrameType, arg: Any) -> None:
        where = frame if event == "c_return" else (frame.f_back if event == "return" else frame)
        assert where is not None
        callee = getattr(arg, "__qualname__", None) or getattr(arg, "__name__", None) or frame.f_code.co_qualname
        self.text = f"{event} of {callee} in {where.f_code.co_qualname} line {where.f_lineno}"

    def __repr__(self) -> str:
        return self.text


class Injector:
    """Counts the points of one run of an operation and raises at the ``k``-th (None: only count)."""

    def __init__(self, k: int | None, exc: BaseException | None = None) -> None:
        self.k = k
        self.count = 0
        self.exc = exc if exc is not None else Injected(f"injected at point {k}")
        self.fired: Point | None = None
        self.off = False

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if self.off:  # (switching profiling off is itself an audited event, seen by sockguard's hook)
            return
        if event == "c_return" or event == "c_exception":
            hit = _ours(frame) and event == "c_return"
        elif event == "return":
            hit = _ours(frame.f_back) and not _implicit(frame)
        elif event == "call":
            hit = _ours(frame)
        else:
            hit = False
        if not hit or _in_finalizer(frame):
            return
        if self.count == self.k:
            self.off = True
            sys.setprofile(None)
            self.fired = Point(event, frame, arg)
            self.count += 1
            raise self.exc
        self.count += 1


def _in_finalizer(frame: FrameType | None) -> bool:
    """Inside a ``__del__`` that the garbage collector ran wherever it happened to run: an exception raised there
    is unraisable by Python's rules (printed, never propagated), whoever raised it, so it is no point of the code
    under test. Whether such a finaliser runs inside the sweep depends on the collector's timing (it did when this
    test ran alone)."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


@contextmanager
def raise_at(k: int | None, exc: BaseException | None = None) -> Iterator[Injector]:
    """Within the block (this thread only), raise ``exc`` (an :class:`Injected`) at the ``k``-th point.

    The audit hook (where connects and lookups are decided) runs with profiling off unless it says
    ``__cantrace__`` (PEP 578); signal handlers run there all the same, so it is made visible here."""
    from sockguard import _hook

    injector = Injector(k, exc)
    _hook._audit.__cantrace__ = True  # type: ignore[attr-defined]
    sys.setprofile(injector)
    try:
        yield injector
    finally:
        injector.off = True
        sys.setprofile(None)
        del _hook._audit.__cantrace__  # type: ignore[attr-defined]


def sweep(
    operation: Callable[[], object],
    after: Callable[[Point], None],
    prepare: Callable[[], object] | None = None,
    limit: int = 20000,
) -> int:
    """Run ``operation`` once per point, raising at that point; each time the :class:`Injected` must come out of
    ``operation`` unchanged (not swallowed, not converted), and ``after(point)`` checks that nothing was left
    broken. ``prepare()`` runs before each attempt, outside the injection. Returns the number of points swept."""
    k = 0
    while k < limit:
        if prepare is not None:
            prepare()
        outcome: object = None
        with raise_at(k) as injector:
            try:
                operation()
            except Injected as exc:
                outcome = exc
            except BaseException as exc:  # reported below: converted into something else
                outcome = exc
        if injector.fired is None:
            return k  # fewer than k points: every one has been swept
        assert outcome is injector.exc, (
            f"the exception raised at {injector.fired} came out as {outcome!r} (swallowed or converted)"
        )
        after(injector.fired)
        k += 1
    raise AssertionError(f"more than {limit} points: the sweep did not end")
