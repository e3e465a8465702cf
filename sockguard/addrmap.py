"""The address-to-name map: which allowed names each resolved address came from.

A connect to an address that came from a guarded lookup of an allowed name is a connect *for that name*
(policy rule 4; the DNS-rebinding defence decides on it). Process-wide on purpose: it outlives any one
policy. A plain dict (atomic under the GIL, no lock on the hot path) with a hard bound.
"""

from __future__ import annotations

import _thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_ADDRESSES = 65536
_NAMES_PER_ADDRESS = 4

#: address string (as the resolver returned it) -> names it was resolved from, newest last
_names: dict[str, tuple[str, ...]] = {}
#: The names ``address`` was resolved from, or None.
names_for = _names.get
_evict_lock = _thread.allocate_lock()


def remember(address: str, name: str) -> bool:
    """Record that ``address`` answered a lookup of ``name``; False if that was known already."""
    names = _names.get(address)
    if names is not None and name in names:
        return False
    _names[address] = (name,) if names is None else (*names, name)[-_NAMES_PER_ADDRESS:]
    if len(_names) > MAX_ADDRESSES:
        _evict()
    return True


def _evict() -> None:
    if not _evict_lock.acquire(False):
        return
    try:
        for key in list(_names)[: MAX_ADDRESSES // 8]:
            _names.pop(key, None)
    except RuntimeError:  # another thread resized it mid-copy; try next time
        pass
    finally:
        _evict_lock.release()


def size() -> int:
    return len(_names)


def forget() -> None:
    """Empty the map (tests: every test starts from a process that has resolved nothing)."""
    _names.clear()


def snapshot() -> dict[str, Any]:
    return dict(_names)
