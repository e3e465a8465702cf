# ruff: noqa: RUF001, RUF003  (fullwidth, circled and Cyrillic look-alikes are the point of these tests)
"""Rule syntax and host normalisation (pure: no sockets)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from sockguard.policy import Policy
from sockguard.rules import InvalidHost, Rule, RuleError, normalize_host, parse_rule, split_rules

SETTINGS = settings(deadline=None, max_examples=300)


def v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def v6(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


# --- valid rules ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "host", "version", "network", "prefix", "ports"),
    [
        ("api.example.com", "name", "api.example.com", 0, 0, 0, None),
        ("API.Example.COM.", "name", "api.example.com", 0, 0, 0, None),
        ("  api.example.com  ", "name", "api.example.com", 0, 0, 0, None),
        ("*.example.com", "wildcard", "example.com", 0, 0, 0, None),
        ("api.example.com:443", "name", "api.example.com", 0, 0, 0, (443, 443)),
        ("api.example.com:8000-8100", "name", "api.example.com", 0, 0, 0, (8000, 8100)),
        ("*.example.com:443", "wildcard", "example.com", 0, 0, 0, (443, 443)),
        ("localhost", "name", "localhost", 0, 0, 0, None),
        ("bücher.example", "name", "xn--bcher-kva.example", 0, 0, 0, None),
        ("ｅｘａｍｐｌｅ.com", "name", "example.com", 0, 0, 0, None),
        ("_service._tcp.example.com", "name", "_service._tcp.example.com", 0, 0, 0, None),
        ("203.0.113.7", "cidr", "203.0.113.7", 4, v4("203.0.113.7"), 32, None),
        ("203.0.113.7:443", "cidr", "203.0.113.7", 4, v4("203.0.113.7"), 32, (443, 443)),
        ("10.0.0.0/8", "cidr", "10.0.0.0/8", 4, v4("10.0.0.0"), 8, None),
        ("10.0.0.0/8:1-1024", "cidr", "10.0.0.0/8", 4, v4("10.0.0.0"), 8, (1, 1024)),
        ("0.0.0.0/0", "cidr", "0.0.0.0/0", 4, 0, 0, None),
        ("2001:db8::1", "cidr", "2001:db8::1", 6, v6("2001:db8::1"), 128, None),
        ("2001:DB8:0:0::1", "cidr", "2001:db8::1", 6, v6("2001:db8::1"), 128, None),
        ("2001:db8::/32", "cidr", "2001:db8::/32", 6, v6("2001:db8::"), 32, None),
        ("[2001:db8::/32]:443", "cidr", "2001:db8::/32", 6, v6("2001:db8::"), 32, (443, 443)),
        ("[::1]:8080", "cidr", "::1", 6, 1, 128, (8080, 8080)),
        ("[::1]", "cidr", "::1", 6, 1, 128, None),
        ("::ffff:10.0.0.0/104", "cidr", "::ffff:a00:0/104", 6, v6("::ffff:10.0.0.0"), 104, None),
        ("host:1", "name", "host", 0, 0, 0, (1, 1)),
        ("host:65535", "name", "host", 0, 0, 0, (65535, 65535)),
    ],
)
def test_parse_rule(
    text: str, kind: str, host: str, version: int, network: int, prefix: int, ports: tuple[int, int] | None
) -> None:
    assert parse_rule(text) == Rule(text.strip(), kind, host, version, network, prefix, ports)


# --- malformed rules --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("10.0.0.1/8", "has host bits set; did you mean 10.0.0.0/8?"),
        ("2001:db8::1/32", "has host bits set; did you mean 2001:db8::/32?"),
        ("10.0.0.0/33", "prefix length '33' must be 0-32"),
        ("10.0.0.0/８", "prefix length '８' must be 0-32"),
        ("[::/129]", "prefix length '129' must be 0-128"),
        ("host:0", "port range '0' must lie within 1-65535"),
        ("host:65536", "port range '65536' must lie within 1-65535"),
        ("host:443-80", "port range '443-80' must lie within 1-65535, low to high"),
        ("host:", "port '' must be N or N-M"),
        ("host:https", "port 'https' must be N or N-M"),
        ("host:-5", "port '-5' must be N or N-M"),
        ("host:1-2-3", "port '1-2-3' must be N or N-M"),
        ("host:４４３", "port '４４３' must be N or N-M"),
        ("host:²", "port '²' must be N or N-M"),
        ("host:" + "9" * 5000, "must be N or N-M"),
        ("[::1]:", "port '' must be N or N-M"),
        ("[::1]x", "expected ':PORT' after ']'"),
        ("[::1", "missing ']'"),
        ("[example.com]:443", "brackets are only for IPv6 addresses"),
        ("[10.0.0.1]", "brackets are only for IPv6 addresses"),
        ("https://api.example.com", "looks like a URL; write the host (and port)"),
        ("http://api.example.com:8080/path", "looks like a URL"),
        ("api.example.com/v1", "a path is not part of a rule"),
        ("*", "'*' is only allowed as a leading '*.' label"),
        ("*example.com", "'*' is only allowed as a leading '*.' label"),
        ("api.*.example.com", "'*' is only allowed as a leading '*.' label"),
        ("*.*.example.com", "'*' is only allowed as a leading '*.' label"),
        ("api*.example.com", "'*' is only allowed as a leading '*.' label"),
        ("*.", "is not a valid DNS name"),
        ("127.1", "'127.1' is not an IP address (write IPv4 as a.b.c.d)"),
        ("2130706433", "'2130706433' is not an IP address"),
        ("0x7f.1", "ambiguous numeric host; write the address as a.b.c.d"),
        ("0x7f000001", "ambiguous numeric host"),
        ("0177.0.0.1", "is not an IP address"),
        ("１２７.０.０.１", "ambiguous numeric host"),
        ("*.0x7f.1", "ambiguous numeric host"),
        ("127.0.0.1.", "is not an IP address"),
        ("*.127.0.0.1.", "numeric address with a trailing dot"),
        ("1:2:3", "'1:2:3' is not an IPv6 address"),
        ("2001:db8::/32:443", "prefix length '32:443' must be 0-128"),
        ("fe80::1%eth0", "is not an IPv6 address"),
        ("evil.test\x00.allowed.test", "is not a valid DNS name (characters ['\\x00'])"),
        ("api example.com", "is not a valid DNS name (characters [' '])"),
        ("user@example.com", "is not a valid DNS name"),
        ("a..example.com", "has an empty or over-long label"),
        ("a" * 64 + ".example.com", "has an empty or over-long label"),
        ("a." * 127 + "com", "is not a valid DNS name (length)"),
    ],
)
def test_malformed_rule_names_rule_and_problem(text: str, problem: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rule(text)
    message = str(info.value)
    assert problem in message
    assert message.startswith(f"rule {text.strip()!r}: ")


@pytest.mark.parametrize(("value", "problem"), [("", "empty rule"), ("   ", "empty rule"), (443, "must be a string")])
def test_rule_that_is_not_text(value: object, problem: str) -> None:
    with pytest.raises(RuleError, match=problem):
        parse_rule(value)  # type: ignore[arg-type]


def test_rule_error_is_a_value_error() -> None:
    assert issubclass(RuleError, ValueError)


@pytest.mark.parametrize(
    ("text", "rules"),
    [
        ("a.test,b.test", ["a.test", "b.test"]),
        ("a.test b.test\n*.c.test:443", ["a.test", "b.test", "*.c.test:443"]),
        (" , a.test ,, ", ["a.test"]),
        ("", []),
    ],
)
def test_split_rules(text: str, rules: list[str]) -> None:
    assert split_rules(text) == rules


# --- host normalisation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        (b"Example.com.", "example.com"),
        (bytearray(b"example.com"), "example.com"),
        ("ｅｘａｍｐｌｅ．ｃｏｍ", "example.com"),  # fullwidth letters and dot
        ("ⓔⓧⓐⓜⓟⓛⓔ.com", "example.com"),  # circled letters
        ("example。com", "example.com"),  # ideographic full stop is a label separator
        ("ＥＸＡＭＰＬＥ.com", "example.com"),
        ("ex\u00adample.com", "example.com"),  # soft hyphen: mapped to nothing by nameprep
        ("exаmple.com", "xn--exmple-4nf.com"),  # Cyrillic а: a homograph is its own label
        ("faß.de", "fass.de"),  # IDNA 2003, as CPython's codec does
        ("bücher.example", "xn--bcher-kva.example"),
        ("１２７.０.０.１", "127.0.0.1"),  # numeric after IDNA: policy decides on the address
        ("0x7F.1", "0x7f.1"),
        ("::FFFF:7F00:1", "::ffff:7f00:1"),
        ("fe80::1%Eth0", "fe80::1%Eth0"),  # the zone is an interface name: case kept
        ("::ｆｆｆｆ:１２７．０．０．１", "::ffff:127.0.0.1"),
        ("a" * 63 + ".test", "a" * 63 + ".test"),
    ],
)
def test_normalize_host(host: str | bytes, expected: str) -> None:
    assert normalize_host(host) == expected


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("evil.test\x00.allowed.test", "not a valid DNS name"),
        ("évil\x00.allowed.test", "not a valid DNS name"),  # nameprep lets NUL through; the name check does not
        ("évil\udc80.test", "fails IDNA encoding"),
        (b"evil.test\x00.allowed.test", "not a valid DNS name"),
        ("::1\x00", "is not an IPv6 address"),
        ("::1%\x00", "is not an IPv6 address"),
        ("allowed.test\x00", "not a valid DNS name"),
        ("api example.com", "not a valid DNS name"),
        ("api.example.com\n", "not a valid DNS name"),
        ("a/b.test", "not a valid DNS name"),
        ("*.example.com", "not a valid DNS name"),
        ("", "not a valid DNS name (length)"),
        (".", "not a valid DNS name (length)"),
        ("a..b", "empty or over-long label"),
        (".a", "empty or over-long label"),
        ("a" * 64 + ".test", "empty or over-long label"),
        ("a." * 127 + "bc", "not a valid DNS name (length)"),
        ("127.0.0.1.", "numeric address with a trailing dot"),
        ("2130706433.", "numeric address with a trailing dot"),
        ("１２７.０.０.１。", "numeric address with a trailing dot"),
        ("::1.", "is not an IPv6 address"),
        ("example.com:443", "contains ':' but is not an IPv6 address"),
        ("x:\n.allowed.test", "contains ':' but is not an IPv6 address"),
        ("fe80::1%", "is not an IPv6 address"),
        ("fe80::1%a b", "is not an IPv6 address"),
        ("[::1]", "contains ':' but is not an IPv6 address"),
        (b"caf\xc3\xa9.test", "non-ASCII bytes"),
        (None, "host must be str or bytes, not NoneType"),
        (443, "host must be str or bytes, not int"),
    ],
)
def test_normalize_host_refuses(host: object, problem: str) -> None:
    with pytest.raises(InvalidHost) as info:
        normalize_host(host)  # type: ignore[arg-type]
    assert problem in str(info.value)


HOST_ALPHABET = st.sampled_from(
    [
        *"abcxyzABZ019-._",
        "ｅ",
        "Ｘ",
        "１",
        "ⓐ",
        "а",
        "é",
        "ß",
        "ü",
        "．",
        "。",
        "\u00ad",
        "ǅ",
        "ﬁ",
        "Ⅷ",
        "\x00",
        " ",
        ":",
        "*",
        "%",
    ]
)
hosts = st.one_of(
    st.text(HOST_ALPHABET, min_size=1, max_size=40),
    st.lists(st.text(HOST_ALPHABET, min_size=1, max_size=12), min_size=1, max_size=5).map(".".join),
)


@SETTINGS
@given(hosts)
@example("ＥＸＡＭＰＬＥ.com.")
@example("ABC.ｄｅ")
@example("ﬁx.example")
def test_normalize_host_is_idempotent_and_equals_idna(host: str) -> None:
    try:
        normalised = normalize_host(host)
    except InvalidHost:
        return
    assert normalize_host(normalised) == normalised
    # What CPython's socket layer sends to the resolver (getaddrinfo IDNA-encodes every str host), folded;
    # an IPv6 zone is an interface name, so its case is kept.
    encoded = host.encode("idna").decode("ascii")
    if ":" in encoded:
        head, percent, zone = encoded.partition("%")
        expected = head.lower() + percent + zone
    else:
        expected = encoded.lower().removesuffix(".")
    assert normalised == expected


@SETTINGS
@given(hosts, st.integers(0, 40))
@example("allowed.test", 0)
@example("evil.test.allowed.test", 9)
def test_nul_anywhere_is_refused(host: str, where: int) -> None:
    bad = host[:where] + "\x00" + host[where:]
    with pytest.raises(InvalidHost):
        normalize_host(bad)
    with pytest.raises(InvalidHost):
        normalize_host(bad.encode("utf-8"))
    policy = Policy(["*.allowed.test", "allowed.test", "*.test", "*.com"], allow_loopback=True)
    for candidate in (bad, bad + ".allowed.test", "evil.test\x00." + host + ".allowed.test"):
        decision = policy.check_name(candidate, 443)
        assert (decision.allowed, decision.reason) == (False, "invalid-host")


# --- wildcards ----------------------------------------------------------------------------------------------------

labels = st.from_regex(r"[a-z][a-z0-9-]{0,9}", fullmatch=True)


@SETTINGS
@given(
    st.lists(labels, min_size=1, max_size=3).map(".".join),
    st.lists(labels, min_size=1, max_size=6).map(".".join),
    st.sampled_from([None, 443, 80]),
)
def test_wildcard_matches_any_depth_never_the_apex(suffix: str, prefix: str, port: int | None) -> None:
    policy = Policy([f"*.{suffix}"], allow_loopback=False)
    host = f"{prefix}.{suffix}"
    assume(not {host, suffix} & {"metadata", "instance-data"} and "internal" not in host)
    assert policy.check_name(host, port).allowed
    assert policy.check_name(host.upper() + ".", port).allowed
    assert not policy.check_name(suffix, port).allowed
    assert not policy.check_name(f"{prefix}{suffix}", port).allowed  # no label boundary: not a subdomain
    assert not policy.check_name(f"{prefix}-{suffix}", port).allowed


def test_wildcard_port_scope() -> None:
    policy = Policy(["*.example.test:443"])
    assert policy.check_name("a.b.example.test", 443).allowed
    assert not policy.check_name("a.b.example.test", 80).allowed
    assert policy.check_name("a.b.example.test", None).allowed  # lookup: the port is checked at connect
    assert not policy.check_name("example.test", 443).allowed
