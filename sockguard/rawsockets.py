"""Sockets whose packets no destination check can hold: raw and packet sockets, source routes, routing headers.

A raw IP socket (``SOCK_RAW``, ``IPPROTO_RAW`` or ``IP_HDRINCL``) lets the program write its own IP header, and a
packet socket (``AF_PACKET``) whole frames: the address of a ``sendto`` says nothing about where the packet goes.
Root in a container has ``CAP_NET_RAW`` by default. Both are refused unless the policy says ``allow_raw = true``.

An ICMP datagram ("ping") socket (``SOCK_DGRAM`` with ``IPPROTO_ICMP``/``IPPROTO_ICMPV6``; unprivileged wherever
``net.ipv4.ping_group_range`` admits the user, as Docker sets it) sends echo requests whose payload the program
chooses: the port of its address means nothing to the kernel, so a port-scoped rule (``10.0.0.0/8:5432``) would
admit ICMP to the whole host. It is refused like a raw socket, unless ``allow_raw = true``.

Source routing needs no privilege: an IPv4 loose/strict source-route option (``IP_OPTIONS``, or ``IP_RETOPTS``
ancillary data) or an IPv6 routing header (``IPV6_RTHDR``, also through the RFC 2292 options) sends a packet whose
final destination is not the address the guard decided, through one it allowed. Those options are refused in
``setsockopt`` and in ``sendmsg`` ancillary data (sockguard.wrappers).
"""

from __future__ import annotations

import _socket
import sys

from sockguard import active
from sockguard.policy import RAW_SOCKET, SOURCE_ROUTE, Decision
from sockguard.refusal import refuse

AF_INET = _socket.AF_INET
AF_INET6 = _socket.AF_INET6
AF_PACKET = getattr(_socket, "AF_PACKET", -1)
SOCK_RAW = _socket.SOCK_RAW
SOCK_PACKET = 10  # Linux's obsolete AF_INET packet type (CAP_NET_RAW, like SOCK_RAW)
SOCK_DGRAM = _socket.SOCK_DGRAM
_ICMP = (1, 58)  # IPPROTO_ICMP, IPPROTO_ICMPV6: a datagram socket of these is a ping socket
#: IPPROTO_SCTP: an association is multi-homed — the peer's other addresses (and those a program hands to
#: sctp_connectx through setsockopt, or names in ancillary data) are reached without a connect the guard decides.
_SCTP = 132
IPPROTO_IP = 0
IPPROTO_IPV6 = 41
IP_OPTIONS = 4
IP_RETOPTS = 7
IPV6_2292RTHDR = 5
IPV6_2292PKTOPTIONS = 6  # a buffer of ancillary data items, routing header included
IPV6_RTHDR = 57
_SOURCE_ROUTE_NUMBERS = (3, 9)  # IPv4 option numbers of LSRR (131) and SSRR (137), whatever the class/copy bits
_IPV4_OPTIONS = (IP_OPTIONS, IP_RETOPTS)
_INET = (AF_INET, AF_INET6)
_IPV6_ROUTING = (IPV6_RTHDR, IPV6_2292RTHDR, IPV6_2292PKTOPTIONS)


def is_raw(family: int, kind: int, proto: int) -> bool:
    """Whether a socket of this family, type and protocol is a raw IP, packet, ICMP datagram or SCTP socket: one
    whose destinations the connect/send checks cannot hold, refused unless ``allow_raw``."""
    if family == AF_PACKET:
        return True
    if family not in _INET:
        return False
    kind &= 0xF
    return kind in (SOCK_RAW, SOCK_PACKET) or (kind == SOCK_DGRAM and proto in _ICMP) or proto == _SCTP


def check_raw(family: int, kind: int, proto: int, *, depth: int) -> None:
    """Refuse a raw or packet socket unless the policy in force allows them (``allow_raw``)."""
    state = active.in_force or active.current()
    if state.policy.allow_raw or state.mode == "off":
        return
    what = f"family {family}, type {kind & 0xF}, protocol {proto}"
    if family == AF_PACKET:
        detail = "a packet socket (AF_PACKET) writes whole frames to any address"
    elif proto == _SCTP:
        detail = "an SCTP socket reaches a multi-homed peer's other addresses (and sctp_connectx's) unchecked"
    elif kind & 0xF == SOCK_DGRAM:
        detail = "an ICMP (ping) socket sends echo requests whose destination port means nothing, past any port rule"
    else:
        detail = "a raw IP socket lets the program write its own IP header, past any destination check"
    error = refuse(state, Decision(False, RAW_SOCKET, None, detail), "socket", "raw", what, None, None, depth=depth)
    if error is not None:
        raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)


def source_route(level: int, optname: int, value: bytes | int | None) -> str | None:
    """Why setting ``(level, optname)`` to ``value`` (a socket option, or a ``sendmsg`` ancillary item's level, type
    and data) would route packets past the destination check, or None."""
    if level == IPPROTO_IP and optname in _IPV4_OPTIONS:
        if isinstance(value, int):  # C passes an int option as its 4 bytes
            value = value.to_bytes(4, sys.byteorder, signed=value < 0) if -(2**31) <= value < 2**32 else b"\xff"
        if value and _ipv4_source_route(value):
            return (
                "an IPv4 source-route option (LSRR/SSRR) would send the packet on to an address the guard never decided"
            )
    elif level == IPPROTO_IPV6 and optname in _IPV6_ROUTING and value:  # an empty value removes the header
        return "an IPv6 routing header would send the packet on to an address the guard never decided"
    return None


def _ipv4_source_route(options: bytes) -> bool:
    """Whether an IPv4 option list holds a source route; a list that does not parse counts as one (the kernel
    refuses it anyway, and what it would make of it is not worth guessing)."""
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:  # end of the list
            return False
        if kind == 1:  # no-op
            i += 1
            continue
        if kind & 0x1F in _SOURCE_ROUTE_NUMBERS:
            return True
        if i + 1 >= len(options) or options[i + 1] < 2:
            return True
        i += options[i + 1]
    return False


def refuse_source_route(detail: str, operation: str, sock: object, destination: object, *, depth: int) -> None:
    """Refuse a source route or routing header: in ``setsockopt`` (``destination`` describes the option) or in
    ``sendmsg`` ancillary data (``destination`` is the datagram's address, or None for a connected socket)."""
    state = active.in_force or active.current()
    if state.mode == "off":
        return
    host, port = ("the connected peer", None) if destination is None else (destination, None)
    if isinstance(destination, tuple) and len(destination) >= 2:
        host, port = destination[0], destination[1]
    decision = Decision(False, SOURCE_ROUTE, None, detail)
    error = refuse(state, decision, operation, sock, host, port, None, depth=depth)
    if error is not None:
        raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)
