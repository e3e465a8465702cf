"""The one public door for code that resolves or connects outside Python's ``socket`` module.

Integrations (sockguard/integrations.py: c-ares, gevent, dnspython, uvloop, psycopg) and third-party
resolvers use these functions, never the guard's internals, to have their lookups and connects decided by the
policy in force exactly as the socket-module wrappers decide them. Each raises
:class:`~sockguard.EgressBlocked` before anything is sent.
"""

from __future__ import annotations

from sockguard import active, addrmap, reverse
from sockguard.admission import admit
from sockguard.canonical import c_host, canonical_numeric
from sockguard.errors import InvalidHost
from sockguard.events import record_allowed
from sockguard.policy import UNIX, Decision
from sockguard.refusal import refuse
from sockguard.wrappers import allowed_queries, first_answer, guard_socket_class

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

__all__ = [
    "admit_addrinfo",
    "admit_answers",
    "check_connect",
    "check_lookup",
    "check_reverse",
    "check_send",
    "check_unix",
    "first_query",
    "guard_socket_class",
    "pinned_nameservers",
    "resolve_allowed",
]


def check_lookup(host: Any, port: Any = None, *, log_allowed: bool = True) -> str | None:
    """Decide a lookup that a resolver outside the socket module is about to send (c-ares, dnspython,
    gevent's resolvers): raises EgressBlocked before the query leaves. Returns the normalised name for
    :func:`admit_answers`, or None when there is nothing to admit (numeric host, guard off)."""
    state = active.in_force or active.current()
    if state.mode == "off":
        return None
    decision, name = state.lookup(host, port)
    if not decision.allowed:
        error = refuse(state, decision, "resolve", None, host, port, None, depth=2)
        if error is not None:
            raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)
    elif log_allowed and name is not None:
        record_allowed(state, decision, "resolve", None, name, port, None, 2)
    return name


def _absolute(host: Any) -> bool:
    try:
        return c_host(host).endswith(".")
    except (TypeError, InvalidHost):
        return False


def resolve_allowed(host: Any, name: str, port: Any, family: int, ask: Callable[[str], Any]) -> tuple[str, Any]:
    """``(name, answer)`` from a resolver that would apply the C library's search list and ``ndots`` to a name (gevent's
    resolvers, which call ``_socket`` or c-ares): ``ask(query)`` is called only with names the policy allows, each as
    an absolute name (as written for an /etc/hosts name), search-list candidates in the C library's order
    (sockguard/resolvconf.py). ``name`` is :func:`check_lookup`'s result for ``host``; the returned name is the one
    that answered, for :func:`admit_answers`."""
    state = active.in_force or active.current()
    return first_answer(state, name, _absolute(host), port, family, ask)


def first_query(host: Any, name: str, port: Any = None, family: int = 0) -> str:
    """The one name to hand an asynchronous resolver that would apply the search list itself (c-ares through
    pycares): the first candidate the policy allows, absolute (as written for an /etc/hosts name)."""
    state = active.in_force or active.current()
    return allowed_queries(state, name, _absolute(host), port, family)[0][1]


def check_reverse(address: Any) -> None:
    """Decide a reverse (PTR) lookup of ``address`` that a resolver outside the socket module is about to send
    (c-ares, gevent, dnspython): sockguard/reverse.py. Raises EgressBlocked before the query leaves. A name is not a
    reverse lookup (decide it with :func:`check_lookup`)."""
    state = active.in_force or active.current()
    if state.mode == "off":
        return
    try:
        text = c_host(address)
    except (TypeError, InvalidHost):
        return
    numeric = canonical_numeric(text)
    if numeric is None:
        return
    decision = reverse.decide(state, numeric)
    if not decision.allowed:
        error = refuse(state, decision, "resolve", None, text, None, numeric, depth=2)
        if error is not None:
            raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)


def admit_answers(name: str, port: Any, addresses: Iterable[str]) -> list[str]:
    """The answers such a resolver gave for ``name`` that the policy admits, remembered as reached through
    ``name`` so that connects to them are allowed, as after ``socket.getaddrinfo``. Refused ones (internal,
    denied) are logged and dropped; raises EgressBlocked if none is left."""
    return _admit(name, port, list(addresses), -1)


def admit_addrinfo(name: str, port: Any, infos: Iterable[Any]) -> list[Any]:
    """:func:`admit_answers` for ``getaddrinfo``-shaped results: the admitted tuples, kept whole."""
    return _admit(name, port, list(infos), 4)


def _admit(name: str, port: Any, found: list[Any], address_index: int) -> list[Any]:
    state = active.in_force or active.current()
    if state.mode == "off" or not found:
        return found
    return admit(state, name, port, found, address_index)


def check_connect(address: str, port: Any, protocol: str = "tcp") -> None:
    """Decide a connect that C code outside the socket module will make to ``address`` (libpq, libuv), before
    it gets the address: like the audit hook's decision, including addresses remembered from allowed names."""
    _check_address("connect", address, port, protocol)


def check_send(address: str, port: Any, protocol: str = "udp") -> None:
    """Decide a datagram that C code will send to ``address`` (c-ares to a nameserver)."""
    _check_address("send", address, port, protocol)


def _check_address(operation: str, address: str, port: Any, protocol: str) -> None:
    state = active.in_force or active.current()
    if state.mode == "off":
        return
    decision = state.address(address, port)
    names = addrmap.names_for(address)
    name = names[0] if names else None
    if not decision.allowed:
        error = refuse(state, decision, operation, protocol, name, port, address, depth=3)
        if error is not None:
            raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)
    record_allowed(state, decision, operation, protocol, name, port, address, 3)


def check_unix(path: str, protocol: str = "unix") -> None:
    """Decide a connect to an AF_UNIX socket that C code will make (libpq's socket directory)."""
    state = active.in_force or active.current()
    if state.mode != "off" and not state.policy.allow_unix:
        error = refuse(state, Decision(False, UNIX), "connect", protocol, path, None, None, depth=2)
        if error is not None:
            raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)


def pinned_nameservers() -> tuple[tuple[str, int], ...] | None:
    """The pinned resolver's (address, port) servers, or None when lookups go to the system resolver."""
    state = active.in_force or active.current()
    resolver = state.resolver
    return None if resolver is None else resolver.servers


def enforcing() -> bool:
    """Whether any policy is in force (mode enforce or monitor)."""
    state = active.in_force or active.current()
    return state.mode != "off"
