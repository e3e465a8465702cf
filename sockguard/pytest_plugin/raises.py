"""Which blocks a ``pytest.raises`` in the test caught (those are the test's own business, not swallowed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sockguard.pytest_plugin.stack import PolicyStack

_watchers: list[PolicyStack] = []
_original_fill_unfilled: Any = None


def _watch_pytest_raises(stack: PolicyStack, on: bool) -> None:
    """Tell the innermost guarding plugin's policy stack what ``pytest.raises`` caught (every pytest.raises /
    RaisesGroup success goes through ``ExceptionInfo.fill_unfilled``). Patched only while a run is being guarded."""
    global _original_fill_unfilled
    if on:
        _watchers.append(stack)
    elif stack in _watchers:
        _watchers.remove(stack)
    if _watchers and _original_fill_unfilled is None:
        original = _original_fill_unfilled = pytest.ExceptionInfo.fill_unfilled

        def fill_unfilled(self: pytest.ExceptionInfo[Any], exc_info: Any) -> None:
            original(self, exc_info)
            if _watchers:
                _watchers[-1].caught(exc_info[1])

        pytest.ExceptionInfo.fill_unfilled = fill_unfilled  # type: ignore[method-assign]
    elif not _watchers and _original_fill_unfilled is not None:
        pytest.ExceptionInfo.fill_unfilled = _original_fill_unfilled  # type: ignore[method-assign]
        _original_fill_unfilled = None
