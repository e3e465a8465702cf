"""What a sockguard policy means at the network layer, for ``sockguard export``.

Pure code (no sockets, no I/O). Every target format is built from the pieces
here, so the semantics live in one place:

- A :class:`Service` is what a rule admits on an address: ``other`` covers
  traffic without ports (ICMP, raw sockets: sockguard sees port 0, which only a
  rule without ports admits) and ``ports`` are TCP and UDP port ranges. A rule
  without ports admits everything (:data:`ALL`).
- Deny rules win. A deny without ports removes everything; a deny with ports
  removes those TCP/UDP ports and leaves ``other`` alone (port 0 is never in a
  rule's range), exactly as :meth:`sockguard.policy.Policy.check_address` does.
- :func:`flatten` computes, for allowlist-only targets (security groups,
  NetworkPolicy), the exact address/service sets that remain after the denies.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import NamedTuple

from sockguard import addresses
from sockguard.addresses import format_address
from sockguard.rules import Rule

Ranges = tuple[tuple[int, int], ...]
FULL: Ranges = ((1, 65535),)
BITS = {4: 32, 6: 128}


def merge(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """Sorted, non-overlapping, non-adjacent ranges."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def subtract(ranges: Iterable[tuple[int, int]], remove: Iterable[tuple[int, int]]) -> Ranges:
    """``ranges`` minus ``remove``, both any inclusive ranges: one merge-like pass over the sorted inputs
    (linear after the sort, however many pieces a container is cut into)."""
    keep, cut = merge(ranges), merge(remove)
    out: list[tuple[int, int]] = []
    j = 0
    for lo, hi in keep:
        while j < len(cut) and cut[j][1] < lo:
            j += 1
        at, k = lo, j
        while k < len(cut) and cut[k][0] <= hi:
            rlo, rhi = cut[k]
            if rlo > at:
                out.append((at, rlo - 1))
            at = max(at, rhi + 1)
            if rhi >= hi:
                break
            k += 1
        if at <= hi:
            out.append((at, hi))
    return tuple(out)  # pieces of non-adjacent ranges: already merged


class Service(NamedTuple):
    other: bool  # protocols without ports (ICMP, raw sockets)
    ports: Ranges  # TCP and UDP port ranges

    @property
    def is_all(self) -> bool:
        return self.other and self.ports == FULL

    @property
    def empty(self) -> bool:
        return not self.other and not self.ports

    @property
    def partial_other(self) -> bool:
        """Other protocols allowed but not every port: most targets cannot say that."""
        return self.other and self.ports != FULL

    def describe(self) -> str:
        if self.is_all:
            return "all protocols and ports"
        text = "tcp/udp " + ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in self.ports)
        if not self.ports:
            text = "no tcp/udp ports"
        return text + (" and other protocols (icmp, ...)" if self.other else "")


ALL = Service(True, FULL)
NOTHING = Service(False, ())


def service_of(ports: tuple[int, int] | None) -> Service:
    return ALL if ports is None else Service(False, (ports,))


def union(a: Service, b: Service) -> Service:
    return Service(a.other or b.other, merge(a.ports + b.ports))


def minus(a: Service, deny: Service) -> Service:
    if deny.is_all:
        return NOTHING
    return Service(a.other and not deny.other, subtract(a.ports, deny.ports))


# --- networks ---------------------------------------------------------------------------------


class Net(NamedTuple):
    version: int
    network: int
    prefix: int

    @property
    def first(self) -> int:
        return self.network

    @property
    def last(self) -> int:
        return self.network | ((1 << (BITS[self.version] - self.prefix)) - 1)

    def text(self) -> str:
        """Always with a prefix length (what security groups and ipBlocks want)."""
        return f"{format_address((self.version, self.network))}/{self.prefix}"

    def short(self) -> str:
        """Without the prefix length for single hosts (nftables, comments)."""
        if self.prefix == BITS[self.version]:
            return format_address((self.version, self.network))
        return self.text()

    def contains(self, other: Net) -> bool:
        return self.version == other.version and self.first <= other.first and other.last <= self.last

    def overlaps(self, other: Net) -> bool:
        return self.version == other.version and self.first <= other.last and other.first <= self.last


def net_of(rule: Rule) -> Net:
    return Net(rule.version, rule.network, rule.prefix)


def host_net(address: tuple[int, int]) -> Net:
    return Net(address[0], address[1], BITS[address[0]])


def mapped_v4(net: Net) -> Net | None:
    """The IPv4 network a rule inside ::ffff:0:0/96 also covers (the policy treats it as IPv4 too)."""
    if net.version == 6 and net.prefix >= 96 and net.network >> 32 == 0xFFFF:
        return Net(4, net.network & 0xFFFFFFFF, net.prefix - 96)
    return None


TEREDO = Net(6, 0x20010000 << 96, 32)


def embeddings(net: Net) -> list[Net]:
    """The IPv6 forms of an IPv4 network that the policy unwraps before checking denies:
    mapped, compatible, NAT64 and 6to4 (Teredo obfuscates the address: not a CIDR block)."""
    x, p = net.network, net.prefix
    return [
        Net(6, (0xFFFF << 32) | x, 96 + p),
        Net(6, x, 96 + p),
        Net(6, (0x0064FF9B << 96) | x, 96 + p),
        Net(6, (0x2002 << 112) | (x << 80), 16 + p),
    ]


def range_to_nets(version: int, lo: int, hi: int) -> list[Net]:
    """The fewest CIDR blocks covering exactly [lo, hi]."""
    bits = BITS[version]
    out = []
    while lo <= hi:
        size = (lo & -lo).bit_length() - 1 if lo else bits
        while size > 0 and lo + (1 << size) - 1 > hi:
            size -= 1
        out.append(Net(version, lo, bits - size))
        lo += 1 << size
    return out


Interval = tuple[int, int]  # inclusive


class Entry(NamedTuple):
    """An address block with what it admits (allow) or removes (deny), and why."""

    net: Net
    service: Service
    label: str


#: Rule texts kept per merged address block (for comments and descriptions, which are short anyway).
MAX_LABELS = 8


def join_labels(labels: Iterable[str]) -> str:
    """At most MAX_LABELS distinct labels, in order, and how many more there were."""
    seen: dict[str, None] = {}
    more = 0
    for label in labels:
        for part in label.split("; "):
            if part in seen:
                continue
            if len(seen) < MAX_LABELS:
                seen[part] = None
            else:
                more += 1
    text = "; ".join(seen)
    return f"{text}; +{more} more" if more else text


def same_net_merged(entries: Iterable[Entry]) -> list[Entry]:
    """One entry per address block: services united, labels joined (at most MAX_LABELS), in first-seen order."""
    by_net: dict[Net, tuple[Service, list[str]]] = {}
    for entry in entries:
        found = by_net.get(entry.net)
        if found is None:
            by_net[entry.net] = (entry.service, [entry.label])
            continue
        service, labels = found
        if len(labels) <= MAX_LABELS:
            labels.append(entry.label)
        by_net[entry.net] = (union(service, entry.service), labels)
    return [Entry(net, service, join_labels(labels)) for net, (service, labels) in by_net.items()]


def merge_entries(entries: Iterable[Entry]) -> list[Entry]:
    """Each address block once (:func:`same_net_merged`), without the blocks that an enclosing block already
    admits with at least the same service: the same addresses and services, written once. Sorted by version
    and address; O(n log n) (blocks nest, so the enclosing blocks of any block form a chain of at most
    33 / 129)."""
    out: list[Entry] = []
    stack: list[Entry] = []  # emitted blocks enclosing the current one, outermost first
    for entry in sorted(same_net_merged(entries), key=lambda e: (e.net.version, e.net.first, e.net.prefix)):
        while stack and not stack[-1].net.contains(entry.net):
            stack.pop()
        if any(union(outer.service, entry.service) == outer.service for outer in stack):
            continue  # everything it admits, an enclosing block admits already
        out.append(entry)
        stack.append(entry)
    return out


def cidr_entries(rules: Iterable[Rule]) -> list[Entry]:
    """CIDR rules as entries, with the IPv4 twin of a rule written inside ::ffff:0:0/96."""
    out = []
    for rule in rules:
        if rule.kind != "cidr":
            continue
        net, service = net_of(rule), service_of(rule.ports)
        out.append(Entry(net, service, rule.text))
        twin = mapped_v4(net)
        if twin is not None:
            out.append(Entry(twin, service, rule.text))
    return out


#: IPv6 ranges whose addresses the policy decides as their IPv4 host (mapped, NAT64): an IPv6 allow rule admits
#: them only when written for the range itself (prefix >= 96), as Policy.check_address does.
IPV4_CLOTHING = (Net(6, 0xFFFF << 32, 96), Net(6, 0x0064FF9B << 96, 96))


def allow_entries(rules: Iterable[Rule]) -> list[Entry]:
    """CIDR allow rules as entries (:func:`cidr_entries`), with what a broad IPv6 rule (prefix < 96, e.g.
    ``::/0``) does not admit carved out of it: the mapped and NAT64 ranges, where the IPv4 host decides."""
    out = []
    for entry in cidr_entries(rules):
        net = entry.net
        cut = [c for c in IPV4_CLOTHING if net.version == 6 and net.prefix < 96 and net.overlaps(c)]
        if not cut:
            out.append(entry)
            continue
        for lo, hi in subtract([(net.first, net.last)], [(c.first, c.last) for c in cut]):
            out += [Entry(piece, entry.service, entry.label) for piece in range_to_nets(6, lo, hi)]
    return out


def deny_entries(
    rules: Iterable[Rule], v6_allows: Sequence[Net], any_v6: bool = False
) -> tuple[list[Entry], list[Entry]]:
    """Deny CIDR rules as entries, plus the IPv6 embeddings of IPv4 denies where an IPv6
    allow could admit them (``any_v6``: names may resolve anywhere). A Teredo address
    hides its IPv4 host, so an IPv4 deny takes all of 2001::/32 where an allow overlaps it
    (narrower); those entries are returned second, for a warning."""
    entries = cidr_entries(rules)
    reach = _Overlaps(v6_allows)
    teredo: list[Entry] = []
    teredo_reached = reach.overlaps(TEREDO)  # names (any_v6) get all of Teredo denied: name_unreachable()
    for entry in [e for e in entries if e.net.version == 4]:
        for twin in embeddings(entry.net):
            if any_v6 or reach.overlaps(twin):
                entries.append(Entry(twin, entry.service, f"{entry.label} (as IPv6)"))
        if teredo_reached:
            teredo.append(Entry(TEREDO, entry.service, f"{entry.label} (all of Teredo 2001::/32)"))
    return entries + teredo, teredo


class _Overlaps:
    """Does a network overlap any of these? Sorted, merged intervals and a bisect: O(log n) per question."""

    def __init__(self, nets: Iterable[Net]) -> None:
        merged = merge((n.first, n.last) for n in nets)
        self.starts = [lo for lo, _ in merged]
        self.ends = [hi for _, hi in merged]

    def overlaps(self, net: Net) -> bool:
        i = bisect_right(self.starts, net.last) - 1
        return i >= 0 and self.ends[i] >= net.first


def routable_forms(net: Net) -> list[Net]:
    """The IPv6 forms of an IPv4 network that the policy connects to as the IPv4 host (mapped on a
    dual-stack socket, NAT64 through the translator): an IPv4 allow admits them too."""
    x, p = net.network, net.prefix
    return [Net(6, (0xFFFF << 32) | x, 96 + p), Net(6, (0x0064FF9B << 96) | x, 96 + p)]


class Segment(NamedTuple):
    version: int
    lo: int
    hi: int  # inclusive
    service: Service
    labels: tuple[str, ...]

    def nets(self) -> list[Net]:
        return range_to_nets(self.version, self.lo, self.hi)


def flatten(allows: Sequence[Entry], denies: Sequence[Entry], keep_labels: bool = True) -> list[Segment]:
    """Address intervals with the exact service left after denies, for allowlist-only targets.

    A sweep over the block boundaries. Entries for the same block are merged first, so the blocks active at
    any point form a chain (CIDR blocks nest or are disjoint) and the cost is boundaries times nesting depth
    (at most 33 / 129), whatever the number of rules. Adjacent intervals with the same service
    are merged (labels joined, at most MAX_LABELS), so ``10.0.0.0/8`` minus a deny of ``10.1.2.3`` gives two
    intervals, not millions.
    """
    out: list[Segment] = []
    allows, denies = same_net_merged(allows), same_net_merged(denies)
    for version in (4, 6):
        allow_v = [e for e in allows if e.net.version == version]
        if not allow_v:
            continue
        deny_v = [e for e in denies if e.net.version == version]
        events: dict[int, list[tuple[bool, bool, int]]] = {}  # point -> (is_start, is_allow, index)
        for is_allow, entries in ((True, allow_v), (False, deny_v)):
            for i, e in enumerate(entries):
                events.setdefault(e.net.first, []).append((True, is_allow, i))
                events.setdefault(e.net.last + 1, []).append((False, is_allow, i))
        active_allow: dict[int, Entry] = {}
        active_deny: dict[int, Entry] = {}
        segments: list[Segment] = []
        points = sorted(events)
        for lo, end in pairwise(points):
            for is_start, is_allow, i in events[lo]:
                table, source = (active_allow, allow_v) if is_allow else (active_deny, deny_v)
                if is_start:
                    table[i] = source[i]
                else:
                    table.pop(i, None)
            if not active_allow:
                continue
            service = NOTHING
            for e in active_allow.values():
                service = union(service, e.service)
            for e in active_deny.values():
                service = minus(service, e.service)
            if service.empty:
                continue
            hi = end - 1
            kept = (join_labels(sorted(e.label for e in active_allow.values())),) if keep_labels else ()
            last = segments[-1] if segments else None
            if last is not None and last.hi + 1 == lo and last.service == service:
                labels = (join_labels([*last.labels, *kept]),) if keep_labels and last.labels != kept else last.labels
                segments[-1] = last._replace(hi=hi, labels=labels)
            else:
                segments.append(Segment(version, lo, hi, service, kept))
        out.extend(segments)
    return out


def group_by_service(segments: Iterable[Segment]) -> dict[Service, list[Segment]]:
    groups: dict[Service, list[Segment]] = {}
    for segment in segments:
        groups.setdefault(segment.service, []).append(segment)
    return dict(sorted(groups.items(), key=lambda kv: (not kv[0].is_all, kv[0].ports, kv[0].other)))


def maximal_nets(nets: Iterable[Net]) -> list[Net]:
    """The networks not inside another one, sorted (CIDR blocks nest or are disjoint)."""
    out: list[Net] = []
    for net in sorted(set(nets), key=lambda n: (n.version, n.first, n.prefix)):
        if not (out and out[-1].contains(net)):
            out.append(net)
    return out


def blocks_with_except(segments: Sequence[Segment], containers: Sequence[Net]) -> list[tuple[Net, list[Net]]]:
    """The segments (one service) as (cidr, except) blocks, whichever is shorter per container.

    ``containers`` are the allow rules' maximal networks (:func:`maximal_nets`): every segment
    lies inside their union, so ``container minus holes`` reproduces the segment set exactly.
    """
    starts = [(c.version, c.first) for c in containers]
    touched: dict[int, list[Interval]] = {}  # container index -> its part of the segments
    for seg in sorted(segments, key=lambda s: (s.version, s.lo)):
        i = max(bisect_right(starts, (seg.version, seg.lo)) - 1, 0)
        while i < len(containers) and starts[i] <= (seg.version, seg.hi):
            container = containers[i]
            lo, hi = max(seg.lo, container.first), min(seg.hi, container.last)
            if container.version == seg.version and lo <= hi:
                touched.setdefault(i, []).append((lo, hi))
            i += 1
    out: list[tuple[Net, list[Net]]] = []
    for i, inside in sorted(touched.items()):
        container = containers[i]
        plain = [n for lo, hi in inside for n in range_to_nets(container.version, lo, hi)]
        holes = [
            n
            for lo, hi in subtract([(container.first, container.last)], inside)
            for n in range_to_nets(container.version, lo, hi)
        ]
        if len(holes) + 1 < len(plain):
            out.append((container, holes))
        else:
            out.extend((n, []) for n in plain)
    return out


def dedupe_nested(entries: Iterable[tuple[Net, str]]) -> list[tuple[Net, list[str]]]:
    """Distinct networks for an nftables interval set (which rejects overlaps),
    dropping those inside another and keeping their labels (at most MAX_LABELS, then a count)."""
    by_net: dict[Net, list[str]] = {}
    for net, label in entries:
        labels = by_net.setdefault(net, [])
        if len(labels) <= MAX_LABELS:
            labels.append(label)
    kept: list[tuple[Net, list[str]]] = []
    for net in sorted(by_net, key=lambda n: (n.version, n.first, n.prefix)):
        if kept and kept[-1][0].contains(net):
            if len(kept[-1][1]) <= MAX_LABELS:
                kept[-1][1].extend(by_net[net])
            continue
        kept.append((net, list(by_net[net])))
    return [(net, [join_labels(labels)]) for net, labels in kept]


# --- names ------------------------------------------------------------------------------------


def _under(name: str, suffix: str) -> bool:
    return name.endswith("." + suffix)


def name_relation(allow: Rule, deny: Rule) -> str:
    """How a name/wildcard deny overlaps a name/wildcard allow: "none", "covers"
    (every name the allow admits is denied) or "partial"."""
    a, d = allow.host, deny.host
    if allow.kind == "name":
        if (deny.kind == "name" and a == d) or (deny.kind == "wildcard" and _under(a, d)):
            return "covers"
        return "none"
    if deny.kind == "name":
        return "partial" if _under(d, a) else "none"
    if a == d or _under(a, d):
        return "covers"
    return "partial" if _under(d, a) else "none"


class NameAllow(NamedTuple):
    rule: Rule
    service: Service
    partial_denies: tuple[Rule, ...]  # denies that cut into a wildcard: the target narrows it


def name_allows(allow: Iterable[Rule], deny: Iterable[Rule]) -> tuple[list[NameAllow], list[tuple[Rule, Rule, bool]]]:
    """Name and wildcard allow rules with the service their name denies leave.

    A deny that covers the allow is exact (its ports come off). A deny that cuts
    into a wildcard cannot be said by a name selector: its ports come off the
    whole wildcard (narrower, never wider) and it is reported. Returns the allows
    (empty services dropped) and (allow, deny, exact) for each allow a deny
    cancelled; ``exact`` is False when the deny covered only part of the allow.
    """
    deny_names = [d for d in deny if d.kind != "cidr"]
    # Index the denies, so each allow meets only the denies that overlap it (not all of them: n x m).
    exact: dict[str, list[int]] = {}  # a name deny, by its host
    wild: dict[str, list[int]] = {}  # a wildcard deny, by its suffix
    below: dict[str, list[int]] = {}  # every deny, by each domain strictly above its host
    for i, d in enumerate(deny_names):
        (exact if d.kind == "name" else wild).setdefault(d.host, []).append(i)
        dot = d.host.find(".")
        while dot >= 0:
            below.setdefault(d.host[dot + 1 :], []).append(i)
            dot = d.host.find(".", dot + 1)
    out: list[NameAllow] = []
    cancelled: list[tuple[Rule, Rule, bool]] = []
    for rule in allow:
        if rule.kind == "cidr":
            continue
        service = service_of(rule.ports)
        partial: list[Rule] = []
        host = rule.host
        found = set(exact.get(host, ())) | set(wild.get(host, ())) | set(below.get(host, ()))
        dot = host.find(".")
        while dot >= 0:  # wildcard denies above the allow's host
            found.update(wild.get(host[dot + 1 :], ()))
            dot = host.find(".", dot + 1)
        for d in (deny_names[i] for i in sorted(found)):  # in rule order, as before
            relation = name_relation(rule, d)
            if relation == "none":
                continue
            after = minus(service, service_of(d.ports))
            if relation == "partial" and after != service:
                partial.append(d)
            service = after
            if service.empty:
                cancelled.append((rule, d, relation == "covers"))
                break
        if not service.empty:
            out.append(NameAllow(rule, service, tuple(partial)))
    return out, cancelled


# --- internal ranges --------------------------------------------------------------------------


def name_unreachable(allow_rules: Iterable[Rule]) -> list[Segment]:
    """Where a name must never lead, as address segments: sockguard's internal ranges and metadata addresses,
    with every IPv6 form the policy classifies as them (mapped, compatible, NAT64, 6to4, and all of Teredo,
    whose XOR-ed host no CIDR block can select), minus what the CIDR allows admit (an IPv4 allow also admits
    its mapped and NAT64 forms, which the policy unwraps). A name-based target (Cilium's toFQDNs admits
    whatever a name resolves to) must deny these; sockguard refuses them (``internal-address``)."""
    internal: list[Entry] = []
    for net, category in internal_nets(include_loopback=False):
        internal.append(Entry(net, ALL, category))
        if net.version == 4:
            internal += [Entry(twin, ALL, f"{category} (as IPv6)") for twin in embeddings(net)]
    internal.append(Entry(TEREDO, ALL, "teredo"))
    allows = allow_entries(allow_rules)
    allows += [Entry(twin, e.service, e.label) for e in allows if e.net.version == 4 for twin in routable_forms(e.net)]
    return flatten(internal, allows, keep_labels=False)


def internal_nets(include_loopback: bool) -> list[tuple[Net, str]]:
    """sockguard's non-public ranges and metadata addresses: a *name* never reaches these
    unless an IP/CIDR rule covers the address (``internal-address`` decisions)."""
    from sockguard.addresses import parse_network

    out = []
    for table in (addresses._V4_RANGES, addresses._V6_RANGES):
        for text, prefix, category in table:
            if category == "loopback" and not include_loopback:
                continue
            version, network, length = parse_network(f"{text}/{prefix}")
            out.append((Net(version, network, length), category))
    for text in addresses.METADATA_ADDRESSES:
        version, network, length = parse_network(text)
        net = Net(version, network, length)
        if not any(n.contains(net) for n, _ in out):
            out.append((net, "metadata"))
    return out
