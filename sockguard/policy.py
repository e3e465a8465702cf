"""The compiled policy: allow/deny rules in, decisions out. Pure code.

Exact names and wildcard suffixes are hash lookups per label, so matching cost
does not grow with the number of rules; CIDR rules live in a sorted table of
non-overlapping intervals searched with bisect (O(log n), in C).
"""

from __future__ import annotations

from _bisect import bisect_right  # (bisect.py only re-exports it)
from collections import _tuplegetter  # type: ignore[attr-defined]  # (namedtuple's field getter, in C)

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
from sockguard.rules import UNKNOWN_PORT, Rule, normalize_host, parse_rule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

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
# Set by the enforcement layer (sockguard.floor, sockguard.wrappers), never by the policy; the detail says why.
REVERSE_LOOKUP = "reverse-lookup"  # a PTR query for an address no rule or allowed lookup vouches for
UNVERIFIED = "unverified-address"  # the C layer resolved a name itself: the address it reaches cannot be checked
RAW_SOCKET = "raw-socket"  # SOCK_RAW / AF_PACKET without allow_raw
SOURCE_ROUTE = "source-route"  # IPv4 source-route options, IPv6 routing headers
SEARCH_LIST = "search-list"  # the C resolver would ask DNS for a search-list candidate the policy does not allow

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
    REVERSE_LOOKUP: (
        "reverse (PTR) lookup of {detail}, which is not loopback, not an address of this host, not covered by an "
        "IP/CIDR rule and was not learned from an allowed name"
    ),
    UNVERIFIED: "{detail}",
    RAW_SOCKET: "{detail}; raw, packet, ICMP and SCTP sockets need allow_raw = true (SOCKGUARD_ALLOW_RAW=1)",
    SOURCE_ROUTE: "{detail}",
    SEARCH_LIST: "{detail}",
}


class Decision(tuple):  # type: ignore[type-arg]
    """One decision, the tuple ``(allowed, reason, rule, detail)``: ``allowed``, a stable ``reason`` string, the
    ``rule`` text that decided (if any) and a ``detail`` (e.g. the internal-range category).

    Written out instead of ``collections.namedtuple``, which compiles a ``__new__`` from source text when it makes
    the class (~75 µs of every guarded process's first socket use; ``typing.NamedTuple`` would import ``typing``).
    It behaves as that namedtuple would: same fields, defaults, equality, repr and pickling."""

    __slots__ = ()
    _fields = ("allowed", "reason", "rule", "detail")

    def __new__(cls, allowed: bool, reason: str, rule: str | None = None, detail: str | None = None) -> Decision:
        return tuple.__new__(cls, (allowed, reason, rule, detail))

    if TYPE_CHECKING:
        allowed: bool
        reason: str
        rule: str | None
        detail: str | None
    else:
        allowed = _tuplegetter(0, "whether the operation may go ahead")
        reason = _tuplegetter(1, "a stable reason string")
        rule = _tuplegetter(2, "the text of the rule that decided, if any")
        detail = _tuplegetter(3, "more about the reason (an internal range's category, ...)")

    def __repr__(self) -> str:
        return f"Decision(allowed={self[0]!r}, reason={self[1]!r}, rule={self[2]!r}, detail={self[3]!r})"

    def __getnewargs__(self) -> tuple[object, ...]:  # (pickling calls __new__ with the fields)
        return tuple(self)

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
                _add_reachable(self.exact.setdefault(rule.host, []), rule)
            elif rule.kind == "wildcard":
                _add_reachable(self.suffix.setdefault(rule.host, []), rule)

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


def _add_reachable(rules: list[Rule], rule: Rule) -> None:
    """Append ``rule`` to a list of rules for one host or network unless :func:`_first` could never pick it:
    after an any-port rule (which every query matches) nothing is reachable, and a second rule with the same
    ports is always preceded by the first. Decisions stay identical; 20,000 copies of a rule cost one entry."""
    if rules and rules[-1].ports is None:
        return
    for earlier in rules:  # a loop, not any(genexpr): this runs while the policy loads (see _NetNode)
        if earlier.ports == rule.ports:
            return
    rules.append(rule)


class _NetNode:
    """The rules of one network (most specific first among the networks covering an address) and the next
    enclosing network. CIDR blocks nest or are disjoint, so the networks covering an address form a chain of
    at most 33 (IPv4) or 129 (IPv6) nodes, whatever the number of rules.

    Iterating a node yields the rules covering its addresses in the order :func:`_first` must see them (this
    node's, then its parent's, ...): the tuple the interval table held before it stored chains."""

    __slots__ = ("any_port", "parent", "port_rules", "port_starts", "rules")

    def __init__(self, rules: list[Rule], parent: _NetNode | None) -> None:
        self.rules = rules  # reachable rules only (see _add_reachable), in rule order
        self.parent = parent
        # Plain loops here, no generator expressions: the policy compiles at a process's first socket use, where
        # an asynchronous exception (a signal handler's) must come out unchanged (tests/test_async_exceptions.py).
        self.any_port: Rule | None = None
        for rule in rules:
            if rule.ports is None:
                self.any_port = rule
                break
        # For a port: the first rule whose range holds it (else the any-port rule), by bisect over port cuts.
        self.port_starts: list[int] = []
        self.port_rules: list[Rule | None] = []
        if len(rules) > 1 or self.any_port is None:
            self._port_table()

    def _port_table(self) -> None:
        scoped = [(r.ports, r) for r in self.rules if r.ports is not None]
        cuts = sorted({1, 65536} | {lo for (lo, _), _ in scoped} | {hi + 1 for (_, hi), _ in scoped})
        at = {cut: i for i, cut in enumerate(cuts)}
        owner: list[Rule | None] = [None] * len(cuts)
        free = list(range(len(cuts) + 1))  # union-find: the first unpainted slot at or after i

        def find(i: int) -> int:
            while free[i] != i:
                free[i] = free[free[i]]
                i = free[i]
            return i

        for (lo, hi), rule in scoped:  # rule order: the first rule to cover a slot owns it
            end = at[hi + 1]
            i = find(at[lo])
            while i < end:
                owner[i] = rule
                free[i] = i + 1
                i = find(i + 1)
        for i, cut in enumerate(cuts):
            chosen = owner[i] or self.any_port
            if not self.port_rules or self.port_rules[-1] is not chosen:
                self.port_starts.append(cut)
                self.port_rules.append(chosen)

    def pick(self, port: int | None, strict_port: bool) -> Rule | None:
        if port is None:  # a lookup without a port: any allow rule, only a port-less deny rule
            return self.any_port if strict_port else self.rules[0]
        if port == UNKNOWN_PORT:  # the mirror image: only a port-less allow rule, any deny rule
            return self.rules[0] if strict_port else self.any_port
        starts = self.port_starts
        if not starts:
            return self.any_port
        i = bisect_right(starts, port) - 1
        return self.any_port if i < 0 else self.port_rules[i]

    def __iter__(self) -> Iterator[Rule]:
        node: _NetNode | None = self
        while node is not None:
            yield from node.rules
            node = node.parent


class _NetIndex:
    """Per IP version: interval starts, and for each interval the most specific network covering it (a
    :class:`_NetNode`, whose parents are the enclosing networks), or ``()`` where no rule covers it.

    Built in O(n log n) for n rules: one sort of the distinct networks and a sweep with a stack; each
    interval holds one node, not a tuple of every covering rule (which was quadratic for many overlapping
    rules: 20,000 copies of 10.0.0.0/8 plus 20,000 hosts inside it took 40 s and 3 GB)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        cidrs = [r for r in rules if r.kind == "cidr"]
        v4 = [r for r in cidrs if r.version == 4]
        # A rule inside ::ffff:0:0/96 names IPv4 hosts: it also covers their plain IPv4 form.
        v4 += [
            r._replace(version=4, network=r.network & 0xFFFFFFFF, prefix=r.prefix - 96)
            for r in cidrs
            if r.version == 6 and r.prefix >= 96 and r.network >> 32 == 0xFFFF
        ]
        self.tables: dict[int, tuple[list[int], list[_NetNode | tuple[()]]]] = {
            4: self._build(v4, 32),
            6: self._build([r for r in cidrs if r.version == 6], 128),
        }

    @staticmethod
    def _build(rules: list[Rule], bits: int) -> tuple[list[int], list[_NetNode | tuple[()]]]:
        by_net: dict[tuple[int, int], list[Rule]] = {}
        for rule in rules:
            _add_reachable(by_net.setdefault((rule.network, rule.prefix), []), rule)
        starts: list[int] = []
        covers: list[_NetNode | tuple[()]] = []

        def mark(point: int, node: _NetNode | tuple[()]) -> None:
            if starts and starts[-1] == point:
                covers[-1] = node
            else:
                starts.append(point)
                covers.append(node)

        stack: list[tuple[int, _NetNode]] = []  # (last address, node) of the open networks, outermost first
        for network, prefix in sorted(by_net):  # by start; an enclosing network before the ones inside it
            while stack and stack[-1][0] < network:
                last, _ = stack.pop()
                mark(last + 1, stack[-1][1] if stack else ())
            node = _NetNode(by_net[(network, prefix)], stack[-1][1] if stack else None)
            stack.append((network | ((1 << (bits - prefix)) - 1), node))
            mark(network, node)
        while stack:
            last, _ = stack.pop()
            mark(last + 1, stack[-1][1] if stack else ())
        return starts, covers

    def match(self, addr: Address, port: int | None, strict_port: bool = False) -> Rule | None:
        starts, covers = self.tables[addr[0]]
        i = bisect_right(starts, addr[1]) - 1
        if i < 0:
            return None
        node = covers[i] or None
        while node is not None:
            found = node.pick(port, strict_port)
            if found is not None:
                return found
            node = node.parent
        return None


def _first(rules: Iterable[Rule] | None, port: int | None, strict_port: bool) -> Rule | None:
    """The first rule that covers ``port``. ``strict_port`` is for deny rules: a port not given (None, a lookup)
    meets only port-less deny rules, since the connect is decided again with its port; an unknown port
    (:data:`UNKNOWN_PORT`) meets every deny rule, since nothing will decide it again."""
    if rules:
        for rule in rules:
            if strict_port and port is None:
                if rule.ports is None:
                    return rule
            elif (strict_port and port == UNKNOWN_PORT) or rule.allows_port(port):
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
        allow_raw: bool = False,
    ) -> None:
        for what, rules in (("allow", allow), ("deny", deny)):
            if isinstance(rules, (str, bytes)):  # would silently become one rule per character
                raise RuleError(f"{what} must be a list of rules, not the string {rules!r}")
        self.allow = tuple(r if isinstance(r, Rule) else parse_rule(r) for r in allow)
        self.deny = tuple(r if isinstance(r, Rule) else parse_rule(r) for r in deny)
        self.allow_loopback = allow_loopback
        self.allow_unix = allow_unix
        self.allow_raw = allow_raw  # raw IP and packet sockets (sockguard.rawsockets): no address check can hold them
        self._allow_names = _NameIndex(self.allow)
        self._deny_names = _NameIndex(self.deny)
        self._allow_nets = _NetIndex(self.allow)
        self._deny_nets = _NetIndex(self.deny)

    def __repr__(self) -> str:
        return (
            f"Policy(allow={[r.text for r in self.allow]!r}, deny={[r.text for r in self.deny]!r}, "
            f"allow_loopback={self.allow_loopback}, allow_unix={self.allow_unix}, allow_raw={self.allow_raw})"
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
        if routable is addr:
            rule = self._allow_nets.match(addr, port)
        else:
            # IPv4 in IPv6 clothing (mapped: IPv4 on the wire; NAT64: the translator connects to the IPv4 host)
            # is the IPv4 host: IPv4 rules decide (a rule written inside ::ffff:0:0/96 is one), and an IPv6 rule
            # only if written for the embedding itself (prefix >= 96, e.g. 64:ff9b::/96). A broad IPv6 rule
            # such as ::/0 must not admit [::ffff:169.254.169.254] while 169.254.169.254 is blocked.
            rule = self._allow_nets.match(routable, port)
            if rule is None:
                rule = self._allow_nets.match(addr, port)
                if rule is not None and rule.prefix < 96:
                    rule = None
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
