"""The floor: audit-hook handlers (PEP 578) that decide every lookup and connect, whatever called them.

They see every ``socket.connect``/``sendto``/``sendmsg``/``getaddrinfo``/``gethostbyname``/``gethostbyaddr``
event, including ``_socket`` used directly, a reloaded socket module, or wrappers someone removed. Raising
here aborts the call before the syscall. sockguard.guard puts :data:`HANDLERS` into sockguard._hook's table.
"""

from __future__ import annotations

import _socket
import sys

from sockguard import active, addrmap
from sockguard.addresses import parse_address
from sockguard.canonical import numeric_hosts
from sockguard.events import emit, host_text, make_event, record_allowed
from sockguard.policy import BREAKER_OPEN, FAMILY, PINNED_RESOLVER, UNIX, Decision
from sockguard.refusal import refuse
from sockguard.wrappers import patch_socket_module

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from sockguard._hook import Handler

AF_INET = _socket.AF_INET
AF_INET6 = _socket.AF_INET6
AF_UNIX = getattr(_socket, "AF_UNIX", -1)
AF_NETLINK = getattr(_socket, "AF_NETLINK", -1)
_family_of = _socket.socket.family.__get__  # C getter: no enum conversion
_INET = (AF_INET, AF_INET6)

# Where refuse()/record_allowed() start looking for the caller from _check_socket: past _check_socket and
# sockguard._hook._audit (sends come through _on_sendto/_on_sendmsg: find_caller skips sockguard's frames).
_HOOK_DEPTH = 3


def _check_socket(args: tuple[Any, ...], operation: str = "connect") -> None:
    """The ``socket.connect`` audit handler itself (one Python call fewer on every connect); sends come
    through _on_sendto/_on_sendmsg."""
    sock = args[0]
    address = args[1]
    state = active.in_force or active.current()
    try:
        family = _family_of(sock)
    except TypeError:  # not a _socket.socket: cannot happen for these events, decide on its attribute
        family = getattr(sock, "family", -1)
    if family in _INET:
        # Hot path: an IPv4 address tuple *is* the breaker's (host, port) key, and a healthy destination is
        # one whose cached decision was allowed in this State: one set lookup, no tuple built.
        breaker = state.breaker
        if (
            breaker is not None
            and operation == "connect"
            and address in breaker.healthy
            and not state.sinks.wants_allow()
        ):
            return
        host = address[0]
        port = address[1]
        ports = state.addrs.get(host)  # State.address's cache hit, inlined: this runs on every connect
        decision = ports.get(port) if ports is not None else None
        if decision is None:
            if host.__class__ is not str or parse_address(host) is None:
                _wrappers_bypassed(host)
            decision = state.address(host, port)
        if not decision.allowed and state.resolver is not None and state.resolver.owns(host, port):
            return  # the pinned resolver's own query to its nameserver (sockguard/resolver.py)
        if (
            breaker is not None
            and operation == "connect"
            and not (decision.allowed and (host, port) in breaker.healthy)  # before_connect's fast path, inlined
        ):
            decision = breaker.before_connect(host, port, decision, sock)
        if not decision.allowed or state.sinks.wants_allow():
            names = addrmap.names_for(host) if host.__class__ is str else None
            if names:
                name, address_text = names[0], host
            elif isinstance(host, str) and (host in numeric_hosts or parse_address(host) is not None):
                name, address_text = None, host
            else:
                name, address_text = host, None
            if decision.allowed:
                record_allowed(state, decision, operation, sock, name, port, address_text, _HOOK_DEPTH)
            else:
                # A connect the breaker fails fast keeps the class of the failure it stands in for.
                replaces = breaker.fails_as(host, port) if decision.reason == BREAKER_OPEN and breaker else None
                error = refuse(
                    state, decision, operation, sock, name, port, address_text, depth=_HOOK_DEPTH, replaces=replaces
                )
                if error is not None:
                    raise error
    elif family == AF_UNIX:
        if not state.policy.allow_unix:
            error = refuse(state, Decision(False, UNIX), operation, sock, host_text(address), None, None)
            if error is not None:
                raise error
    elif family != AF_NETLINK:
        decision = Decision(False, FAMILY, None, str(family))
        error = refuse(state, decision, operation, sock, repr(address), None, None)
        if error is not None:
            raise error


_on_connect = _check_socket


def _on_sendto(args: tuple[Any, ...]) -> None:
    _check_socket(args, "send")


def _on_sendmsg(args: tuple[Any, ...]) -> None:
    if args[1] is not None:
        _check_socket(args, "send")


def _on_lookup(host: Any, port: Any) -> None:
    state = active.in_force or active.current()
    decision, name = state.lookup(host, port)
    if not decision.allowed:
        error = refuse(state, decision, "resolve", None, host, port, None, depth=4)
        if error is not None:
            raise error
    elif name is not None and state.resolver is not None:
        # Pinned mode: the wrappers never give C a name, so this lookup bypassed them (_socket called directly,
        # or a reference to the unpatched function) and would ask the system resolver.
        error = refuse(state, _PINNED_BYPASS, "resolve", None, host, port, None, depth=4)
        if error is not None:
            raise error


def _on_getaddrinfo(args: tuple[Any, ...]) -> None:
    if args[0] is not None:
        _on_lookup(args[0], args[1])


def _on_gethostbyname(args: tuple[Any, ...]) -> None:
    _on_lookup(args[0], None)


def _on_gethostbyaddr(args: tuple[Any, ...]) -> None:
    host = args[0]
    # A reverse lookup of an address is a PTR query; a *name* here is resolved
    # forwards first, so it is checked like any other lookup.
    if not (isinstance(host, str) and parse_address(host) is not None):
        _on_lookup(host, None)
    else:
        state = active.in_force or active.current()
        if state.resolver is not None:  # the PTR query would go to the system resolver
            error = refuse(state, _PINNED_REVERSE, "resolve", None, host, None, None, depth=3)
            if error is not None:
                raise error


_PINNED_BYPASS = Decision(
    False,
    PINNED_RESOLVER,
    None,
    "a C-level lookup would ask the system resolver, but the resolver is pinned; only socket.getaddrinfo, "
    "gethostbyname and gethostbyname_ex answer names in pinned mode",
)
_PINNED_REVERSE = Decision(
    False, PINNED_RESOLVER, None, "a reverse (PTR) lookup would ask the system resolver, but the resolver is pinned"
)

_bypass_reported = False


def _wrappers_bypassed(host: Any) -> None:
    """A hostname reached C in a connect/sendto: C has resolved it already (no event fires for that). Put the
    socket wrappers back if someone replaced them, and say so once."""
    global _bypass_reported
    module = sys.modules.get("socket")
    if module is None:
        return
    replaced = not getattr(getattr(module.socket, "connect", None), "__sockguard__", False)
    if replaced:
        patch_socket_module(module)
    if not _bypass_reported:
        _bypass_reported = True
        why = (
            "socket.socket.connect had been replaced; sockguard re-applied its wrapper"
            if replaced
            else "the hostname was passed to _socket directly"
        )
        sys.stderr.write(
            f"sockguard: warning: a connect/sendto with hostname {host_text(host)!r} reached the C layer, which "
            f"resolved it before any check ({why}). Pass addresses from socket.getaddrinfo instead.\n"
        )


_child_warnings: set[str] = set()


def _on_child(argv: Any, env: Any, executable: Any) -> None:
    """A guarded process starting a Python that will not be guarded (-I/-E/-S, env without our PYTHONPATH):
    say so once per command (docs/children.md). Never blocks and never breaks process creation."""
    state = active.in_force or active.current()
    if state.mode == "off" or len(_child_warnings) >= 256:
        return
    from sockguard.caller import find_caller
    from sockguard.children import child_warning

    try:
        message = child_warning(argv, env, executable)
    except (OSError, ValueError, TypeError):  # an argv or env of an odd shape: no warning, never a failed spawn
        return
    if message is None or message in _child_warnings:
        return
    _child_warnings.add(message)
    event = make_event(
        operation="spawn",
        protocol="process",
        host=None,
        port=None,
        address=None,
        decision="warn",
        reason="unguarded-child",
        rule=None,
        mode=state.mode,
        caller=find_caller(3),
        detail=message,
        kind="unguarded-child",
    )
    emit(state.sinks, event, message, 30)


HANDLERS: dict[str, Handler] = {
    "socket.connect": _on_connect,
    "socket.sendto": _on_sendto,
    "socket.sendmsg": _on_sendmsg,
    "socket.getaddrinfo": _on_getaddrinfo,
    "socket.gethostbyname": _on_gethostbyname,
    "socket.gethostbyaddr": _on_gethostbyaddr,
    "subprocess.Popen": lambda args: _on_child(args[1], args[3], args[0]),  # (executable, args, cwd, env)
    "os.exec": lambda args: _on_child(args[1], args[2], args[0]),  # (path, args, env)
    "os.posix_spawn": lambda args: _on_child(args[1], args[2], args[0]),  # (path, argv, env)
    "os.system": lambda args: _on_child(args[0], None, None),  # (command,)
}
