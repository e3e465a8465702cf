"""IP address parsing and classification, with sockguard's own range table.

Pure code: no sockets, no I/O, and deliberately not built on :mod:`ipaddress`
(5 ms to import, and its ``is_private``/``is_global`` answers changed between
CPython patch releases). An address is a ``(version, value)`` pair of ints.
"""

from __future__ import annotations

from _bisect import bisect_right  # (bisect.py only re-exports it)

Address = tuple[int, int]  # (4 | 6, integer value)

_V4_MAX = (1 << 32) - 1
_V6_MAX = (1 << 128) - 1
_HEX = frozenset("0123456789abcdefABCDEF")
_OCT = frozenset("01234567")
_DEC = frozenset("0123456789")


def parse_ipv4_strict(text: str) -> int | None:
    """Dotted quad only (a.b.c.d, decimal, no leading zeros): the form rules use."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not part or len(part) > 3 or not _DEC.issuperset(part):
            return None
        if len(part) > 1 and part[0] == "0":
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = (value << 8) | octet
    return value


def parse_ipv4_loose(text: str) -> int | None:
    """Every spelling glibc's ``inet_aton`` accepts: ``127.1``, ``0x7f.1``,
    ``0177.0.0.1``, ``2130706433``. getaddrinfo() takes these without DNS, so
    the guard must decide on the address they really name."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        if part[:2] in ("0x", "0X"):
            digits, base, alphabet = part[2:], 16, _HEX
        elif len(part) > 1 and part[0] == "0":
            digits, base, alphabet = part[1:], 8, _OCT
        else:
            digits, base, alphabet = part, 10, _DEC
        # Decimal has no leading zeros, so more than 10 digits is out of range
        # (and int() refuses over 4300 digits with ValueError).
        if not digits or not alphabet.issuperset(digits) or (base == 10 and len(digits) > 10):
            return None
        numbers.append(int(digits, base))
    *head, last = numbers
    if any(n > 255 for n in head):
        return None
    if last >= 1 << (8 * (4 - len(head))):
        return None
    value = 0
    for n in head:
        value = (value << 8) | n
    return (value << (8 * (4 - len(head)))) | last


def parse_ipv6(text: str) -> int | None:
    """RFC 4291 text form (what ``inet_pton(AF_INET6)`` accepts), without a zone."""
    if not text or len(text) > 45:
        return None
    if text.count("::") > 1:
        return None
    tail_v4: int | None = None
    head, sep, tail = text.partition("::")
    left = head.split(":") if head else []
    right = tail.split(":") if (sep and tail) else []
    groups_side = right if sep else left
    if groups_side and "." in groups_side[-1]:
        tail_v4 = parse_ipv4_strict(groups_side[-1])
        if tail_v4 is None:
            return None
        groups_side.pop()
    words: list[int] = []
    for side in (left, right):
        for group in side:
            if not 1 <= len(group) <= 4 or not _HEX.issuperset(group):
                return None
    count = len(left) + len(right) + (2 if tail_v4 is not None else 0)
    if sep:
        if count > 7:
            return None
        words = [int(g, 16) for g in left] + [0] * (8 - count) + [int(g, 16) for g in right]
    else:
        if count != 8:
            return None
        words = [int(g, 16) for g in left]
    value = 0
    for word in words:
        value = (value << 16) | word
    if tail_v4 is not None:
        value = (value << 32) | tail_v4
    return value


def split_zone(text: str) -> tuple[str, str]:
    head, _, zone = text.partition("%")
    return head, zone


def parse_address(text: str) -> Address | None:
    """Any numeric host the C library would accept without DNS, else None."""
    if ":" in text:
        value = parse_ipv6(split_zone(text)[0])
        return None if value is None else (6, value)
    value = parse_ipv4_loose(text)
    return None if value is None else (4, value)


def format_address(addr: Address) -> str:
    version, value = addr
    if version == 4:
        return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))
    words = [(value >> (112 - 16 * i)) & 0xFFFF for i in range(8)]
    # Longest run of zero words (length >= 2) becomes "::", first one wins.
    best_start, best_len, run_start = -1, 0, -1
    for i, word in enumerate([*words, 1]):
        if word == 0 and i < 8:
            if run_start < 0:
                run_start = i
        elif run_start >= 0:
            if i - run_start > best_len:
                best_start, best_len = run_start, i - run_start
            run_start = -1
    if best_len < 2:
        return ":".join(f"{w:x}" for w in words)
    left = ":".join(f"{w:x}" for w in words[:best_start])
    right = ":".join(f"{w:x}" for w in words[best_start + best_len :])
    return f"{left}::{right}"


def parse_network(text: str) -> tuple[int, int, int]:
    """``addr`` or ``addr/len`` -> (version, network, prefixlen). Raises ValueError.

    Rules must be written plainly (dotted quad, RFC 4291); host bits set is an error
    rather than a silent widening.
    """
    addr_text, slash, len_text = text.partition("/")
    if ":" in addr_text:
        version, bits, value = 6, 128, parse_ipv6(addr_text)
    else:
        version, bits, value = 4, 32, parse_ipv4_strict(addr_text)
    if value is None:
        form = "an IPv6 address" if version == 6 else "an IP address (write IPv4 as a.b.c.d)"
        raise ValueError(f"{addr_text!r} is not {form}")
    prefix = bits
    if slash:
        if not (len_text.isascii() and len_text.isdigit() and len(len_text) <= 3) or int(len_text) > bits:
            raise ValueError(f"prefix length {len_text!r} must be 0-{bits}")
        prefix = int(len_text)
    host_mask = (1 << (bits - prefix)) - 1
    if value & host_mask:
        network = format_address((version, value & ~host_mask))
        raise ValueError(f"{text!r} has host bits set; did you mean {network}/{prefix}?")
    return version, value, prefix


# --- classification -------------------------------------------------------

#: Addresses that are cloud metadata / host-agent endpoints.
METADATA_ADDRESSES: dict[str, str] = {
    "169.254.169.254": "AWS/GCP/Azure/OpenStack instance metadata",
    "169.254.169.253": "AWS VPC DNS (link-local)",
    "169.254.170.2": "AWS ECS task metadata / credentials",
    "169.254.170.23": "AWS EKS pod identity agent",
    "fd00:ec2::254": "AWS instance metadata (IPv6)",
    "fd00:ec2::23": "AWS EKS pod identity agent (IPv6)",
    "100.100.100.200": "Alibaba Cloud metadata",
    "192.0.0.192": "Oracle Cloud metadata",
    "168.63.129.16": "Azure WireServer / host agent",
}

#: Hostnames that reach metadata services whatever DNS says.
METADATA_NAMES: frozenset[str] = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
        "metadata.tencentyun.com",
    }
)

# (network, prefixlen, category). Documentation ranges (192.0.2.0/24,
# 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) are deliberately *public*:
# they never route, which makes them the stand-ins for internet hosts in tests.
_V4_RANGES = [
    ("0.0.0.0", 8, "unspecified"),
    ("10.0.0.0", 8, "private"),
    ("100.64.0.0", 10, "cgnat"),
    ("127.0.0.0", 8, "loopback"),
    ("169.254.0.0", 16, "link-local"),
    ("172.16.0.0", 12, "private"),
    ("192.0.0.0", 24, "ietf-reserved"),
    ("192.88.99.0", 24, "6to4-relay"),
    ("192.168.0.0", 16, "private"),
    ("198.18.0.0", 15, "benchmarking"),
    ("224.0.0.0", 4, "multicast"),
    ("240.0.0.0", 4, "reserved"),
]
_V6_RANGES = [
    ("::", 128, "unspecified"),
    ("::1", 128, "loopback"),
    ("64:ff9b:1::", 48, "nat64-local"),
    ("100::", 64, "discard"),
    ("2001:2::", 48, "benchmarking"),
    ("fc00::", 7, "unique-local"),
    ("fe80::", 10, "link-local"),
    ("fec0::", 10, "site-local"),
    ("ff00::", 8, "multicast"),
]


# The same ranges as (first, last, category) rows of ints, sorted, written out: nothing is parsed at import (this
# module loads at every guarded process's first socket use). tests/test_addresses.py checks them against the
# ranges above, and _METADATA against METADATA_ADDRESSES.
_V4_ROWS = (
    (0x00000000, 0x00FFFFFF, "unspecified"),
    (0x0A000000, 0x0AFFFFFF, "private"),
    (0x64400000, 0x647FFFFF, "cgnat"),
    (0x7F000000, 0x7FFFFFFF, "loopback"),
    (0xA9FE0000, 0xA9FEFFFF, "link-local"),
    (0xAC100000, 0xAC1FFFFF, "private"),
    (0xC0000000, 0xC00000FF, "ietf-reserved"),
    (0xC0586300, 0xC05863FF, "6to4-relay"),
    (0xC0A80000, 0xC0A8FFFF, "private"),
    (0xC6120000, 0xC613FFFF, "benchmarking"),
    (0xE0000000, 0xEFFFFFFF, "multicast"),
    (0xF0000000, 0xFFFFFFFF, "reserved"),
)
_V6_ROWS = (
    (0x0, 0x0, "unspecified"),
    (0x1, 0x1, "loopback"),
    (0x0064_FF9B_0001_0000_0000_0000_0000_0000, 0x0064_FF9B_0001_FFFF_FFFF_FFFF_FFFF_FFFF, "nat64-local"),
    (0x0100_0000_0000_0000_0000_0000_0000_0000, 0x0100_0000_0000_0000_FFFF_FFFF_FFFF_FFFF, "discard"),
    (0x2001_0002_0000_0000_0000_0000_0000_0000, 0x2001_0002_0000_FFFF_FFFF_FFFF_FFFF_FFFF, "benchmarking"),
    (0xFC00_0000_0000_0000_0000_0000_0000_0000, 0xFDFF_FFFF_FFFF_FFFF_FFFF_FFFF_FFFF_FFFF, "unique-local"),
    (0xFE80_0000_0000_0000_0000_0000_0000_0000, 0xFEBF_FFFF_FFFF_FFFF_FFFF_FFFF_FFFF_FFFF, "link-local"),
    (0xFEC0_0000_0000_0000_0000_0000_0000_0000, 0xFEFF_FFFF_FFFF_FFFF_FFFF_FFFF_FFFF_FFFF, "site-local"),
    (0xFF00_0000_0000_0000_0000_0000_0000_0000, 0xFFFF_FFFF_FFFF_FFFF_FFFF_FFFF_FFFF_FFFF, "multicast"),
)
#: (starts, ends, categories) for bisect.
_V4_TABLE: tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]] = tuple(zip(*_V4_ROWS, strict=True))  # type: ignore[assignment]
_V6_TABLE: tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]] = tuple(zip(*_V6_ROWS, strict=True))  # type: ignore[assignment]
#: METADATA_ADDRESSES parsed: address -> its text.
_METADATA: dict[Address, str] = {
    (4, 0xA9FEA9FE): "169.254.169.254",
    (4, 0xA9FEA9FD): "169.254.169.253",
    (4, 0xA9FEAA02): "169.254.170.2",
    (4, 0xA9FEAA17): "169.254.170.23",
    (6, 0xFD00_0EC2_0000_0000_0000_0000_0000_0254): "fd00:ec2::254",
    (6, 0xFD00_0EC2_0000_0000_0000_0000_0000_0023): "fd00:ec2::23",
    (4, 0x646464C8): "100.100.100.200",
    (4, 0xC00000C0): "192.0.0.192",
    (4, 0xA83F8110): "168.63.129.16",
}


def _lookup(table: tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]], value: int) -> str | None:
    starts, ends, categories = table
    i = bisect_right(starts, value) - 1
    if i >= 0 and value <= ends[i]:
        return categories[i]
    return None


def embedded_ipv4(value6: int) -> tuple[str, int] | None:
    """The IPv4 address an IPv6 address carries, and how: these reach (or
    stand for) the IPv4 host, so they are classified as it."""
    top96 = value6 >> 32
    low32 = value6 & _V4_MAX
    if top96 == 0xFFFF:
        return "mapped", low32
    if top96 == 0 and low32 > 1:
        return "compatible", low32
    if top96 == 0x0064FF9B << 64:
        return "nat64", low32
    if value6 >> 112 == 0x2002:
        return "6to4", (value6 >> 80) & _V4_MAX
    if value6 >> 96 == 0x20010000:
        return "teredo", low32 ^ _V4_MAX
    return None


def classify(addr: Address) -> str | None:
    """Category of a non-public address ("loopback", "private", "metadata", ...),
    or None for a public one. IPv4 embedded in IPv6 is unwrapped first."""
    if addr in _METADATA:
        return "metadata"
    version, value = addr
    if version == 4:
        return _lookup(_V4_TABLE, value)
    embedded = embedded_ipv4(value)
    if embedded is not None:
        inner = classify((4, embedded[1]))
        if inner is not None:
            return inner
    return _lookup(_V6_TABLE, value)


def is_loopback(addr: Address) -> bool:
    version, value = addr
    if version == 4:
        return value >> 24 == 127
    if value == 1:
        return True
    return value >> 32 == 0xFFFF and (value & _V4_MAX) >> 24 == 127


def unwrap_routable(addr: Address) -> Address:
    """The IPv4 destination an IPv6 address *connects* to (mapped on a dual-stack
    socket, NAT64 through the translator); other embeddings are only classified."""
    version, value = addr
    if version == 6:
        embedded = embedded_ipv4(value)
        if embedded is not None and embedded[0] in ("mapped", "nat64"):
            return (4, embedded[1])
    return addr
