"""Canonical forms of what a caller hands the socket layer: ports, and numeric hosts in their one spelling.

The guard decides on the canonical value and passes that value on, so the decision and the kernel see the
same thing. Memoised where every connection asks (an IP literal in a URL is looked up per connection).
"""

from __future__ import annotations

from sockguard.addresses import format_address, parse_address
from sockguard.errors import InvalidHost
from sockguard.rules import normalize_host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_MEMO_MAX = 4096


def port_number(port: Any) -> int | None:
    """The port as an int, or None when it is not one (a service name, or absent)."""
    if port.__class__ is int:
        return port
    if isinstance(port, (str, bytes)) and port.isdigit():
        return int(port)
    return None


#: host strings seen in connect/sendto tuples that are already canonical IPs (the wrappers' fast path)
numeric_hosts: set[Any] = set()
_canonicals: dict[str, Any] = {}


def remember_numeric(host: str) -> None:
    if len(numeric_hosts) >= _MEMO_MAX:
        numeric_hosts.clear()
    numeric_hosts.add(host)


def canonical_host(host: Any) -> Any:
    """``host`` with a numeric address in its canonical spelling (``127.1`` -> ``127.0.0.1``); anything else
    unchanged. Memoised for str hosts."""
    if host.__class__ is not str:
        return _canonical_uncached(host)
    found = _canonicals.get(host)
    if found is None:
        found = _canonical_uncached(host)
        if len(_canonicals) >= _MEMO_MAX:
            _canonicals.clear()
        _canonicals[host] = found
    return found


def _canonical_uncached(host: Any) -> Any:
    try:
        addr = parse_address(normalize_host(host))
    except (InvalidHost, TypeError):
        return host
    if addr is None or (isinstance(host, str) and "%" in host):
        return host
    return format_address(addr)


def forget() -> None:
    """Empty the memos (tests)."""
    numeric_hosts.clear()
    _canonicals.clear()
