"""The floor: audit-hook handlers (PEP 578) that decide every lookup, connect, send and bind, whatever called them.

They see every ``socket.connect``/``sendto``/``sendmsg``/``bind``/``getaddrinfo``/``gethostbyname``/
``gethostbyaddr``/``getnameinfo``/``__new__`` event, including ``_socket`` used directly, a reloaded socket module,
or wrappers someone removed. Raising here aborts the call before the syscall. sockguard.guard puts :data:`HANDLERS`
into sockguard._hook's table.

The audit event of a connect, send or bind is raised *after* C has read the address (and resolved a hostname in
it: no event fires for that). The socket wrappers hand C only canonical tuples (sockguard.canonical), so what the
floor sees there is what the kernel gets. Anything else reached C without them: the floor decides on what C used
where that can still be known (sockguard.canonical.audited_address) and refuses what cannot (a ``str`` subclass
host, a hostname C resolved itself). A port C read through ``__index__`` is an unknown port: only port-less allow
rules admit it.
"""

from __future__ import annotations

import _socket
import sys

from sockguard import active, addrmap, caller
from sockguard.accelerator import accelerator
from sockguard.addresses import parse_address
from sockguard.canonical import audited_address, c_host, canonical_numeric, numeric_hosts
from sockguard.errors import EgressBlocked, InvalidHost
from sockguard.events import ALLOWED_LEVEL, emit, host_text, make_event, record_allowed
from sockguard.policy import BREAKER_OPEN, FAMILY, PINNED_RESOLVER, SEARCH_LIST, UNIX, UNVERIFIED, Decision
from sockguard.rawsockets import check_raw, is_raw
from sockguard.refusal import refuse
from sockguard.source import note_environment
from sockguard.wrappers import handing, numeric_nameinfo, patch_socket_module, resolvconf_module

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from sockguard._hook import Handler

AF_INET = _socket.AF_INET
AF_INET6 = _socket.AF_INET6
AF_UNSPEC = _socket.AF_UNSPEC
AF_UNIX = getattr(_socket, "AF_UNIX", -1)
AF_NETLINK = getattr(_socket, "AF_NETLINK", -1)
_family_of = _socket.socket.family.__get__  # C getter: no enum conversion
_INET = (AF_INET, AF_INET6)

# The Python floor calls a handler from sockguard._hook._audit, one frame more than the C floor (the accelerator,
# native/sg_accel.c) calls it from. The caller search must not start past the application's frame: too few
# skipped frames cost nothing (find_caller skips sockguard's own), one too many would skip the application.
_AUDIT = 0 if accelerator() is not None else 1
# Where refuse()/record_allowed() start looking for the caller from _check_socket: past _check_socket and
# sockguard._hook._audit (sends come through _on_sendto/_on_sendmsg: find_caller skips sockguard's frames).
_HOOK_DEPTH = 2 + _AUDIT

_UNKNOWN_SHAPE = Decision(
    False,
    UNVERIFIED,
    None,
    "the address reached the C layer in a shape whose value cannot be known after the fact (a str subclass or "
    "bytearray host, or no host at all) without passing through the socket wrappers",
)
_SUBCLASS_LOOKUP = Decision(
    False,
    UNVERIFIED,
    None,
    "a str subclass reached the C resolver directly: C encodes it through the subclass's own methods, so the name "
    "it would look up cannot be known; pass a plain str",
)


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
        breaker = state.breaker
        host = port = None
        if address.__class__ is tuple:
            try:
                host, port = address  # (an unpacking costs nothing on a pair, unlike len() and two indexings)
            except ValueError:  # an AF_INET6 tuple of 3 or 4
                pass
        if host.__class__ is str and port.__class__ is int:
            # Hot path: a plain (str, int) pair, as the wrappers hand C, *is* the breaker's key, and a healthy
            # destination is one whose cached decision was allowed in this State: one set lookup, no tuple built.
            # Exact types only: a subclass's __hash__/__eq__ could match an entry it is not.
            if (
                breaker is not None
                and operation == "connect"
                and address in breaker.healthy
                and not state.sinks.wants_allow()
            ):
                return
        else:  # a shape only C saw the value of: what it used, where that can be known
            host, port = audited_address(address)
        if host is None:
            error = refuse(state, _UNKNOWN_SHAPE, operation, sock, repr(address), None, None, depth=_HOOK_DEPTH)
            if error is not None:
                raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)
            return
        ports = state.addrs.get(host)  # State.address's cache hit, inlined: this runs on every connect
        decision = ports.get(port) if ports is not None else None
        if decision is None:
            if host not in numeric_hosts and parse_address(host) is None:
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
            names = addrmap.names_for(host)
            if names:
                name, address_text = names[0], host
            elif host in numeric_hosts or parse_address(host) is not None:
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
                    raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)
    elif family == AF_UNIX:
        if not state.policy.allow_unix:
            error = refuse(state, Decision(False, UNIX), operation, sock, host_text(address), None, None)
            if error is not None:
                raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)
    elif family != AF_NETLINK:
        decision = Decision(False, FAMILY, None, str(family))
        error = refuse(state, decision, operation, sock, repr(address), None, None)
        if error is not None:
            raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)


_on_connect = _check_socket


def _on_sendto(args: tuple[Any, ...]) -> None:
    _check_socket(args, "send")


def _on_sendmsg(args: tuple[Any, ...]) -> None:
    if args[1] is not None:
        _check_socket(args, "send")


def _on_bind(args: tuple[Any, ...]) -> None:
    """A bind to a literal local address sends nothing and stays allowed; a hostname in it was resolved by C before
    this event (the wrappers resolve names through the guard first), so it is refused, like one whose shape cannot
    be known now."""
    sock = args[0]
    try:
        family = _family_of(sock)
    except TypeError:
        family = getattr(sock, "family", -1)
    if family not in _INET:
        return
    address = args[1]
    if address.__class__ is tuple and len(address) >= 2 and address[0].__class__ is str:
        host: str | None = address[0]
    else:
        host = audited_address(address)[0]
    if host is not None and (host in numeric_hosts or host in ("", "<broadcast>") or canonical_numeric(host)):
        return
    state = active.in_force or active.current()
    decision = _UNKNOWN_SHAPE if host is None else active.C_RESOLVED
    if host is not None:
        _wrappers_bypassed(host)
    shown = host if host is not None else repr(address)
    error = refuse(state, decision, "bind", sock, shown, None, None, depth=2 + _AUDIT)
    if error is not None:
        raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)


def _on_new(args: tuple[Any, ...]) -> None:
    """``socket.__new__`` fires before the socket() system call: raw IP, packet and ICMP sockets are refused unless
    ``allow_raw`` is set (sockguard.rawsockets). A descriptor wrapped with ``socket.socket(fileno=...)`` shows -1
    here; the socket class wrapper asks the descriptor what it really is (sockguard.wrappers)."""
    if is_raw(args[1], args[2], args[3]):
        check_raw(args[1], args[2], args[3], depth=3 + _AUDIT)


def _on_lookup(host: Any, port: Any, family: int, depth: int = 3 + _AUDIT) -> None:
    state = active.in_force or active.current()
    cls = host.__class__
    if cls is not str and issubclass(cls, str):
        error = refuse(state, _SUBCLASS_LOOKUP, "resolve", None, str.__str__(host), port, None, depth=depth)
        if error is not None:
            raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)
        return
    try:
        text = c_host(host)
    except (TypeError, InvalidHost):
        text = None
    decision, name = state.lookup(host, port)
    if not decision.allowed:
        error = refuse(state, decision, "resolve", None, host, port, None, depth=depth)
        if error is not None:
            raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)
    elif name is not None and state.resolver is not None:
        # Pinned mode: the wrappers never give C a name, so this lookup bypassed them (_socket called directly,
        # or a reference to the unpatched function) and would ask the system resolver.
        error = refuse(state, _PINNED_BYPASS, "resolve", None, host, port, None, depth=depth)
        if error is not None:
            raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)
    elif name is not None and text is not None and not text.endswith("."):
        # Handed a relative name, glibc may ask DNS for search-list candidates first (sockguard/resolvconf.py).
        for candidate in resolvconf_module().expansions(name, False, family):
            if not state.lookup(candidate, port)[0].allowed:
                expansion = Decision(
                    False,
                    SEARCH_LIST,
                    None,
                    f"the C resolver would also ask DNS for {candidate!r} (its search list), which is not allowed; "
                    "socket.getaddrinfo asks only for allowed names",
                )
                error = refuse(state, expansion, "resolve", None, host, port, None, depth=depth)
                if error is not None:
                    raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)
                return


# A name the socket wrappers hand C's resolver has been decided already, for that family (an identity test against
# the wrapper's own object: sockguard.wrappers.decided, inlined); anything else is decided here.


def _on_getaddrinfo(args: tuple[Any, ...]) -> None:
    host = args[0]
    if host is not None and (handing[0] is not host or handing[1] != args[2]):
        _on_lookup(host, args[1], args[2])


def _on_gethostbyname(args: tuple[Any, ...]) -> None:
    if handing[0] is not args[0] or handing[1] != AF_INET:
        _on_lookup(args[0], None, AF_INET)


def _on_gethostbyaddr(args: tuple[Any, ...]) -> None:
    host = args[0]
    # A *name* here is resolved forwards first (and checked like any other lookup); an address is a PTR query.
    text = host if host.__class__ is str else None
    if text is None and issubclass(host.__class__, (bytes, bytearray)):
        # C copied the buffer before this event (its "et" format): what it holds now is what C will look up.
        try:
            text = memoryview(host).tobytes().decode("ascii")
        except UnicodeDecodeError:
            text = None
    numeric = canonical_numeric(text) if text is not None else None
    if text is None or numeric is None:
        _on_lookup(host, None, AF_UNSPEC)
    else:
        _reverse(numeric, text)


def _on_getnameinfo(args: tuple[Any, ...]) -> None:
    if numeric_nameinfo():
        return  # the wrapper's call with NI_NUMERICHOST: no query
    sockaddr = args[0]
    if not issubclass(sockaddr.__class__, tuple):
        return  # C refused it already
    items = tuple.__getitem__(sockaddr, slice(None))
    host = items[0] if items else None
    if not issubclass(host.__class__, str):
        return
    text = str.__str__(host)  # C reads the characters ("s" format), never a method
    numeric = canonical_numeric(text)
    if numeric is not None:  # C takes only numeric hosts here (AI_NUMERICHOST): anything else fails without DNS
        _reverse(numeric, text)


def _reverse(address: str, shown: str) -> None:
    # Loaded at the first reverse lookup, not at every process's first connect (with no descriptor left to read it,
    # the lookup fails with that OSError: it could not have read /etc/hosts or reached a nameserver either).
    from sockguard import reverse

    state = active.in_force or active.current()
    decision = reverse.decide(state, address)
    if not decision.allowed:
        error = refuse(state, decision, "resolve", None, shown, None, address, depth=3 + _AUDIT)
        if error is not None:
            raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)


_PINNED_BYPASS = Decision(
    False,
    PINNED_RESOLVER,
    None,
    "a C-level lookup would ask the system resolver, but the resolver is pinned; only socket.getaddrinfo, "
    "gethostbyname and gethostbyname_ex answer names in pinned mode",
)

_bypass_reported = False


def _wrappers_bypassed(host: Any) -> None:
    """A hostname reached C in a connect/sendto/bind: C has resolved it already (no event fires for that). Put the
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
            f"sockguard: warning: a connect/sendto/bind with hostname {host_text(host)!r} reached the C layer, which "
            f"resolved it before any check ({why}); the call is refused. Pass addresses from socket.getaddrinfo "
            "instead.\n"
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
    "socket.__new__": _on_new,
    "socket.connect": _on_connect,
    "socket.sendto": _on_sendto,
    "socket.sendmsg": _on_sendmsg,
    "socket.bind": _on_bind,
    "socket.getaddrinfo": _on_getaddrinfo,
    "socket.gethostbyname": _on_gethostbyname,
    "socket.gethostbyaddr": _on_gethostbyaddr,
    "socket.getnameinfo": _on_getnameinfo,
    "os.putenv": note_environment,
    "os.unsetenv": note_environment,
    "subprocess.Popen": lambda args: _on_child(args[1], args[3], args[0]),  # (executable, args, cwd, env)
    "os.exec": lambda args: _on_child(args[1], args[2], args[0]),  # (path, args, env)
    "os.posix_spawn": lambda args: _on_child(args[1], args[2], args[0]),  # (path, argv, env)
    "os.system": lambda args: _on_child(args[0], None, None),  # (command,)
}


def _accelerate() -> None:
    """Let the C floor (native/sg_accel.c) answer what the hot path of :func:`_check_socket` answers: a connect or
    sendto of a plain ``(str, int)`` address whose cached decision in the State in force is allowed (a healthy
    destination, for a connect with the breaker on) while no sink wants allow events; and a ``socket.__new__``
    that is neither a raw nor a packet socket (:func:`_on_new` has nothing to do). It reads these same objects at
    every event; anything else comes here."""
    fast = accelerator()
    if fast is not None and not fast.status()["fast_path"]:
        fast.fast_path(active, active.State, Decision, _on_connect, _on_sendto, _socket.socket, ALLOWED_LEVEL, _on_new)
    if fast is not None and not fast.status()["blocked_path"]:
        # A connect/sendto whose cached decision is blocked, when refuse() would only raise (no sink wants the
        # WARNING, no breaker, enforce mode, the message cached): refused in C, with the same exception.
        fast.blocked_path(caller._kinds, addrmap._names, numeric_hosts, EgressBlocked)


_accelerate()
