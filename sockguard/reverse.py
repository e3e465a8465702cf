"""Reverse lookups (``gethostbyaddr``, ``getnameinfo``, ``getfqdn``): a PTR query is decided like any other lookup.

A PTR query's name is the address itself (``7.113.0.203.in-addr.arpa``; 16 chosen bytes for an IPv6 address), so
looking up arbitrary addresses is a way to send data to whoever serves their reverse zone. Allowed: loopback (with
``allow_loopback``), this host's own addresses, addresses /etc/hosts lists (answered from the file), addresses an
IP/CIDR allow rule covers, and addresses learned from a lookup of an allowed name (the address map). Everything else
is refused before the query leaves; ``socket.getfqdn()`` catches that ``OSError`` and returns the name it was given,
as it does when a PTR lookup fails. In pinned-resolver mode only /etc/hosts may answer: the system resolver never
gets a reverse query.
"""

from __future__ import annotations

import time

from sockguard import addrmap, host_addresses, resolvconf
from sockguard.addresses import format_address, is_loopback, parse_address, unwrap_routable
from sockguard.policy import ALLOWED_IP, DENIED, LOOPBACK, PINNED_RESOLVER, REVERSE_LOOKUP, Decision

TYPE_CHECKING = False
if TYPE_CHECKING:
    from sockguard.active import State
    from sockguard.addresses import Address

_OWN_TTL = 10.0  # seconds an interface address list is trusted
_own: tuple[float, frozenset[Address]] = (0.0, frozenset())

LEARNED = Decision(True, "learned-address")
OWN = Decision(True, "own-address")
HOSTS_FILE = Decision(True, "hosts-file")
_PINNED = Decision(
    False,
    PINNED_RESOLVER,
    None,
    "a reverse (PTR) lookup would ask the system resolver, but the resolver is pinned; only addresses in /etc/hosts "
    "are looked up in pinned mode",
)


def decide(state: State, text: str) -> Decision:
    """The decision for a reverse lookup of the numeric address ``text`` (any spelling C accepts)."""
    addr = parse_address(text.partition("%")[0])
    if addr is None:
        return Decision(False, REVERSE_LOOKUP, None, repr(text))
    canonical = format_address(addr)
    if resolvconf.hosts_address(canonical):
        return HOSTS_FILE  # the files backend answers it: no query
    if state.resolver is not None:
        return _PINNED
    decision = state.policy.check_address(addr, None)
    if decision.reason in (DENIED, LOOPBACK, ALLOWED_IP):
        return decision
    routable = format_address(unwrap_routable(addr))
    if addrmap.names_for(canonical) or addrmap.names_for(text) or addrmap.names_for(routable):
        return LEARNED
    if addr in own_addresses() or (is_loopback(addr) and canonical in ("127.0.0.1", "::1")):
        return OWN
    return Decision(False, REVERSE_LOOKUP, None, canonical)


def own_addresses() -> frozenset[Address]:
    """This host's addresses (sockguard.host_addresses, one netlink dump), asked again every few seconds."""
    global _own
    stamp, found = _own
    now = time.monotonic()
    if now - stamp < _OWN_TTL and found:
        return found
    found = host_addresses.own_addresses()
    _own = (now, found)
    return found


def forget() -> None:
    global _own
    _own = (0.0, frozenset())
