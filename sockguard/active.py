"""The policy in force: a :class:`State` (one compiled Policy with its decision caches) and which one that is.

A State is replaced whole, never changed in place, so a thread always sees one consistent policy; a new
policy is a new State with empty caches (sockguard.guard builds and switches them). Decisions are cached
per State in plain dicts (atomic under the GIL: no lock on the hot path) with hard bounds.
"""

from __future__ import annotations

from sockguard import addrmap
from sockguard.addresses import format_address, parse_address, unwrap_routable
from sockguard.canonical import c_host, connect_port, port_number
from sockguard.errors import InvalidHost
from sockguard.policy import CONFIG_ERROR, INVALID, RAW_IP, UNVERIFIED, Decision
from sockguard.rules import normalize_host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from sockguard.breaker import Breaker
    from sockguard.errors import EgressBlocked
    from sockguard.policy import Policy
    from sockguard.resolver import Resolver
    from sockguard.sinks import Sinks

NUMERIC_OK = Decision(True, "numeric-host")
#: A connect/send/bind whose hostname C resolved itself (sockguard.floor): refused whatever the name.
C_RESOLVED = Decision(
    False,
    UNVERIFIED,
    None,
    "the C layer resolved this hostname itself, before any check (a hostname passed to _socket directly, or the "
    "socket wrappers were replaced): the address it would use cannot be checked, so the call is refused",
)
_CACHE_MAX = 8192
_PORTS_PER_ADDRESS = 1024


class State:
    """One policy in force, with its caches, sinks, breaker and (pinned mode) resolver."""

    __slots__ = (
        "addrs",
        "answers",
        "blocks",
        "breaker",
        "error",
        "error_reason",
        "mode",
        "names",
        "policy",
        "resolver",
        "settings",
        "sinks",
        "translate",
    )

    def __init__(
        self,
        policy: Policy,
        mode: str,
        sinks: Sinks,
        *,
        error: str | None = None,
        error_reason: str = CONFIG_ERROR,
        settings: Any = None,
        breaker: Breaker | None = None,
        resolver: Resolver | None = None,
        translate: Callable[[EgressBlocked, Any], EgressBlocked] | None = None,
    ) -> None:
        self.policy = policy
        self.mode = mode
        self.sinks = sinks
        self.error = error  # a broken configuration: every decision is config-error (fail closed)
        self.error_reason = error_reason  # config-unavailable: a load that failed for another reason (guard.load)
        self.settings = settings
        self.breaker = breaker
        self.resolver = resolver  # sockguard.resolver.Resolver in pinned mode, else None (the system resolver)
        # The exception a refusal raises, in a host's own terms (the pytest plugin: pytest-socket's classes and
        # pytest's options in the hint); None: sockguard's own (sockguard.refusal).
        self.translate = translate
        self.names: dict[tuple[Any, Any], tuple[Decision, str | None]] = {}
        self.addrs: dict[Any, dict[Any, Decision]] = {}
        self.answers: dict[tuple[str, str, int | None], Decision] = {}
        self.blocks: dict[Any, tuple[str | None, str, str]] = {}  # sockguard.refusal's message cache

    def lookup(self, host: Any, port: Any) -> tuple[Decision, str | None]:
        """Decision for a lookup, and the normalised name (None if numeric: no DNS leaves for it). Cached on the
        host's exact text and the port's number, never on the caller's objects (a ``str`` subclass could forge
        ``__hash__``/``__eq__`` to hit an allowed entry)."""
        if host.__class__ is not str:
            try:
                host = c_host(host)
            except (TypeError, InvalidHost) as exc:
                return Decision(False, INVALID, None, str(exc)), None
        # An int port, the common case, without a call.
        key: tuple[str, int | None] = (host, port) if port.__class__ is int and port > 0 else (host, port_number(port))
        found = self.names.get(key)
        if found is None:
            found = self._lookup(host, key[1])
            if len(self.names) >= _CACHE_MAX:
                self.names.clear()
            self.names[key] = found
        return found

    def _lookup(self, host: Any, port: int | None) -> tuple[Decision, str | None]:
        if self.error is not None:
            return Decision(False, self.error_reason, None, self.error), None
        try:
            name = normalize_host(host)
        except InvalidHost as exc:
            return Decision(False, INVALID, None, str(exc)), None
        if parse_address(name) is not None:
            # No DNS leaves for a numeric host (servers resolve "0.0.0.0" to
            # bind): the connect or send decides on the address.
            return NUMERIC_OK, None
        return self.policy.check_name(name, port), name

    def address(self, host: str, port: int | None) -> Decision:
        """Decision for a connect or send to ``host`` (the exact text C used; a name here means C resolved it
        itself) and ``port``: an int, UNKNOWN_PORT (sockguard.canonical), or None where no port is named (a
        request's Host header without one: decided leniently, as a lookup is)."""
        if host.__class__ is not str:  # never a caller's object as a cache key
            return C_RESOLVED
        if port.__class__ is not int and port is not None:
            port = connect_port(port)
        ports = self.addrs.get(host)
        if ports is not None:
            found = ports.get(port)
            if found is not None:
                return found
        decision = self._address(host, port)
        if ports is None:
            if len(self.addrs) >= _CACHE_MAX:
                self.addrs.clear()
            ports = self.addrs[host] = {}
        if len(ports) < _PORTS_PER_ADDRESS:
            ports[port] = decision
        return decision

    def _address(self, host: Any, port: int | None) -> Decision:
        if self.error is not None:
            return Decision(False, self.error_reason, None, self.error)
        addr = parse_address(host)
        if addr is None:
            # A hostname reached C without the wrappers: C has resolved it already (no event fires for that), and
            # the address it connects to is unknown here. Refused whatever the name (sockguard.floor says more).
            return C_RESOLVED
        decision = self.policy.check_address(addr, port)
        if decision.reason == RAW_IP:
            names = addrmap.names_for(host) or addrmap.names_for(format_address(addr))
            if not names and unwrap_routable(addr) != addr:  # ::ffff:a.b.c.d reaches the IPv4 host a.b.c.d
                names = addrmap.names_for(format_address(unwrap_routable(addr)))
            if names:
                for name in names:
                    by_name = self.policy.check_address(addr, port, name)
                    if by_name.allowed:
                        return by_name
                return by_name
        return decision

    def answer(self, name: str, ip: str, port: int | None) -> Decision:
        """Decision for one answer of a lookup of ``name``: an address reached through that name."""
        key = (name, ip, port)
        found = self.answers.get(key)
        if found is None:
            addr = parse_address(ip)
            if addr is None:
                found = Decision(False, INVALID, None, f"resolver returned {ip!r}")
            else:
                found = self.policy.check_address(addr, port, name)
            if len(self.answers) >= _CACHE_MAX:
                self.answers.clear()
            self.answers[key] = found
        return found

    def forget_address(self, address: str) -> None:
        """A cached raw-IP decision for ``address`` is stale: it has just been learned from a name."""
        self.addrs.pop(address, None)


#: The State in force, or None before the first socket event (then :func:`current` loads it).
in_force: State | None = None


def current() -> State:
    """The State in force, loading the configuration on first use."""
    state = in_force
    if state is None:
        # The one deliberate lazy edge of the import graph (CONTRIBUTING.md): the loader builds States and
        # puts them in force, so it imports this module; a process that never touches the network never loads it.
        from sockguard import guard

        state = guard.load()
    return state
