"""Rule sets for the benchmarks: a realistic 20-rule allowlist and generated lists of any size.

Every name is under ``.test`` and every network is private or a documentation range: rules are only matched,
never connected to (the connect benchmarks target loopback, or lab addresses inside a private namespace).
"""

from __future__ import annotations

#: 19 rules of every kind; scenarios add the one rule their traffic needs, making 20.
FILLER = [
    "api.payments.test:443",
    "auth.payments.test:443",
    "*.storage.test:443",
    "*.cdn.test",
    "queue.internal.test:5672",
    "db.internal.test:5432",
    "cache.internal.test:6379",
    "telemetry.test:4317",
    "*.mirror.test:443",
    "registry.test",
    "10.20.0.0/16",
    "10.30.40.0/24:8080",
    "172.16.5.0/24",
    "192.168.10.7",
    "198.51.100.0/28:443",
    "203.0.113.64/26",
    "[2001:db8:10::/48]:443",
    "2001:db8:20::5",
    "fd00:1234::/32",
]


def generated(count: int) -> list[str]:
    """``count`` rules, a third each exact names, wildcards and networks (five IPv4 /24s for each IPv6 /64),
    some port-scoped, in a shuffled-looking order so no index structure benefits from sorted input."""
    rules = []
    for i in range(count):
        j = (i * 7919) % count  # a permutation of range(count) (7919 is prime and no count here is its multiple)
        kind = j % 3
        port = ":443" if j % 5 == 0 else ""
        if kind == 0:
            rules.append(f"svc{j}.team{j % 97}.test{port}")
        elif kind == 1:
            rules.append(f"*.zone{j}.test{port}")
        elif j % 6 == 5:
            rules.append(f"[2001:db8:{j >> 16:x}:{j & 0xFFFF:x}::/64]{port}")
        else:
            rules.append(_v4_net(j, port))
    return rules


def _v4_net(j: int, port: str) -> str:
    # One /24 per rule inside 10.0.0.0/8 (up to 65,536 of them), so none overlap.
    block = j // 3
    return f"10.{(block >> 8) & 0xFF}.{block & 0xFF}.0/24{port}"


def probes(count: int) -> dict[str, tuple[str, int]]:
    """Destinations whose decision needs each rule kind of :func:`generated` (``count``), with a port.

    Chosen near the middle of the list, so the 10-rule and the 100,000-rule policies answer the same kinds of
    question (exact hit, wildcard hit at depth 3, CIDR hit, misses)."""
    exact = wildcard = net = None
    for j in range(count // 2, count) or range(count):
        if exact is None and j % 3 == 0 and j % 5:
            exact = f"svc{j}.team{j % 97}.test"
        if wildcard is None and j % 3 == 1 and j % 5:
            wildcard = f"a.b.zone{j}.test"
        if net is None and j % 3 == 2 and j % 6 != 5 and j % 5:
            block = j // 3
            net = f"10.{(block >> 8) & 0xFF}.{block & 0xFF}.77"
    assert exact and wildcard and net, count
    return {
        "name: exact rule": (exact, 443),
        "name: wildcard rule": (wildcard, 443),
        "name: not allowed": ("nothing.unlisted.test", 443),
        "address: CIDR rule": (net, 443),
        "address: not allowed": ("198.51.100.200", 443),
    }
