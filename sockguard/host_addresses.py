"""This host's own addresses, asked from the kernel: destinations a connect never leaves the machine for.

The breaker and the fan-out detector exist because traffic to *other* hosts can get this one reported; a retry
loop against one of our own addresses cannot. The addresses come from one netlink ``RTM_GETADDR`` dump (every
address on every interface, both families): a few system calls, no subprocess, no parsing of routing tables
that can hold a million routes on a router. Anything that goes wrong (no netlink: not Linux, a seccomp filter,
a sandbox) gives an empty set, so only loopback is exempt: the breaker stays on for everything else.
"""

from __future__ import annotations

import _socket
import _struct  # (struct.py only re-exports it: one module fewer at the first connect)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from sockguard.addresses import Address

_NETLINK_ROUTE = 0
_RTM_NEWADDR = 20
_RTM_GETADDR = 22
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_HEADER = _struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_IFADDR = _struct.Struct("=BBBBI")  # ifaddrmsg: family, prefix length, flags, scope, interface index
_ATTR = _struct.Struct("=HH")  # rtattr: length, type
_MAX_BYTES = 4 << 20  # a sanity bound on the dump (about 40,000 addresses)


def own_addresses() -> frozenset[Address]:
    """Every address assigned to an interface of this host (in this network namespace), as
    ``(version, value)`` pairs like :func:`sockguard.addresses.parse_address` returns. Empty on failure."""
    family = getattr(_socket, "AF_NETLINK", None)
    if family is None:
        return frozenset()
    try:
        sock = _socket.socket(family, _socket.SOCK_RAW | getattr(_socket, "SOCK_CLOEXEC", 0), _NETLINK_ROUTE)
    except OSError:
        return frozenset()
    try:
        sock.settimeout(2.0)  # the kernel answers at once; never hang a connect on it
        request = _HEADER.pack(_HEADER.size + _IFADDR.size, _RTM_GETADDR, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
        sock.sendto(request + _IFADDR.pack(_socket.AF_UNSPEC, 0, 0, 0, 0), (0, 0))
        found: set[Address] = set()
        received = 0
        while received < _MAX_BYTES:
            data = sock.recv(65536)
            if not data:
                break
            received += len(data)
            if _parse(data, found):
                return frozenset(found)
        return frozenset()  # no end of the dump: do not trust a partial list
    except (OSError, _struct.error, ValueError):  # type: ignore[attr-defined]  # (struct.error itself)
        return frozenset()
    finally:
        sock.close()


def _parse(data: bytes, found: set[Address]) -> bool:
    """Add the addresses of one batch of netlink messages to ``found``; True at the end of the dump."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _flags, _seq, _pid = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            raise ValueError("malformed netlink message")
        if kind == _NLMSG_DONE:
            return True
        if kind == _NLMSG_ERROR:
            raise ValueError("netlink error")
        if kind == _RTM_NEWADDR:
            _address(data, offset + _HEADER.size, offset + length, found)
        offset += (length + 3) & ~3
    return False


def _address(data: bytes, start: int, end: int, found: set[Address]) -> None:
    family, _prefix, _flags, _scope, _index = _IFADDR.unpack_from(data, start)
    size = 4 if family == _socket.AF_INET else 16 if family == _socket.AF_INET6 else 0
    if not size:
        return
    local = address = None
    at = start + _IFADDR.size
    while at + _ATTR.size <= end:
        length, kind = _ATTR.unpack_from(data, at)
        if length < _ATTR.size:
            break
        value = data[at + _ATTR.size : at + length]
        if len(value) == size:
            if kind == _IFA_LOCAL:
                local = value
            elif kind == _IFA_ADDRESS:
                address = value
        at += (length + 3) & ~3
    # IPv4: IFA_LOCAL is ours (on a point-to-point link IFA_ADDRESS is the peer); IPv6 sends IFA_ADDRESS only.
    mine = local if local is not None else address
    if mine is not None:
        found.add((4 if size == 4 else 6, int.from_bytes(mine, "big")))
