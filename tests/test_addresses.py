# ruff: noqa: RUF001  (fullwidth, circled and Cyrillic look-alikes are the point of these tests)
"""Address parsing and the range table, checked against the C library and an independent reference.

Nothing here opens a socket: ``inet_aton``/``inet_pton`` and ``getaddrinfo(..., AI_NUMERICHOST)`` are pure
parsers (AI_NUMERICHOST never consults DNS), used as the oracle for "what the C library takes as an address".
"""

from __future__ import annotations

import ast
import ipaddress
import socket
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sockguard import addresses
from sockguard.addresses import (
    classify,
    embedded_ipv4,
    format_address,
    is_loopback,
    parse_address,
    parse_ipv4_loose,
    parse_ipv4_strict,
    parse_ipv6,
    parse_network,
    unwrap_routable,
)

SETTINGS = settings(deadline=None, max_examples=400)
V4_MAX = (1 << 32) - 1
V6_MAX = (1 << 128) - 1


def aton(text: str) -> int | None:
    try:
        return int.from_bytes(socket.inet_aton(text), "big")
    except OSError:
        return None


def numeric_v4(text: str) -> int | None:
    """What getaddrinfo() itself takes as an IPv4 address (glibc's inet_aton_exact)."""
    try:
        infos = socket.getaddrinfo(text, None, socket.AF_INET, 0, 0, socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):  # CPython IDNA-encodes str hosts first: "." fails there
        return None
    return int(ipaddress.IPv4Address(infos[0][4][0]))


def pton6(text: str) -> int | None:
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    except OSError:
        return None


def v6(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


# --- IPv4 spellings -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0177.0000.0.01", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x0", "0.0.0.0"),
        ("00", "0.0.0.0"),
        ("4294967295", "255.255.255.255"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("169.16689662", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("1.2.65535", "1.2.255.255"),
        ("1.16777215", "1.255.255.255"),
    ],
)
def test_parse_ipv4_loose_spellings(text: str, expected: str) -> None:
    assert parse_ipv4_loose(text) == int(ipaddress.IPv4Address(expected))
    assert parse_ipv4_loose(text) == aton(text) == numeric_v4(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "1.",
        ".1",
        "1..1",
        "127.0.0.1.",  # trailing dot: a DNS name to glibc, not an address
        "1.2.3.4.5",
        "256.1",
        "1.256.1",
        "1.2.65536",
        "4294967296",
        "0x100000000",
        "08",
        "09.1",
        "0x",
        "0x.1",
        "0xg",
        "1a",
        "-1",
        "+1",
        " 1",
        "1 ",
        "127.0.0.1 x",  # inet_aton takes trailing blank-separated junk; getaddrinfo does not (see below)
        "9" * 11,
        "1" * 5000,  # int() refuses > 4300 decimal digits with ValueError: must be a plain "no"
    ],
)
def test_parse_ipv4_loose_rejects(text: str) -> None:
    assert parse_ipv4_loose(text) is None
    assert numeric_v4(text) is None


def test_fullwidth_digits_are_numeric_only_after_idna() -> None:
    # CPython IDNA-encodes str hosts before C sees them, so getaddrinfo() takes this as 127.0.0.1;
    # parse_ipv4_loose works on the encoded form, which rules.normalize_host produces.
    assert parse_ipv4_loose("１２７.０.０.１") is None
    assert numeric_v4("１２７.０.０.１") == int(ipaddress.IPv4Address("127.0.0.1"))
    assert parse_ipv4_loose("１２７.０.０.１".encode("idna").decode()) == numeric_v4("１２７.０.０.１")


def test_trailing_junk_is_an_intended_difference_from_inet_aton() -> None:
    # glibc's inet_aton() stops at whitespace; getaddrinfo() uses inet_aton_exact(), which does not. The guard
    # must agree with getaddrinfo: "127.0.0.1 x" is a (bogus) name there, never the address 127.0.0.1.
    assert aton("127.0.0.1 x") == int(ipaddress.IPv4Address("127.0.0.1"))
    assert numeric_v4("127.0.0.1 x") is None
    assert parse_ipv4_loose("127.0.0.1 x") is None


@st.composite
def ipv4_spellings(draw: st.DrawFn) -> str:
    """Dotted/hex/octal/decimal spellings of 1-4 parts, sometimes out of range or malformed."""
    count = draw(st.integers(1, 4))
    parts = []
    for i in range(count):
        last = i == count - 1
        limit = (1 << (8 * (5 - count))) - 1 if last else 255
        value = draw(st.one_of(st.integers(0, limit), st.sampled_from([limit, limit + 1]), st.integers(0, 1 << 40)))
        style = draw(st.sampled_from(["dec", "oct", "hex", "HEX", "bad"]))
        zeros = "0" * draw(st.integers(0, 3))
        if style == "dec":
            part = str(value)
        elif style == "oct":
            part = "0" + zeros + format(value, "o")
        elif style in ("hex", "HEX"):
            digits = format(value, "x" if style == "hex" else "X")
            part = draw(st.sampled_from(["0x", "0X"])) + zeros + digits
        else:
            part = draw(st.sampled_from(["", "0x", "0X", "08", "019", "0x1g", "1a", "x1", "00x1", "0xx1", "1e3"]))
        parts.append(part)
    return ".".join(parts) + draw(st.sampled_from(["", "", "", ".", ".0"]))


@SETTINGS
@given(ipv4_spellings())
def test_parse_ipv4_loose_agrees_with_inet_aton(text: str) -> None:
    assert parse_ipv4_loose(text) == aton(text)


@SETTINGS
@given(st.one_of(ipv4_spellings(), st.text(alphabet="0123456789abcdefxX.", max_size=24)))
@example("0x7f.1")
def test_parse_ipv4_loose_agrees_with_getaddrinfo(text: str) -> None:
    assert parse_ipv4_loose(text) == numeric_v4(text)


@pytest.mark.parametrize(
    ("text", "ok"),
    [("1.2.3.4", True), ("0.0.0.0", True), ("255.255.255.255", True), ("01.2.3.4", False), ("1.2.3", False)],
)
def test_parse_ipv4_strict(text: str, ok: bool) -> None:
    assert (parse_ipv4_strict(text) is not None) is ok


@SETTINGS
@given(st.integers(0, V4_MAX))
def test_parse_ipv4_strict_round_trips(value: int) -> None:
    text = str(ipaddress.IPv4Address(value))
    assert parse_ipv4_strict(text) == value == parse_ipv4_loose(text)
    assert format_address((4, value)) == text


# --- IPv6 -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "::",
        "::1",
        "1::",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1::8",
        "0001:0002::0008",
        "ABCD::ef01",
        "::ffff:1.2.3.4",
        "::1.2.3.4",
        "64:ff9b::192.0.2.33",
        "1:2:3:4:5:6:1.2.3.4",
        "fe80::1",
    ],
)
def test_parse_ipv6_accepts(text: str) -> None:
    assert parse_ipv6(text) == pton6(text) == v6(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":",
        ":::",
        "1:::2",
        "1::2::3",
        ":1::",
        "1:2:3:4:5:6:7:8::",
        "1::2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:8:9",
        "12345::",
        "g::",
        "::1.2.3",
        "::1.2.3.04",
        "::256.1.1.1",
        "::1.2.3.4:5",
        "1.2.3.4::",
        "1:2:3:4:5:6:7:1.2.3.4",
        "fe80::1%eth0",  # zones are split off by parse_address, not parse_ipv6
        "::1 ",
    ],
)
def test_parse_ipv6_rejects(text: str) -> None:
    assert parse_ipv6(text) is None
    assert pton6(text) is None


@st.composite
def ipv6_values(draw: st.DrawFn) -> int:
    words = draw(st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, None]), min_size=8, max_size=8))
    value = 0
    for word in words:
        value = (value << 16) | (draw(st.integers(0, 0xFFFF)) if word is None else word)
    return value


@st.composite
def ipv6_spellings(draw: st.DrawFn) -> str:
    """Full, padded, mixed-case, arbitrarily compressed and dotted-tail spellings, sometimes broken."""
    value = draw(ipv6_values())
    words = [f"{(value >> (112 - 16 * i)) & 0xFFFF:x}" for i in range(8)]
    words = [("0" * draw(st.integers(0, 4 - len(w))) + w) for w in words]
    words = [w.upper() if draw(st.booleans()) else w for w in words]
    tail = None
    if draw(st.booleans()):
        low = value & V4_MAX
        tail = str(ipaddress.IPv4Address(low))
        words = words[:6]
    start = draw(st.integers(0, len(words)))
    length = draw(st.integers(0, len(words) - start))
    if length and all(int(w, 16) == 0 for w in words[start : start + length]):
        left, right = words[:start], words[start + length :]
        if tail is not None:
            right = [*right, tail]
        text = ":".join(left) + "::" + ":".join(right)
    else:
        text = ":".join(words + ([tail] if tail is not None else []))
    mutation = draw(st.sampled_from(["none"] * 6 + ["drop", "dup", "insert"]))
    if mutation != "none" and text:
        i = draw(st.integers(0, len(text) - 1))
        if mutation == "drop":
            text = text[:i] + text[i + 1 :]
        elif mutation == "dup":
            text = text[:i] + text[i] + text[i:]
        else:
            text = text[:i] + draw(st.sampled_from(":.0fg")) + text[i:]
    return text


@SETTINGS
@given(st.one_of(ipv6_spellings(), st.text(alphabet="0123456789abcdefABCDEF:.", max_size=46)))
def test_parse_ipv6_agrees_with_inet_pton(text: str) -> None:
    assert parse_ipv6(text) == pton6(text)


@SETTINGS
@given(ipv6_values())
def test_format_address_is_rfc5952_like_ipaddress(value: int) -> None:
    mapped = value >> 32 == 0xFFFF
    if sys.version_info >= (3, 13) and mapped:
        # Intended difference: sockguard always prints hex words (::ffff:7f00:1), the form CPython's ipaddress
        # used until 3.13 switched mapped addresses to ::ffff:127.0.0.1. Both parse back to the same value.
        return
    text = format_address((6, value))
    assert text == ipaddress.IPv6Address(value).compressed
    assert parse_ipv6(text) == value == pton6(text)


def test_format_address_mapped_is_hex() -> None:
    assert format_address((6, v6("::ffff:127.0.0.1"))) == "::ffff:7f00:1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.1", (4, 0x7F000001)),
        ("0x7f.1", (4, 0x7F000001)),
        ("::1", (6, 1)),
        ("::ffff:7f00:1", (6, v6("::ffff:127.0.0.1"))),
        ("fe80::1%eth0", (6, v6("fe80::1"))),
        ("fe80::1%", (6, v6("fe80::1"))),
        ("example.test", None),
        ("", None),
        ("1:2", None),
    ],
)
def test_parse_address(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_address(text) == expected


# --- networks -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.0/8", (4, 10 << 24, 8)),
        ("0.0.0.0/0", (4, 0, 0)),
        ("203.0.113.7", (4, int(ipaddress.IPv4Address("203.0.113.7")), 32)),
        ("2001:db8::/32", (6, v6("2001:db8::"), 32)),
        ("::/0", (6, 0, 0)),
        ("::1", (6, 1, 128)),
    ],
)
def test_parse_network(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_network(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.1/8", "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"),
        ("2001:db8::1/32", "has host bits set; did you mean 2001:db8::/32?"),
        ("10.0.0.0/33", "prefix length '33' must be 0-32"),
        ("::/129", "prefix length '129' must be 0-128"),
        ("10.0.0.0/", "prefix length '' must be 0-32"),
        ("10.0.0.0/-1", "prefix length '-1' must be 0-32"),
        ("10.0.0.0/８", "prefix length '８' must be 0-32"),
        ("10.0.0.0/²", "prefix length '²' must be 0-32"),
        ("10.0.0.0/" + "9" * 5000, "must be 0-32"),
        ("127.1", "'127.1' is not an IP address (write IPv4 as a.b.c.d)"),
        ("010.0.0.0/8", "is not an IP address"),
        ("1:2:3", "'1:2:3' is not an IPv6 address"),
    ],
)
def test_parse_network_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_network(text)
    assert message in str(info.value)


# --- classification -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "category"),
    [
        # Documentation ranges are public on purpose: they are the tests' stand-ins for internet hosts.
        ("192.0.2.1", None),
        ("198.51.100.7", None),
        ("203.0.113.255", None),
        ("2001:db8::1", None),
        ("2001:db8:ffff::1", None),
        ("::ffff:203.0.113.7", None),
        ("64:ff9b::203.0.113.7", None),
        ("2002:cb00:7107::1", None),  # 6to4 of 203.0.113.7
        ("0.0.0.0", "unspecified"),
        ("0.255.255.255", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("172.32.0.0", None),
        ("172.15.255.255", None),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "cgnat"),
        ("100.127.255.255", "cgnat"),
        ("100.128.0.0", None),
        ("100.63.255.255", None),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("169.254.1.1", "link-local"),
        ("192.0.0.8", "ietf-reserved"),
        ("192.88.99.1", "6to4-relay"),
        ("198.18.0.1", "benchmarking"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "reserved"),
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "metadata"),
        ("100.100.100.200", "metadata"),
        ("192.0.0.192", "metadata"),
        ("168.63.129.16", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),
        ("fc00::1", "unique-local"),
        ("fdff:ffff::1", "unique-local"),
        ("ff02::1", "multicast"),
        ("100::1", "discard"),
        ("2001:2::1", "benchmarking"),
        ("64:ff9b:1::1", "nat64-local"),
        # IPv4 embedded in IPv6, every way, is classified as the IPv4 host.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:a9fe:a9fe", "metadata"),
        ("::127.0.0.1", "loopback"),
        ("::169.254.169.254", "metadata"),
        ("::10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("64:ff9b::10.0.0.1", "private"),
        ("2002:a9fe:a9fe::1", "metadata"),
        ("2002:7f00:1::", "loopback"),
        ("2002:c058:6301::", "6to4-relay"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", None),  # RFC 4380 example: client 192.0.2.45
        ("2001:0:4136:e378:8000:63bf:5601:5601", "metadata"),  # Teredo client 169.254.169.254 (obfuscated)
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),  # Teredo client 10.0.0.1
    ],
)
def test_classify_examples(text: str, category: str | None) -> None:
    addr = parse_address(text)
    assert addr is not None
    assert classify(addr) == category


def _ref_network(text: str, prefix: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(f"{text}/{prefix}")


REF_V4 = [(_ref_network(t, p), c) for t, p, c in addresses._V4_RANGES]
REF_V6 = [(_ref_network(t, p), c) for t, p, c in addresses._V6_RANGES]
REF_METADATA = {ipaddress.ip_address(t) for t in addresses.METADATA_ADDRESSES}
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def reference_classify(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Linear scan over the range table; embedded IPv4 found with ipaddress' own accessors."""
    if ip in REF_METADATA:
        return "metadata"
    if ip.version == 4:
        return next((c for net, c in REF_V4 if ip in net), None)
    assert isinstance(ip, ipaddress.IPv6Address)
    value = int(ip)
    inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
    if inner is None and (ip in NAT64 or (value >> 32 == 0 and value > 1)):
        inner = ipaddress.IPv4Address(value & V4_MAX)
    if inner is not None:
        found = reference_classify(inner)
        if found is not None:
            return found
    return next((c for net, c in REF_V6 if ip in net), None)


def test_written_out_tables_are_the_ranges() -> None:
    """addresses.py writes its range table and metadata addresses out as ints (nothing parsed at import, on every
    process's first socket use): they must be exactly the ranges and addresses it lists as text."""
    for ref, rows in ((REF_V4, addresses._V4_ROWS), (REF_V6, addresses._V6_ROWS)):
        expected = sorted((int(net.network_address), int(net.broadcast_address), c) for net, c in ref)
        assert list(rows) == expected
    assert list(zip(*addresses._V4_TABLE, strict=True)) == list(addresses._V4_ROWS)
    assert list(zip(*addresses._V6_TABLE, strict=True)) == list(addresses._V6_ROWS)
    parsed = [ipaddress.ip_address(t) for t in addresses.METADATA_ADDRESSES]
    assert sorted(addresses._METADATA.items()) == sorted(((ip.version, int(ip)), str(ip)) for ip in parsed)


def _edges(ranges: list, top: int) -> list[int]:
    points = []
    for net, _ in ranges:
        first, last = int(net.network_address), int(net.broadcast_address)
        points += [max(first - 1, 0), first, last, min(last + 1, top)]
    return points


V4_EDGES = _edges(REF_V4, V4_MAX) + [int(ip) for ip in REF_METADATA if ip.version == 4]
V6_EDGES = _edges(REF_V6, V6_MAX) + [int(ip) for ip in REF_METADATA if ip.version == 6]
v4_values = st.one_of(st.integers(0, V4_MAX), st.sampled_from(V4_EDGES))


@st.composite
def v6_classify_values(draw: st.DrawFn) -> int:
    low = draw(v4_values)
    kind = draw(st.sampled_from(["random", "edge", "mapped", "compat", "nat64", "6to4", "teredo"]))
    noise = draw(st.integers(0, (1 << 80) - 1))
    if kind == "random":
        return draw(st.integers(0, V6_MAX))
    if kind == "edge":
        return draw(st.sampled_from(V6_EDGES))
    if kind == "mapped":
        return (0xFFFF << 32) | low
    if kind == "compat":
        return low
    if kind == "nat64":
        return (0x64FF9B << 96) | low
    if kind == "6to4":
        return (0x2002 << 112) | (low << 80) | (noise & ((1 << 80) - 1))
    return (0x20010000 << 96) | ((noise & ((1 << 64) - 1)) << 32) | (low ^ V4_MAX)


@SETTINGS
@given(v4_values)
def test_classify_v4_agrees_with_reference(value: int) -> None:
    assert classify((4, value)) == reference_classify(ipaddress.IPv4Address(value))


@SETTINGS
@given(v6_classify_values())
def test_classify_v6_agrees_with_reference(value: int) -> None:
    assert classify((6, value)) == reference_classify(ipaddress.IPv6Address(value))


def test_range_table_has_no_overlaps() -> None:
    # _lookup() bisects on range starts, which is only right for disjoint ranges.
    for table in (REF_V4, REF_V6):
        nets = [net for net, _ in table]
        for i, a in enumerate(nets):
            for b in nets[i + 1 :]:
                assert not a.overlaps(b), (a, b)


@pytest.mark.parametrize(
    ("text", "kind", "inner"),
    [
        ("::ffff:10.0.0.1", "mapped", "10.0.0.1"),
        ("::10.0.0.1", "compatible", "10.0.0.1"),
        ("64:ff9b::10.0.0.1", "nat64", "10.0.0.1"),
        ("2002:a00:1::", "6to4", "10.0.0.1"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo", "192.0.2.45"),
    ],
)
def test_embedded_ipv4(text: str, kind: str, inner: str) -> None:
    assert embedded_ipv4(v6(text)) == (kind, int(ipaddress.IPv4Address(inner)))


@pytest.mark.parametrize("text", ["::", "::1", "2001:db8::1", "fe80::1", "64:ff9b:1::1"])
def test_no_embedded_ipv4(text: str) -> None:
    assert embedded_ipv4(v6(text)) is None


@pytest.mark.parametrize(
    ("text", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("128.0.0.1", False),
        ("::2", False),
        ("::127.0.0.1", False),  # IPv4-compatible is deprecated and does not reach the local host
        ("64:ff9b::7f00:1", False),
    ],
)
def test_is_loopback(text: str, loopback: bool) -> None:
    addr = parse_address(text)
    assert addr is not None
    assert is_loopback(addr) is loopback


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("64:ff9b::203.0.113.7", "203.0.113.7"),
        ("::203.0.113.7", "::cb00:7107"),  # only classified, never connected to as IPv4
        ("2002:cb00:7107::1", "2002:cb00:7107::1"),
        ("203.0.113.7", "203.0.113.7"),
    ],
)
def test_unwrap_routable(text: str, expected: str) -> None:
    addr, want = parse_address(text), parse_address(expected)
    assert addr is not None
    assert unwrap_routable(addr) == want


def test_addresses_does_not_import_ipaddress() -> None:
    # ipaddress costs ~5 ms at start-up and its is_private/is_global changed between patch releases.
    tree = ast.parse(Path(addresses.__file__).read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            assert all(alias.name != "ipaddress" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.module != "ipaddress"
