"""Socket-module wrappers: what audit events cannot do.

They record which name each resolved address came from (so a connect to it is known to be for an allowed
name), drop refused answers, and resolve hostname tuples passed to ``connect``/``sendto``/``sendmsg`` through
the guard before C would resolve them itself (C's lookup raises no event, and its DNS query would already be
out). In pinned-resolver mode they answer lookups from the pinned resolver instead of the C library. They also
tell the breaker how each connect ended. Plain functions that keep ``__wrapped__``, ``__doc__``, ``__name__``.
"""

from __future__ import annotations

import _socket

from sockguard import active
from sockguard.addresses import parse_address
from sockguard.admission import admit
from sockguard.canonical import canonical_host, numeric_hosts, remember_numeric
from sockguard.errors import EgressBlocked
from sockguard.events import record_allowed
from sockguard.refusal import refuse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

AF_INET = _socket.AF_INET
AF_INET6 = _socket.AF_INET6
_family_of = _socket.socket.family.__get__  # C getter: no enum conversion
_SOL_SOCKET = _socket.SOL_SOCKET
_SO_ERROR = _socket.SO_ERROR


def install_wrapper(owner: Any, wrapper: Any, original: Any) -> None:
    """Put ``wrapper`` in place of ``original`` on a module or class, marked so a
    second patch is recognised and the original stays reachable."""
    wrapper.__sockguard__ = True
    wrapper.__wrapped__ = original
    wrapper.__doc__ = original.__doc__
    setattr(owner, wrapper.__name__, wrapper)


def _refused(state: Any, decision: Any, host: Any, port: Any) -> None:
    error = refuse(state, decision, "resolve", None, host, port, None, depth=2)
    if error is not None:
        raise error


def patch_socket_module(module: Any) -> None:
    """Wrap the socket module's resolver functions and socket methods.

    Idempotent; safe after ``importlib.reload(socket)`` (the post-import hook
    runs again and re-wraps the fresh functions)."""
    if getattr(module.getaddrinfo, "__sockguard__", False):
        # Functions still ours; the class methods may have been put back by
        # someone holding the originals (pytest-socket does, per test).
        guard_socket_class(module.socket, module.getaddrinfo)
        return
    original_getaddrinfo = module.getaddrinfo
    original_gethostbyname = module.gethostbyname
    original_gethostbyname_ex = module.gethostbyname_ex

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        state = active.in_force or active.current()
        if host is None or state.mode == "off":
            return original_getaddrinfo(host, port, family, type, proto, flags)
        decision, name = state.lookup(host, port)
        if not decision.allowed:
            _refused(state, decision, host, port)
        if name is None:  # numeric: resolve the canonical spelling, never DNS
            return original_getaddrinfo(canonical_host(host), port, family, type, proto, flags)
        record_allowed(state, decision, "resolve", None, name, port, None, 1)
        if state.resolver is not None:  # pinned: only the configured nameservers answer (sockguard/resolver.py)
            infos = state.resolver.getaddrinfo(name, port, family, type, proto, flags)
        else:
            infos = original_getaddrinfo(host, port, family, type, proto, flags)
        return admit(state, name, port, infos, 4)

    def gethostbyname(host):
        state = active.in_force or active.current()
        if state.mode == "off":
            return original_gethostbyname(host)
        decision, name = state.lookup(host, None)
        if not decision.allowed:
            _refused(state, decision, host, None)
        if name is None:
            return original_gethostbyname(canonical_host(host))
        ip = original_gethostbyname(host) if state.resolver is None else state.resolver.gethostbyname(name)
        return admit(state, name, None, [ip], -1)[0]

    def gethostbyname_ex(host):
        state = active.in_force or active.current()
        if state.mode == "off":
            return original_gethostbyname_ex(host)
        decision, name = state.lookup(host, None)
        if not decision.allowed:
            _refused(state, decision, host, None)
        if name is None:
            return original_gethostbyname_ex(canonical_host(host))
        if state.resolver is None:
            hostname, aliases, ips = original_gethostbyname_ex(host)
        else:
            hostname, aliases, ips = state.resolver.gethostbyname_ex(name)
        return hostname, aliases, admit(state, name, None, list(ips), -1)

    for wrapper, original in (
        (getaddrinfo, original_getaddrinfo),
        (gethostbyname, original_gethostbyname),
        (gethostbyname_ex, original_gethostbyname_ex),
    ):
        install_wrapper(module, wrapper, original)
    guard_socket_class(module.socket, getaddrinfo)


def _connect_outcome(sock: Any, address: Any, outcome: Any) -> None:
    state = active.in_force
    if state is not None and state.breaker is not None:
        state.breaker.after_connect(sock, address, outcome)


def guard_socket_class(cls: Any, guarded_getaddrinfo: Any) -> None:
    """Wrap ``connect``/``connect_ex``/``sendto``/``sendmsg``/``getsockopt`` of a socket class, resolving
    hostname tuples with ``guarded_getaddrinfo`` (the socket module's, or gevent's own resolver)."""
    if getattr(cls.connect, "__sockguard__", False):
        return
    original_connect = cls.connect
    original_connect_ex = cls.connect_ex
    original_sendto = cls.sendto
    original_sendmsg = getattr(cls, "sendmsg", None)
    original_getsockopt = cls.getsockopt

    def prepare(sock: Any, address: Any) -> Any:
        """Numeric hosts to their canonical form, hostnames resolved through
        the guard, so C never resolves a name itself."""
        try:
            family = _family_of(sock)
        except TypeError:  # a Python class around _socket.socket (gevent's socket)
            family = getattr(sock, "family", -1)
        if family != AF_INET and family != AF_INET6:
            return address
        host = address[0]
        if host == "":
            host = "0.0.0.0" if family == AF_INET else "::"
        elif host == "<broadcast>":
            host = "255.255.255.255"
        canonical = canonical_host(host)
        if isinstance(canonical, str) and parse_address(canonical.partition("%")[0]) is not None:
            if canonical == address[0]:
                remember_numeric(canonical)
                return address
            return (canonical, *tuple(address[1:]))
        infos = guarded_getaddrinfo(host, address[1], family)
        sockaddr = infos[0][4]
        if family == AF_INET6 and len(address) > 2:
            return (sockaddr[0], address[1], *tuple(address[2:]))
        return sockaddr

    # The breaker learns how each connect ended: failures (and in-progress non-blocking connects)
    # always, successes only for destinations it watches (one truth test on the hot path). A connect the
    # guard refused (EgressBlocked) is not an outcome: the breaker counted it when it refused it.
    def connect(self, address):
        if address.__class__ is tuple and address and address[0] not in numeric_hosts:
            address = prepare(self, address)
        try:
            result = original_connect(self, address)
        except EgressBlocked:
            raise
        except OSError as exc:
            _connect_outcome(self, address, exc)
            raise
        state = active.in_force
        breaker = state.breaker if state is not None else None
        if breaker is not None and breaker.watched:
            breaker.after_connect(self, address, 0)
        return result

    def connect_ex(self, address):
        if address.__class__ is tuple and address and address[0] not in numeric_hosts:
            address = prepare(self, address)
        try:
            err = original_connect_ex(self, address)
        except EgressBlocked:
            raise
        except OSError as exc:
            _connect_outcome(self, address, exc)
            raise
        state = active.in_force
        breaker = state.breaker if state is not None else None
        if breaker is not None and (err or breaker.watched):
            breaker.after_connect(self, address, err)
        return err

    def getsockopt(self, level, optname, *buflen):
        # asyncio/trio learn a non-blocking connect's outcome from SO_ERROR: so does the breaker.
        value = original_getsockopt(self, level, optname, *buflen)
        if optname == _SO_ERROR and level == _SOL_SOCKET and not buflen:
            state = active.in_force
            breaker = state.breaker if state is not None else None
            if breaker is not None and breaker.pending:
                breaker.connect_result(self, value)
        return value

    def sendto(self, data, flags_or_address, *rest):
        address = rest[0] if rest else flags_or_address
        if address.__class__ is tuple and address and address[0] not in numeric_hosts:
            address = prepare(self, address)
            if rest:
                return original_sendto(self, data, flags_or_address, address)
            return original_sendto(self, data, address)
        return original_sendto(self, data, flags_or_address, *rest)

    def sendmsg(self, buffers, *args):
        if len(args) >= 3:
            address = args[2]
            if address.__class__ is tuple and address and address[0] not in numeric_hosts:
                args = (args[0], args[1], prepare(self, address), *args[3:])
        return original_sendmsg(self, buffers, *args)

    for wrapper, original in (
        (connect, original_connect),
        (connect_ex, original_connect_ex),
        (sendto, original_sendto),
        (sendmsg, original_sendmsg),
        (getsockopt, original_getsockopt),
    ):
        # Skip methods still wrapped: pytest-socket puts back only ``connect``, and a
        # second wrapper would count every breaker failure twice.
        if original is None or getattr(original, "__sockguard__", False):
            continue
        install_wrapper(cls, wrapper, original)
