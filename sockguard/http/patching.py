"""Putting the HTTP hooks in place: one wrapper per method, installed once per class (a reload of the library makes
new classes, which the post-import hook patches again)."""

from __future__ import annotations

from sockguard.wrappers import install_wrapper

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def patch_method(cls: Any, attr: str, make: Callable[[Any], Any]) -> bool:
    """Replace ``cls.attr`` (defined on ``cls`` itself) by ``make(original)``; False if it is not there or
    already ours. Raises AttributeError naming the method when the library no longer has it, so the
    integration's failure is reported rather than silently skipped."""
    original = cls.__dict__.get(attr)
    if original is None:
        raise AttributeError(f"{cls.__module__}.{cls.__qualname__}.{attr} is missing")
    if getattr(original, "__sockguard__", False):
        return False
    wrapper = make(original)
    wrapper.__name__ = attr
    wrapper.__qualname__ = f"{cls.__qualname__}.{attr}"
    install_wrapper(cls, wrapper, original)
    return True
