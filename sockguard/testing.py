"""Resets for tests: start from a process that has resolved nothing and decided nothing.

The address-to-name map and the canonical-host memos are process-wide on purpose (they outlive any one
policy); a test suite that wants results independent of test order empties them between tests with
:func:`reset`, instead of reaching into sockguard's internals.
"""

from __future__ import annotations

from sockguard import active, addrmap, canonical, resolvconf, reverse
from sockguard.console import CONSOLE

__all__ = ["address_map_size", "reset"]


def reset() -> None:
    """Forget every remembered address-to-name pair, the canonical-host memos, the console writer's rate limits
    (every test sees its first block printed) and the caches of the State in force (the policy itself stays in
    force)."""
    addrmap.forget()
    canonical.forget()
    CONSOLE.forget()
    resolvconf.forget()
    reverse.forget()
    state = active.in_force
    if state is not None:
        for cache in (state.names, state.addrs, state.answers, state.blocks):
            cache.clear()


def address_map_size() -> int:
    """How many addresses the address-to-name map holds (it is bounded: sockguard.addrmap.MAX_ADDRESSES)."""
    return addrmap.size()
