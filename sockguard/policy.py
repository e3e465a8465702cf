"""The compiled policy: allow/deny rules in, decisions out. Pure code.

Exact names and wildcard suffixes are hash lookups per label, so matching cost
does not grow with the number of rules; CIDR rules live in a sorted table of
non-overlapping intervals searched with bisect (O(log n), in C).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import namedtuple

from sockguard.addresses import (
    METADATA_NAMES,
    Address,
    classify,
    embedded_ipv4,
    format_address,
    is_loopback,
    parse_address,
    unwrap_routable,
)
from sockguard.errors import InvalidHost, RuleError
from sockguard.rules import Rule, normalize_host, parse_rule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

# Decision reasons (stable strings: they appear in logs, reports and exceptions).
ALLOWED_NAME = "allowed-name"
ALLOWED_IP = "allowed-ip"
LOOPBACK = "loopback"
UNIX = "unix-socket"
DENIED = "denied"
NOT_ALLOWED = "not-allowed"
RAW_IP = "raw-ip"
INTERNAL = "internal-address"
METADATA = "metadata-name"
INVALID = "invalid-host"
FAMILY = "unsupported-family"
CONFIG_ERROR = "config-error"
# Set by the loader (sockguard.guard) when loading failed for another reason (no file descriptor left...): retried.
CONFIG_UNAVAILABLE = "config-unavailable"
# Set by the breaker (sockguard.breaker), never by the policy; the detail says why.
BREAKER_OPEN = "breaker-open"
SCAN_PATTERN = "scan-pattern"
RATE_LIMITED = "rate-limited"
# Set by the guard in pinned-resolver mode (sockguard.resolver) for a lookup that would reach the system resolver.
PINNED_RESOLVER = "pinned-resolver"

EXPLAIN = {
    DENIED: "matches a deny rule",
    NOT_ALLOWED: "host is not in the allowlist",
    RAW_IP: "raw IP address not covered by an IP/CIDR rule",
    INTERNAL: "address is internal ({detail}); a name may reach it only where an IP/CIDR rule covers it",
    METADATA: "cloud metadata name; allow it only with an exact rule",
    INVALID: "{detail}",
    FAMILY: "socket family {detail} is not supported by the guard",
    CONFIG_ERROR: "configuration is broken, all traffic blocked: {detail}",
    CONFIG_UNAVAILABLE: "the configuration could not be loaded ({detail}); the next attempt loads it again",
    UNIX: "AF_UNIX sockets are disabled (allow_unix = false)",
    BREAKER_OPEN: "{detail}",
    SCAN_PATTERN: "{detail}",
    RATE_LIMITED: "{detail}",
    PINNED_RESOLVER: "{detail}",
}


class Decision(namedtuple("Decision", "allowed reason rule detail", defaults=(None, None))):
    """One decision: ``allowed``, a stable ``reason`` string, the ``rule`` text that decided (if any) and a
    ``detail`` (e.g. the internal-range category). A plain namedtuple, not ``typing.NamedTuple``: ``typing``
    must stay off the first-socket path."""

    __slots__ = ()
    allowed: bool
    reason: str
    rule: str | None
    detail: str | None

    def explain(self) -> str:
        template = EXPLAIN.get(self.reason)
        if template is None:
            return self.reason
        return template.format(detail=self.detail)


class _NameIndex:
    def __init__(self, rules: Iterable[Rule]) -> None:
        self.exact: dict[str, list[Rule]] = {}
        self.suffix: dict[str, list[Rule]] = {}
        for rule in rules:
            # Only name rules: an IP rule's host ("203.0.113.7") must never act as the suffix of a DNS name
            # ("x.203.0.113.7" is a name, and would otherwise be allowed to any public address).
            if rule.kind == "name":
                self.exact.setdefault(rule.host, []).append(rule)
            elif rule.kind == "wildcard":
                self.suffix.setdefault(rule.host, []).append(rule)

    def match(self, host: str, port: int | None, strict_port: bool = False) -> Rule | None:
        found = _first(self.exact.get(host), port, strict_port)
        if found is not None or not self.suffix:
            return found
        dot = host.find(".")
        while dot >= 0:
            found = _first(self.suffix.get(host[dot + 1 :]), port, strict_port)
            if found is not None:
                return found
            dot = host.find(".", dot + 1)
        return None


class _NetIndex:
    """Per IP version: interval starts, and the rules covering each interval
    (most specific first)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        cidrs = [r for r in rules if r.kind == "cidr"]
        v4 = [r for r in cidrs if r.version == 4]
        # A rule inside ::ffff:0:0/96 names IPv4 hosts: it also covers their plain IPv4 form.
        v4 += [
            r._replace(version=4, network=r.network & 0xFFFFFFFF, prefix=r.prefix - 96)
            for r in cidrs
            if r.version == 6 and r.prefix >= 96 and r.network >> 32 == 0xFFFF
        ]
        self.tables: dict[int, tuple[list[int], list[tuple[Rule, ...]]]] = {
            4: self._build(v4, 32),
            6: self._build([r for r in cidrs if r.version == 6], 128),
        }

    @staticmethod
    def _build(rules: list[Rule], bits: int) -> tuple[list[int], list[tuple[Rule, ...]]]:
        adds: dict[int, list[int]] = {}
        removes: dict[int, list[int]] = {}
        for i, rule in enumerate(rules):
            end = rule.network | ((1 << (bits - rule.prefix)) - 1)
            adds.setdefault(rule.network, []).append(i)
            removes.setdefault(end + 1, []).append(i)
        starts: list[int] = []
        covers: list[tuple[Rule, ...]] = []
        active: dict[int, Rule] = {}
        for point in sorted(adds.keys() | removes.keys()):
            for i in removes.get(point, ()):
                del active[i]
            for i in adds.get(point, ()):
                active[i] = rules[i]
            starts.append(point)
            covers.append(tuple(sorted(active.values(), key=lambda r: -r.prefix)))
        return starts, covers

    def match(self, addr: Address, port: int | None, strict_port: bool = False) -> Rule | None:
        starts, covers = self.tables[addr[0]]
        i = bisect_right(starts, addr[1]) - 1
        if i < 0:
            return None
        return _first(covers[i], port, strict_port)


def _first(rules: Iterable[Rule] | None, port: int | None, strict_port: bool) -> Rule | None:
    if rules:
        for rule in rules:
            if strict_port and port is None:
                if rule.ports is None:
                    return rule
            elif rule.allows_port(port):
                return rule
    return None


class Policy:
    """Allow and deny lists plus the loopback/unix switches. Deny always wins.

    Lookups (``check_name``) happen before DNS, with the port if known;
    connects and datagrams (``check_address``) pass the name the address was
    resolved from, if sockguard saw that resolution.
    """

    def __init__(
        self,
        allow: Iterable[str | Rule] = (),
        deny: Iterable[str | Rule] = (),
        *,
        allow_loopback: bool = True,
        allow_unix: bool = True,
    ) -> None:
        for what, rules in (("allow", allow), ("deny", deny)):
            if isinstance(rules, (str, bytes)):  # would silently become one rule per character
                raise RuleError(f"{what} must be a list of rules, not the string {rules!r}")
        self.allow = tuple(r if isinstance(r, Rule) else parse_rule(r) for r in allow)
        self.deny = tuple(r if isinstance(r, Rule) else parse_rule(r) for r in deny)
        self.allow_loopback = allow_loopback
        self.allow_unix = allow_unix
        self._allow_names = _NameIndex(self.allow)
        self._deny_names = _NameIndex(self.deny)
        self._allow_nets = _NetIndex(self.allow)
        self._deny_nets = _NetIndex(self.deny)

    def __repr__(self) -> str:
        return (
            f"Policy(allow={[r.text for r in self.allow]!r}, deny={[r.text for r in self.deny]!r}, "
            f"allow_loopback={self.allow_loopback}, allow_unix={self.allow_unix})"
        )

    def check_name(self, host: str | bytes, port: int | None = None) -> Decision:
        try:
            name = normalize_host(host)
        except InvalidHost as exc:
            return Decision(False, INVALID, None, str(exc))
        addr = parse_address(name)
        if addr is not None:
            return self.check_address(addr, port)
        rule = self._deny_names.match(name, port, strict_port=True)
        if rule is not None:
            return Decision(False, DENIED, rule.text)
        if name in METADATA_NAMES:
            exact = _first(self._allow_names.exact.get(name), port, False)
            if exact is not None:
                return Decision(True, ALLOWED_NAME, exact.text)
            return Decision(False, METADATA, None, name)
        rule = self._allow_names.match(name, port)
        if rule is not None:
            return Decision(True, ALLOWED_NAME, rule.text)
        # Only the bare name: glibc sends "x.localhost" to DNS like any other name.
        if self.allow_loopback and name == "localhost":
            return Decision(True, LOOPBACK)
        return Decision(False, NOT_ALLOWED)

    def check_address(self, address: Address | str, port: int | None = None, name: str | None = None) -> Decision:
        addr = parse_address(address) if isinstance(address, str) else address
        if addr is None:
            return Decision(False, INVALID, None, f"{address!r} is not an IP address")
        routable = unwrap_routable(addr)
        rule = self._deny_nets.match(addr, port, strict_port=True)
        embedded = embedded_ipv4(addr[1]) if addr[0] == 6 else None
        if rule is None and embedded is not None:  # every embedding, not only the routable ones
            rule = self._deny_nets.match((4, embedded[1]), port, strict_port=True)
        if rule is None and name is not None:
            try:
                rule = self._deny_names.match(normalize_host(name), port, strict_port=True)
            except InvalidHost as exc:
                return Decision(False, INVALID, None, str(exc))
        if rule is not None:
            return Decision(False, DENIED, rule.text)
        if self.allow_loopback and is_loopback(addr):
            return Decision(True, LOOPBACK)
        rule = self._allow_nets.match(addr, port)
        if rule is None and routable is not addr:
            rule = self._allow_nets.match(routable, port)
        if rule is not None:
            return Decision(True, ALLOWED_IP, rule.text)
        category = classify(addr)
        if name is None:
            return Decision(False, RAW_IP, None, category)
        by_name = self.check_name(name, port)
        if not by_name.allowed:
            return by_name
        if category is not None:
            return Decision(False, INTERNAL, by_name.rule, category)
        if by_name.reason == LOOPBACK:  # "localhost" answered with a non-loopback address
            return Decision(False, NOT_ALLOWED, None, f"{name!r} resolved to non-loopback {format_address(addr)}")
        return by_name

    def suggest(self, host: str | bytes | None, port: int | None, address: Address | str | None = None) -> str | None:
        """The narrowest rule that would allow this destination, or None if no rule can
        (invalid host, nothing given). Reached by name, an internal address still needs an
        IP rule, so that is what is suggested then."""
        addr = parse_address(address) if isinstance(address, str) else address
        name = None
        if host is not None:
            try:
                name = normalize_host(host)
            except InvalidHost:
                return None
            numeric = parse_address(name)
            if numeric is not None:
                addr, name = numeric, None
        suffix = f":{port}" if isinstance(port, int) and 0 < port <= 65535 else ""
        if addr is not None and (name is None or classify(addr) is not None):
            text = format_address(addr)
            return f"[{text}]{suffix}" if addr[0] == 6 and suffix else text + suffix
        return None if name is None else name + suffix
