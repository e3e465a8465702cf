# ruff: noqa: RUF001, RUF003  (fullwidth, circled and Cyrillic look-alikes are the point of these tests)
"""The compiled Policy: example tables for every rule of the spec, a linear-scan reference model, and scale.

Pure: no sockets. Addresses are only parsed and classified here, never connected to.
"""

from __future__ import annotations

import bisect
import ipaddress
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockguard.addresses import METADATA_NAMES, Address, classify, embedded_ipv4, is_loopback, parse_address
from sockguard.addresses import unwrap_routable as routable_of
from sockguard.policy import (
    ALLOWED_IP,
    ALLOWED_NAME,
    DENIED,
    INTERNAL,
    INVALID,
    LOOPBACK,
    METADATA,
    NOT_ALLOWED,
    RAW_IP,
    Decision,
    Policy,
    _NetIndex,
)
from sockguard.rules import InvalidHost, Rule, RuleError, compile_rules, normalize_host, parse_rule

SETTINGS = settings(deadline=None, max_examples=300)


def addr(text: str) -> Address:
    found = parse_address(text)
    assert found is not None, text
    return found


def outcome(decision: Decision) -> tuple[bool, str, str | None]:
    return decision.allowed, decision.reason, decision.rule


# --- defaults ---------------------------------------------------------------------------------------------------


def test_defaults() -> None:
    policy = Policy()
    assert policy.allow_loopback and policy.allow_unix
    assert outcome(policy.check_name("api.example.test", 443)) == (False, NOT_ALLOWED, None)
    assert outcome(policy.check_name("localhost", 80)) == (True, LOOPBACK, None)
    assert outcome(policy.check_name("LOCALHOST.", 80)) == (True, LOOPBACK, None)
    assert outcome(policy.check_address("127.0.0.1", 80)) == (True, LOOPBACK, None)
    assert outcome(policy.check_address("127.45.6.7", 80)) == (True, LOOPBACK, None)
    assert outcome(policy.check_address("::1", 80)) == (True, LOOPBACK, None)
    assert outcome(policy.check_address("::ffff:127.0.0.1", 80)) == (True, LOOPBACK, None)
    assert outcome(policy.check_address("203.0.113.7", 443)) == (False, RAW_IP, None)


def test_loopback_can_be_turned_off() -> None:
    policy = Policy(allow_loopback=False, allow_unix=False)
    assert not policy.allow_unix
    assert outcome(policy.check_name("localhost", 80)) == (False, NOT_ALLOWED, None)
    for text in ("127.0.0.1", "127.1", "2130706433", "::1", "::ffff:127.0.0.1"):
        assert policy.check_address(text, 80) == Decision(False, RAW_IP, None, "loopback")
    # An explicit rule still opens it; a name alone does not reach an internal address.
    assert outcome(Policy(["127.0.0.0/8"], allow_loopback=False).check_address("127.0.0.9", 80))[0]
    by_name = Policy(["localhost"], allow_loopback=False)
    assert outcome(by_name.check_name("localhost", 80)) == (True, ALLOWED_NAME, "localhost")
    assert by_name.check_address("127.0.0.1", 80, "localhost") == Decision(False, INTERNAL, "localhost", "loopback")


def test_an_ip_rule_is_not_a_name_suffix() -> None:
    # "x.203.0.113.7" is a DNS name (five labels), not an address: an IP rule must not allow it as a wildcard.
    policy = Policy(["203.0.113.7", "10.0.0.0/8", "2001:db8::/32"])
    assert outcome(policy.check_name("x.203.0.113.7", 80)) == (False, NOT_ALLOWED, None)
    assert outcome(policy.check_address("198.51.100.99", 80, "x.203.0.113.7")) == (False, NOT_ALLOWED, None)
    assert outcome(policy.check_address("203.0.113.7", 80)) == (True, ALLOWED_IP, "203.0.113.7")


def test_only_bare_localhost_is_loopback() -> None:
    # glibc sends "x.localhost" to DNS (strace: connect() to the nameserver), so it is an ordinary name.
    policy = Policy()
    assert outcome(policy.check_name("x.localhost", 80)) == (False, NOT_ALLOWED, None)
    assert outcome(policy.check_address("127.0.0.1", 80, "x.localhost")) == (True, LOOPBACK, None)


def test_localhost_answering_a_public_address_is_blocked() -> None:
    decision = Policy().check_address("198.51.100.7", 80, "localhost")
    assert (decision.allowed, decision.reason) == (False, NOT_ALLOWED)
    assert "non-loopback 198.51.100.7" in (decision.detail or "")


# --- names and ports --------------------------------------------------------------------------------------------

NAME_TABLE = [
    # (allow, host, port, allowed, rule)
    (["api.example.test"], "api.example.test", 443, True, "api.example.test"),
    (["api.example.test"], "API.Example.Test.", 443, True, "api.example.test"),
    (["api.example.test"], "ａｐｉ．ｅｘａｍｐｌｅ．ｔｅｓｔ", 443, True, "api.example.test"),
    (["api.example.test"], b"api.example.test", 443, True, "api.example.test"),
    (["api.example.test"], "www.example.test", 443, False, None),
    (["api.example.test"], "x.api.example.test", 443, False, None),
    (["api.example.test"], "аpi.example.test", 443, False, None),  # Cyrillic а: homograph, not a match
    (["*.example.test"], "api.example.test", 443, True, "*.example.test"),
    (["*.example.test"], "a.b.c.d.example.test", 443, True, "*.example.test"),
    (["*.example.test"], "example.test", 443, False, None),
    (["*.example.test"], "badexample.test", 443, False, None),
    (["*.example.test"], "example.test.evil.test", 443, False, None),
    (["*.example.test"], "evil.test\x00.example.test", 443, False, None),
    (["api.example.test:443"], "api.example.test", 443, True, "api.example.test:443"),
    (["api.example.test:443"], "api.example.test", 80, False, None),
    (["api.example.test:443"], "api.example.test", None, True, "api.example.test:443"),
    (["api.example.test:8000-8100"], "api.example.test", 8000, True, "api.example.test:8000-8100"),
    (["api.example.test:8000-8100"], "api.example.test", 8100, True, "api.example.test:8000-8100"),
    (["api.example.test:8000-8100"], "api.example.test", 8101, False, None),
    (["api.example.test:8000-8100"], "api.example.test", 7999, False, None),
    (["*.example.test:443"], "a.example.test", 443, True, "*.example.test:443"),
    (["*.example.test:443"], "a.example.test", 80, False, None),
    # Most specific first: exact, then the nearest wildcard; a port mismatch falls through.
    (["*.example.test", "api.example.test"], "api.example.test", 443, True, "api.example.test"),
    (["*.example.test", "*.b.example.test"], "a.b.example.test", 443, True, "*.b.example.test"),
    (["api.example.test:80", "*.example.test"], "api.example.test", 443, True, "*.example.test"),
    (["bücher.example"], "BÜCHER.example", 443, True, "bücher.example"),
    (["bücher.example"], "xn--bcher-kva.example", 443, True, "bücher.example"),
    (["faß.example"], "fass.example", 443, True, "faß.example"),
]


@pytest.mark.parametrize(("allow", "host", "port", "allowed", "rule"), NAME_TABLE)
def test_names(allow: list[str], host: str | bytes, port: int | None, allowed: bool, rule: str | None) -> None:
    decision = Policy(allow).check_name(host, port)
    assert (decision.allowed, decision.rule) == (allowed, rule)
    if allowed:
        assert decision.reason == ALLOWED_NAME


@pytest.mark.parametrize(
    "host",
    [
        "evil.test\x00.allowed.test",
        b"evil.test\x00.allowed.test",
        "x:\n.allowed.test",
        "127.0.0.1.",
        "a..allowed.test",
        "allowed test",
    ],
)
def test_invalid_hosts_are_refused(host: str | bytes) -> None:
    decision = Policy(["*.allowed.test", "allowed.test", "127.0.0.0/8"]).check_name(host, 443)
    assert (decision.allowed, decision.reason) == (False, INVALID)
    assert decision.detail


# --- raw IPs ----------------------------------------------------------------------------------------------------

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "0177.0.0.1",
    "0177.0.0.01",
    "127.1",
    "127.0.1",
    "::ffff:7f00:1",
    "::ffff:127.0.0.1",
    "::FFFF:127.0.0.1",
    "１２７.０.０.１",
    "１２７．０．０．１",
    "0x7F.0.0.1",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_spelling_of_loopback_is_decided_on_the_address(host: str) -> None:
    blocked = Policy(["localhost", "*.test"], allow_loopback=False).check_name(host, 80)
    assert (blocked.allowed, blocked.reason, blocked.detail) == (False, RAW_IP, "loopback")
    allowed = Policy(["127.0.0.0/8"], allow_loopback=False).check_name(host, 80)
    assert (allowed.allowed, allowed.reason, allowed.rule) == (True, ALLOWED_IP, "127.0.0.0/8")
    denied = Policy(deny=["127.0.0.1"]).check_name(host, 80)
    assert (denied.allowed, denied.reason, denied.rule) == (False, DENIED, "127.0.0.1")


METADATA_SPELLINGS = [
    "169.254.169.254",
    "2852039166",
    "0xa9fea9fe",
    "0xa9.0xfe.0xa9.0xfe",
    "0251.0376.0251.0376",
    "169.254.43518",
    "169.16689662",
    "::ffff:a9fe:a9fe",
    "::ffff:169.254.169.254",
    "::169.254.169.254",
    "64:ff9b::a9fe:a9fe",
    "2002:a9fe:a9fe::1",
    "2001:0:4136:e378:8000:63bf:5601:5601",
]


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
def test_metadata_address_in_every_spelling(host: str) -> None:
    policy = Policy(["*.example.test", "2001:db8::/32", "203.0.113.0/24"])
    decision = policy.check_name(host, 80)
    assert decision == Decision(False, RAW_IP, None, "metadata")
    # Reached through an allowed name (DNS rebinding), still refused.
    assert policy.check_address(addr(host), 80, "api.example.test") == Decision(
        False, INTERNAL, "*.example.test", "metadata"
    )
    # A deny rule written for the IPv4 address catches every IPv6 embedding too.
    denied = Policy(["::/0"], deny=["169.254.169.254"]).check_name(host, 80)
    assert (denied.allowed, denied.reason) == (False, DENIED)


@pytest.mark.parametrize(
    ("allow", "host", "allowed", "rule"),
    [
        (["203.0.113.7"], "203.0.113.7", True, "203.0.113.7"),
        (["203.0.113.7"], "203.0.113.8", False, None),
        (["203.0.113.0/24"], "203.0.113.255", True, "203.0.113.0/24"),
        (["203.0.113.0/24"], "203.0.114.0", False, None),
        (["203.0.113.0/24"], "::ffff:203.0.113.9", True, "203.0.113.0/24"),
        (["203.0.113.0/24"], "64:ff9b::203.0.113.9", True, "203.0.113.0/24"),
        (["203.0.113.0/24"], "::203.0.113.9", False, None),  # IPv4-compatible never connects as IPv4
        (["[::ffff:203.0.113.0/120]"], "203.0.113.9", True, "[::ffff:203.0.113.0/120]"),
        (["203.0.113.7:443"], "203.0.113.7", True, "203.0.113.7:443"),
        (["2001:db8::1"], "2001:db8::1", True, "2001:db8::1"),
        (["2001:db8::1"], "2001:db8:0:0:0:0:0:1", True, "2001:db8::1"),
        (["2001:db8::/32"], "2001:db8:ffff::1", True, "2001:db8::/32"),
        (["[2001:db8::/32]:443"], "2001:db8::5", True, "[2001:db8::/32]:443"),
        (["2001:db8::/32"], "2001:db9::1", False, None),
        (["[::1]:443"], "::1", True, "[::1]:443"),
        (["10.0.0.0/8", "10.1.0.0/16"], "10.1.2.3", True, "10.1.0.0/16"),
        (["10.1.0.0/16", "10.0.0.0/8"], "10.2.0.1", True, "10.0.0.0/8"),
        (["fe80::/10"], "fe80::1%eth0", True, "fe80::/10"),
    ],
)
def test_ip_rules(allow: list[str], host: str, allowed: bool, rule: str | None) -> None:
    decision = Policy(allow, allow_loopback=False).check_name(host, 443)
    assert (decision.allowed, decision.rule) == (allowed, rule)
    assert decision.reason == (ALLOWED_IP if allowed else RAW_IP)


@pytest.mark.parametrize(
    ("allow", "address", "port", "allowed"),
    [
        (["203.0.113.7:443"], "203.0.113.7", 443, True),
        (["203.0.113.7:443"], "203.0.113.7", 80, False),
        (["[2001:db8::/32]:443"], "2001:db8::5", 80, False),
        (["[::1]:8080"], "::1", 8081, False),
        (["10.0.0.0/8:1-1024"], "10.9.9.9", 1024, True),
        (["10.0.0.0/8:1-1024"], "10.9.9.9", 1025, False),
    ],
)
def test_ip_rule_ports(allow: list[str], address: str, port: int, allowed: bool) -> None:
    assert Policy(allow, allow_loopback=False).check_address(address, port).allowed is allowed


# --- resolved addresses -------------------------------------------------------------------------------------------

RESOLVED_TABLE = [
    # (allow, address, name, expected reason, detail)
    (["*.example.test"], "203.0.113.7", "api.example.test", ALLOWED_NAME, None),
    (["*.example.test"], "198.51.100.7", "api.example.test", ALLOWED_NAME, None),
    (["*.example.test"], "192.0.2.7", "api.example.test", ALLOWED_NAME, None),
    (["*.example.test"], "2001:db8::7", "api.example.test", ALLOWED_NAME, None),
    (["*.example.test"], "203.0.113.7", "api.other.test", NOT_ALLOWED, None),
    (["*.example.test"], "10.0.0.5", "api.example.test", INTERNAL, "private"),
    (["*.example.test"], "172.16.0.5", "api.example.test", INTERNAL, "private"),
    (["*.example.test"], "192.168.0.5", "api.example.test", INTERNAL, "private"),
    (["*.example.test"], "100.64.0.5", "api.example.test", INTERNAL, "cgnat"),
    (["*.example.test"], "169.254.0.5", "api.example.test", INTERNAL, "link-local"),
    (["*.example.test"], "0.0.0.0", "api.example.test", INTERNAL, "unspecified"),
    (["*.example.test"], "::", "api.example.test", INTERNAL, "unspecified"),
    (["*.example.test"], "fd12::5", "api.example.test", INTERNAL, "unique-local"),
    (["*.example.test"], "fe80::5", "api.example.test", INTERNAL, "link-local"),
    (["*.example.test"], "fec0::5", "api.example.test", INTERNAL, "site-local"),
    (["*.example.test"], "192.88.99.1", "api.example.test", INTERNAL, "6to4-relay"),
    (["*.example.test"], "169.254.169.254", "api.example.test", INTERNAL, "metadata"),
    (["*.example.test"], "169.254.170.2", "api.example.test", INTERNAL, "metadata"),
    (["*.example.test"], "100.100.100.200", "api.example.test", INTERNAL, "metadata"),
    (["*.example.test"], "192.0.0.192", "api.example.test", INTERNAL, "metadata"),
    (["*.example.test"], "168.63.129.16", "api.example.test", INTERNAL, "metadata"),
    (["*.example.test"], "fd00:ec2::254", "api.example.test", INTERNAL, "metadata"),
    (["*.example.test"], "::ffff:10.0.0.5", "api.example.test", INTERNAL, "private"),
    (["*.example.test"], "::127.0.0.1", "api.example.test", INTERNAL, "loopback"),
    (["*.example.test"], "2002:a9fe:a9fe::1", "api.example.test", INTERNAL, "metadata"),
    (["*.example.test"], "64:ff9b::a00:5", "api.example.test", INTERNAL, "private"),
    # An IP/CIDR rule that also covers the internal address lets the name reach it.
    (["*.example.test", "10.0.0.0/24"], "10.0.0.5", "api.example.test", ALLOWED_IP, None),
    (["*.example.test", "10.0.0.0/24"], "10.0.1.5", "api.example.test", INTERNAL, "private"),
    (["*.example.test", "169.254.169.254"], "169.254.169.254", "api.example.test", ALLOWED_IP, None),
    # Metadata names need an exact rule, and their address still needs an IP rule.
    (["*.google.internal"], "203.0.113.7", "metadata.google.internal", METADATA, "metadata.google.internal"),
    (["*.internal"], "203.0.113.7", "METADATA.google.internal.", METADATA, "metadata.google.internal"),
    (["metadata.google.internal"], "203.0.113.7", "metadata.google.internal", ALLOWED_NAME, None),
    (["metadata.google.internal"], "169.254.169.254", "metadata.google.internal", INTERNAL, "metadata"),
    (
        ["metadata.google.internal", "169.254.169.254"],
        "169.254.169.254",
        "metadata.google.internal",
        ALLOWED_IP,
        None,
    ),
]


@pytest.mark.parametrize(("allow", "address", "name", "reason", "detail"), RESOLVED_TABLE)
def test_resolved_addresses(allow: list[str], address: str, name: str, reason: str, detail: str | None) -> None:
    decision = Policy(allow, allow_loopback=False).check_address(address, 443, name)
    assert (decision.reason, decision.detail) == (reason, detail)
    assert decision.allowed is (reason in (ALLOWED_NAME, ALLOWED_IP))


@pytest.mark.parametrize("name", sorted(METADATA_NAMES))
def test_metadata_names(name: str) -> None:
    assert Policy([f"*.{name}", "*.internal", "*.goog", "*.com"]).check_name(name, 80) == Decision(
        False, METADATA, None, name
    )
    assert Policy([name]).check_name(name, 80).allowed


# --- deny ----------------------------------------------------------------------------------------------------------

DENY_TABLE = [
    # (allow, deny, check, expected rule)
    (["*.example.test"], ["evil.example.test"], ("name", "evil.example.test", 443, None), "evil.example.test"),
    (["*.example.test"], ["*.evil.example.test"], ("name", "a.evil.example.test", 443, None), "*.evil.example.test"),
    (["api.example.test"], ["*.example.test"], ("name", "api.example.test", 443, None), "*.example.test"),
    (["api.example.test"], ["api.example.test:443"], ("name", "api.example.test", 443, None), "api.example.test:443"),
    (["203.0.113.0/24"], ["203.0.113.7"], ("address", "203.0.113.7", 443, None), "203.0.113.7"),
    (["203.0.113.7"], ["203.0.113.0/24"], ("address", "203.0.113.7", 443, None), "203.0.113.0/24"),
    (["*.example.test"], ["203.0.113.0/24"], ("address", "203.0.113.7", 443, "a.example.test"), "203.0.113.0/24"),
    # Deny against every IPv4-in-IPv6 embedding, not only the ones that route as IPv4.
    (["*.example.test"], ["203.0.113.0/24"], ("address", "::ffff:203.0.113.7", 443, "a.example.test"), None),
    (["*.example.test"], ["203.0.113.0/24"], ("address", "64:ff9b::cb00:7107", 443, "a.example.test"), None),
    (["*.example.test"], ["203.0.113.0/24"], ("address", "2002:cb00:7107::1", 443, "a.example.test"), None),
    (["*.example.test"], ["203.0.113.0/24"], ("address", "::203.0.113.7", 443, "a.example.test"), None),
    (
        ["*.example.test"],
        ["203.0.113.0/24"],
        ("address", "2001:0:4136:e378:8000:63bf:34ff:8ef8", 443, "a.example.test"),
        None,
    ),
    # A mapped-IPv6 deny rule also covers the plain IPv4 address.
    (["203.0.113.0/24"], ["[::ffff:203.0.113.0/120]"], ("address", "203.0.113.7", 443, None), None),
    # A denied name stays denied whatever it resolved to, loopback and IP-allowed addresses included.
    (["10.0.0.0/8"], ["evil.example.test"], ("address", "10.1.2.3", 443, "evil.example.test"), "evil.example.test"),
    ([], ["evil.example.test"], ("address", "127.0.0.1", 443, "evil.example.test"), "evil.example.test"),
    ([], ["localhost"], ("name", "localhost", 80, None), "localhost"),
    ([], ["127.0.0.0/8"], ("address", "127.0.0.1", 80, None), "127.0.0.0/8"),
    ([], ["::1"], ("address", "::1", 80, None), "::1"),
    (["*.internal"], ["metadata.google.internal"], ("name", "metadata.google.internal", 80, None), None),
]


@pytest.mark.parametrize(("allow", "deny", "check", "rule"), DENY_TABLE)
def test_deny_wins(allow: list[str], deny: list[str], check: tuple, rule: str | None) -> None:
    policy = Policy(allow, deny)
    kind, target, port, name = check
    decision = policy.check_name(target, port) if kind == "name" else policy.check_address(target, port, name)
    assert (decision.allowed, decision.reason) == (False, DENIED)
    assert decision.rule == (rule or deny[0])


def test_port_scoped_deny_applies_to_its_ports_only() -> None:
    policy = Policy(["*.example.test"], ["api.example.test:443"])
    assert policy.check_name("api.example.test", 443).reason == DENIED
    assert policy.check_name("api.example.test", 80).allowed
    # A lookup does not know the port yet; the connect to port 443 is denied.
    assert policy.check_name("api.example.test", None).allowed
    assert policy.check_address("203.0.113.7", 443, "api.example.test").reason == DENIED


# --- errors and misc ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"allow": "api.example.test"}, "allow must be a list of rules, not the string 'api.example.test'"),
        ({"deny": "localhost"}, "deny must be a list of rules, not the string 'localhost'"),
        ({"allow": ["ok.test", "http://bad.test"]}, "rule 'http://bad.test': looks like a URL"),
        ({"deny": ["10.0.0.1/8"]}, "did you mean 10.0.0.0/8?"),
    ],
)
def test_policy_rejects_bad_rules(kwargs: dict, problem: str) -> None:
    with pytest.raises(RuleError) as info:
        Policy(**kwargs)
    assert problem in str(info.value)


def test_compile_rules_names_the_source() -> None:
    assert [r.text for r in compile_rules(["a.test", "10.0.0.0/8"], "x")] == ["a.test", "10.0.0.0/8"]
    with pytest.raises(RuleError, match=r"^sockguard.toml \[allow\]: rule '127.1': "):
        compile_rules(["a.test", "127.1"], "sockguard.toml [allow]")
    with pytest.raises(RuleError, match="expected a list of rules"):
        compile_rules("a.test", "SOCKGUARD_ALLOW")


def test_check_address_rejects_non_addresses() -> None:
    decision = Policy(["*.test"]).check_address("api.example.test", 80)
    assert (decision.allowed, decision.reason) == (False, INVALID)


def test_explain() -> None:
    assert Decision(False, INTERNAL, "*.x.test", "metadata").explain().startswith("address is internal (metadata)")
    assert Decision(False, NOT_ALLOWED).explain() == "host is not in the allowlist"
    assert Decision(True, ALLOWED_NAME, "x.test").explain() == ALLOWED_NAME


def test_policy_accepts_parsed_rules() -> None:
    policy = Policy([parse_rule("*.example.test")], [parse_rule("evil.example.test")])
    assert policy.check_name("a.example.test").allowed
    assert not policy.check_name("evil.example.test").allowed
    assert "*.example.test" in repr(policy)


# --- suggest -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "address", "expected"),
    [
        ("api.example.test", 443, None, "api.example.test:443"),
        ("API.Example.Test.", 443, None, "api.example.test:443"),
        ("bücher.example", 443, None, "xn--bcher-kva.example:443"),
        ("api.example.test", None, None, "api.example.test"),
        ("api.example.test", 0, None, "api.example.test"),
        ("api.example.test", 443, "203.0.113.7", "api.example.test:443"),
        ("api.example.test", 443, "10.0.0.5", "10.0.0.5:443"),
        ("api.example.test", 443, "fd00::5", "[fd00::5]:443"),
        ("0x7f.1", 80, None, "127.0.0.1:80"),
        ("2130706433", None, None, "127.0.0.1"),
        (None, 443, "2001:db8::1", "[2001:db8::1]:443"),
        (None, None, "2001:db8::1", "2001:db8::1"),
        (None, 443, (4, 0xCB007107), "203.0.113.7:443"),
        ("fe80::1%eth0", 22, None, "[fe80::1]:22"),
        ("evil.test\x00.allowed.test", 443, None, None),
        (None, 443, None, None),
    ],
)
def test_suggest_examples(host: str | None, port: int | None, address: object, expected: str | None) -> None:
    assert Policy().suggest(host, port, address) == expected  # type: ignore[arg-type]


# --- reference model -------------------------------------------------------------------------------------------


def covers(rule: Rule, address: Address) -> bool:
    if rule.kind != "cidr":
        return False
    version, value = address
    if version == 4 and rule.version == 6 and rule.prefix >= 96 and rule.network >> 32 == 0xFFFF:
        version, value = 6, (0xFFFF << 32) | value  # a mapped rule also covers the plain IPv4 address
    if version != rule.version:
        return False
    bits = 32 if version == 4 else 128
    return value >> (bits - rule.prefix) == rule.network >> (bits - rule.prefix)


def names_match(rule: Rule, name: str) -> bool:
    return (rule.kind == "name" and rule.host == name) or (rule.kind == "wildcard" and name.endswith("." + rule.host))


def port_ok(rule: Rule, port: int | None, strict: bool) -> bool:
    if port is None:
        return rule.ports is None if strict else True
    return rule.ports is None or rule.ports[0] <= port <= rule.ports[1]


def deny_forms(address: Address) -> list[Address]:
    embedded = embedded_ipv4(address[1]) if address[0] == 6 else None
    return [address] + ([(4, embedded[1])] if embedded else [])


def ref_name(allow: Sequence[Rule], deny: Sequence[Rule], loopback: bool, host: str, port: int | None) -> str:
    try:
        name = normalize_host(host)
    except InvalidHost:
        return INVALID
    numeric = parse_address(name)
    if numeric is not None:
        return ref_address(allow, deny, loopback, numeric, port, None)
    if any(names_match(r, name) and port_ok(r, port, True) for r in deny):
        return DENIED
    if name in METADATA_NAMES:
        exact = any(r.kind == "name" and r.host == name and port_ok(r, port, False) for r in allow)
        return ALLOWED_NAME if exact else METADATA
    if any(names_match(r, name) and port_ok(r, port, False) for r in allow):
        return ALLOWED_NAME
    if loopback and name == "localhost":
        return LOOPBACK
    return NOT_ALLOWED


def ref_address(
    allow: Sequence[Rule], deny: Sequence[Rule], loopback: bool, address: Address, port: int | None, name: str | None
) -> str:
    if any(covers(r, f) and port_ok(r, port, True) for r in deny for f in deny_forms(address)):
        return DENIED
    if name is not None:
        try:
            normalised = normalize_host(name)
        except InvalidHost:
            return INVALID
        if any(names_match(r, normalised) and port_ok(r, port, True) for r in deny):
            return DENIED
    if loopback and is_loopback(address):
        return LOOPBACK
    routable = routable_of(address)
    if routable == address and any(covers(r, address) and port_ok(r, port, False) for r in allow):
        return ALLOWED_IP
    if routable != address and any(  # IPv4 in IPv6 clothing: IPv4 rules, or IPv6 rules for the embedding itself
        (covers(r, routable) or (covers(r, address) and r.prefix >= 96)) and port_ok(r, port, False) for r in allow
    ):
        return ALLOWED_IP
    if name is None:
        return RAW_IP
    by_name = ref_name(allow, deny, loopback, name, port)
    if by_name not in (ALLOWED_NAME, LOOPBACK):
        return by_name
    if classify(address) is not None:
        return INTERNAL
    return NOT_ALLOWED if by_name == LOOPBACK else by_name


ADDRESSES = [
    "203.0.113.7",
    "203.0.113.200",
    "198.51.100.1",
    "10.0.0.1",
    "10.0.0.255",
    "10.200.0.1",
    "127.0.0.1",
    "127.0.0.2",
    "169.254.169.254",
    "100.100.100.200",
    "192.168.1.1",
    "0.0.0.0",
    "2001:db8::1",
    "2001:db8::ffff",
    "2001:db8:1::1",
    "::1",
    "::",
    "fe80::1",
    "fd00:ec2::254",
    "::ffff:10.0.0.1",
    "::ffff:203.0.113.7",
    "::ffff:127.0.0.1",
    "::10.0.0.1",
    "::203.0.113.7",
    "64:ff9b::a00:1",
    "64:ff9b::cb00:7107",
    "2002:a00:1::1",
    "2002:cb00:7107::",
    "2001:0:4136:e378:8000:63bf:34ff:8ef8",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",
]
BASES = ["example.test", "other.test", "test", "localhost", "google.internal", "internal"]
PREFIXES = ["", "api.", "www.", "a.b.", "metadata.", "evil.api."]
NAMES = [p + b for p in PREFIXES for b in BASES] + ["metadata", "localhost", "x.localhost"]
PORTS = [None, 80, 443, 8080]

port_suffixes = st.sampled_from(["", "", ":443", ":80", ":8000-8100", ":1-1024"])


@st.composite
def cidr_rules(draw: st.DrawFn) -> str:
    address = addr(draw(st.sampled_from(ADDRESSES)))
    version, value = address
    bits = 32 if version == 4 else 128
    choices = [0, 8, 16, 24, 30, 32] if version == 4 else [0, 16, 32, 48, 64, 96, 104, 120, 127, 128]
    prefix = draw(st.sampled_from(choices))
    network = value & ~((1 << (bits - prefix)) - 1)
    text = str(ipaddress.ip_address(network)) if version == 4 else str(ipaddress.IPv6Address(network))
    body = text if prefix == bits else f"{text}/{prefix}"
    ports = draw(port_suffixes)
    if version == 6:
        return f"[{body}]{ports}" if ports else body
    return body + ports


@st.composite
def name_rules(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(NAMES))
    if draw(st.booleans()):
        name = "*." + draw(st.sampled_from(BASES + NAMES))
    return name + draw(port_suffixes)


rule_texts = st.one_of(cidr_rules(), name_rules())
rule_lists = st.lists(rule_texts, max_size=6)


@st.composite
def destinations(draw: st.DrawFn) -> tuple[str, str | None, int | None, str | None]:
    """(kind, host or address, port, name the address was resolved from)."""
    port = draw(st.sampled_from(PORTS))
    kind = draw(st.sampled_from(["name", "numeric", "address", "resolved"]))
    if kind == "name":
        return kind, draw(st.sampled_from(NAMES)), port, None
    text = draw(st.sampled_from(ADDRESSES))
    if kind == "numeric":
        return "name", text, port, None
    return "address", text, port, (draw(st.sampled_from(NAMES)) if kind == "resolved" else None)


def decide(policy: Policy, destination: tuple) -> Decision:
    kind, target, port, name = destination
    if kind == "name":
        return policy.check_name(target, port)
    return policy.check_address(target, port, name)


def reference(allow: list[str], deny: list[str], loopback: bool, destination: tuple) -> str:
    kind, target, port, name = destination
    allow_rules, deny_rules = [parse_rule(t) for t in allow], [parse_rule(t) for t in deny]
    if kind == "name":
        return ref_name(allow_rules, deny_rules, loopback, target, port)
    return ref_address(allow_rules, deny_rules, loopback, addr(target), port, name)


def rule_applies(rule: Rule, destination: tuple, strict: bool) -> bool:
    """Could this rule decide the destination, under any name or address form it is checked as?"""
    kind, target, port, name = destination
    if not port_ok(rule, port, strict):
        return False
    if kind == "name":
        try:
            target = normalize_host(target)
        except InvalidHost:
            return False
        numeric = parse_address(target)
        if numeric is None:
            return names_match(rule, target)
        return any(covers(rule, f) for f in deny_forms(numeric))
    if any(covers(rule, f) for f in deny_forms(addr(target))):
        return True
    return name is not None and names_match(rule, normalize_host(name))


@SETTINGS
@given(rule_lists, rule_lists, st.booleans(), destinations())
def test_policy_agrees_with_reference_model(allow: list[str], deny: list[str], loopback: bool, dest: tuple) -> None:
    decision = decide(Policy(allow, deny, allow_loopback=loopback), dest)
    assert decision.reason == reference(allow, deny, loopback, dest)
    assert decision.allowed is (decision.reason in (ALLOWED_NAME, ALLOWED_IP, LOOPBACK))
    if decision.rule is not None:  # the rule it names really covers the destination
        denied = decision.reason == DENIED
        rules = deny if denied else allow
        assert any(rule_applies(parse_rule(t), dest, denied) for t in rules if t.strip() == decision.rule)


@SETTINGS
@given(rule_texts, rule_lists, rule_lists, destinations())
def test_deny_beats_allow_for_the_same_destination(rule: str, allow: list[str], deny: list[str], dest: tuple) -> None:
    parsed = parse_rule(rule)
    if dest[2] is None:
        dest = (dest[0], dest[1], 443, dest[3])  # a concrete port, so a port-scoped deny applies
    if not rule_applies(parsed, dest, True):
        return
    decision = decide(Policy([rule, *allow], [*deny, rule]), dest)
    assert not decision.allowed
    assert decision.reason in (DENIED, INVALID)


@SETTINGS
@given(rule_lists, rule_lists, st.booleans(), destinations(), rule_lists, rule_lists)
def test_unrelated_rules_never_change_a_decision(
    allow: list[str], deny: list[str], loopback: bool, dest: tuple, more_allow: list[str], more_deny: list[str]
) -> None:
    more_allow = [t for t in more_allow if not rule_applies(parse_rule(t), dest, False)]
    more_deny = [t for t in more_deny if not rule_applies(parse_rule(t), dest, True)]
    before = decide(Policy(allow, deny, allow_loopback=loopback), dest)
    after = decide(Policy([*more_allow, *allow, *more_allow], [*more_deny, *deny], allow_loopback=loopback), dest)
    assert after == before


@SETTINGS
@given(rule_lists, rule_lists, st.booleans(), destinations())
def test_suggestion_is_a_rule_that_allows_the_destination(
    allow: list[str], deny: list[str], loopback: bool, dest: tuple
) -> None:
    policy = Policy(allow, deny, allow_loopback=loopback)
    decision = decide(policy, dest)
    if decision.allowed or decision.reason in (DENIED, INVALID):
        return
    kind, target, port, name = dest
    suggestion = policy.suggest(target, port) if kind == "name" else policy.suggest(name, port, target)
    assert suggestion is not None
    parse_rule(suggestion)  # a valid rule
    assert decide(Policy([*allow, suggestion], deny, allow_loopback=loopback), dest).allowed, suggestion


# --- the interval table against brute force ----------------------------------------------------------------------


@st.composite
def v4_networks(draw: st.DrawFn) -> str:
    prefix = draw(st.integers(0, 32))
    value = draw(st.integers(0, 255)) << 24 | draw(st.sampled_from([0, 1, 2, 255])) << 16 | draw(st.integers(0, 3))
    network = value & ~((1 << (32 - prefix)) - 1) & 0xFFFFFFFF
    return f"{ipaddress.IPv4Address(network)}/{prefix}" + draw(port_suffixes)


@SETTINGS
@given(st.lists(v4_networks(), max_size=40), st.lists(st.integers(0, 2**32 - 1), max_size=20), st.sampled_from(PORTS))
def test_net_index_picks_the_most_specific_covering_rule(texts: list[str], probes: list[int], port: int | None) -> None:
    rules = [parse_rule(t) for t in texts]
    policy = Policy(texts, allow_loopback=False)
    for value in probes + [r.network for r in rules] + [r.network - 1 for r in rules if r.network]:
        candidates = [
            (-r.prefix, i, r) for i, r in enumerate(rules) if covers(r, (4, value)) and port_ok(r, port, False)
        ]
        expected = min(candidates)[2] if candidates else None
        assert policy._allow_nets.match((4, value), port) == expected
        assert policy.check_address((4, value), port).rule == (expected and expected.text)


DUPLICATE_PRONE = st.sampled_from(
    [
        *("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3", "0.0.0.0/0", "10.0.0.0/9", "::ffff:10.1.0.0/112"),
        *("2001:db8::/32", "2001:db8:1::/48", "::/0", "2001:db8:1::7"),
    ]
)
OVERLAPPING_PORTS = st.sampled_from(["", "", ":22", ":20-25", ":21-23", ":1-1024", ":443", ":1-65535", ":65535", ":1"])
PROBE_PORTS = [None, 0, 1, 20, 21, 22, 23, 25, 26, 443, 1024, 1025, 65535, 70000]


@SETTINGS
@given(st.lists(st.tuples(DUPLICATE_PRONE, OVERLAPPING_PORTS), max_size=60), st.sampled_from(PROBE_PORTS))
def test_net_index_with_duplicates_and_overlapping_ports_matches_the_reference(
    drawn: list[tuple[str, str]], port: int | None
) -> None:
    """Duplicate networks, overlapping and identical port ranges, mapped rules, both families, strict (deny)
    and loose (allow) matching: the compiled index picks exactly the rule the definition picks: the most
    specific covering network, and within it the first rule (in rule order) that admits the port."""
    texts = [f"[{body}]{ports}" if ":" in body and ports else body + ports for body, ports in drawn]
    rules = [parse_rule(t) for t in texts]
    index = _NetIndex(rules)
    probes = [(4, v) for v in (0, 0x0A000000, 0x0A010203, 0x0A010204, 0x0A0102FF, 0x0A7FFFFF, 0x0A800000, 0x0B000000)]
    probes += [(6, v) for v in (0, 0x20010DB8 << 96, (0x20010DB8_0001 << 80) | 7, (0x20010DB8_0002 << 80), 1 << 127)]
    probes += [(6, (0xFFFF << 32) | v) for _, v in probes[:8]]
    for address in probes:
        for strict in (False, True):
            twin = address[0] == 4  # for an IPv4 address a mapped rule counts as IPv4, after the IPv4 rules
            candidates = [
                (-(r.prefix - 96 if twin and r.version == 6 else r.prefix), twin and r.version == 6, i, r.text)
                for i, r in enumerate(rules)
                if covers(r, address) and port_ok(r, port, strict)
            ]
            expected = min(candidates)[3] if candidates else None
            found = index.match(address, port, strict)
            assert (found and found.text) == expected, (address, port, strict)


def test_a_node_iterates_as_the_covering_rules_in_decision_order() -> None:
    """The interval table keeps one node per interval; iterating it gives the covering rules, most specific
    first (what the native policy compiler reads)."""
    rules = [parse_rule(t) for t in ["10.0.0.0/8", "10.0.0.0/8", "10.1.0.0/16:443", "10.1.0.0/16:80", "10.1.2.3"]]
    starts, covers_ = _NetIndex(rules).tables[4]
    at = covers_[bisect.bisect_right(starts, 0x0A010203) - 1]
    assert [r.text for r in at] == ["10.1.2.3", "10.1.0.0/16:443", "10.1.0.0/16:80", "10.0.0.0/8"]
    assert covers_[bisect.bisect_right(starts, 0x0B000000) - 1] == ()


def test_many_overlapping_copies_compile_once_and_decide_as_before() -> None:
    """20,000 copies of 10.0.0.0/8 and 20,000 hosts inside it (each with a port) were quadratic to compile;
    the decisions are those of the definition (the benchmark measures the time: benchmarks/compile.py)."""
    hosts = [f"10.{i >> 8 & 0xFF}.{i & 0xFF}.1:{1 + i % 1000}" for i in range(20_000)]
    policy = Policy(["10.0.0.0/8"] * 20_000 + hosts, ["10.0.0.0/8:22"] * 3, allow_loopback=False)
    assert policy.check_address("10.0.7.1", 1 + 7 % 1000).rule == hosts[7]
    assert policy.check_address("10.0.7.1", 999).rule == "10.0.0.0/8"
    assert policy.check_address("10.0.7.1", 22).reason == DENIED
    assert policy.check_address("10.200.7.9", 0).rule == "10.0.0.0/8"
    assert not policy.check_address("11.0.0.1", 80).allowed


# --- scale ----------------------------------------------------------------------------------------------------------


def test_hundred_thousand_rules() -> None:
    exact = [f"h{i}.s{i % 997}.example.test" for i in range(40_000)]
    wild = [f"*.w{i}.example.test" + (":443" if i % 10 == 0 else "") for i in range(30_000)]
    v4 = [f"10.{i >> 8 & 0xFF}.{i & 0xFF}.0/24" for i in range(20_000)]
    v4 += [f"10.{i}.0.0/16" for i in range(0, 200, 8)]  # nested over the /24s up to 10.78.31.0/24, then alone
    v6 = [f"2001:db8:{i:x}::/48" for i in range(10_000)]
    rules = exact + wild + v4 + v6
    assert len(rules) >= 100_000
    started = time.perf_counter()
    policy = Policy(rules, ["h7.s7.example.test", "10.0.5.0/24"], allow_loopback=False)
    built = time.perf_counter() - started

    probes = 0
    started = time.perf_counter()
    for i in range(0, 40_000, 97):
        assert policy.check_name(f"h{i}.s{i % 997}.example.test", 443).rule == exact[i]
        assert not policy.check_name(f"x{i}.s{i % 997}.example.test", 443).allowed
        probes += 2
    for i in range(0, 30_000, 71):
        assert policy.check_name(f"a.b.w{i}.example.test", 443).rule == wild[i]
        assert policy.check_name(f"w{i}.example.test", 443).reason == NOT_ALLOWED  # never the apex
        assert policy.check_name(f"a.w{i}.example.test", 80).allowed is (i % 10 != 0)
        probes += 3
    for i in range(0, 20_000, 53):
        decision = policy.check_address(f"10.{i >> 8 & 0xFF}.{i & 0xFF}.9", 443)
        assert decision.rule == v4[i], i
        probes += 1
    for i in range(0, 10_000, 37):
        assert policy.check_address(f"2001:db8:{i:x}::9", 443).rule == v6[i]
        assert not policy.check_address(f"2001:db8:ffff:{i:x}::9", 443).allowed
        probes += 2
    assert policy.check_address("10.0.5.1", 443).reason == DENIED
    assert policy.check_name("h7.s7.example.test", 443).reason == DENIED
    assert policy.check_address("10.8.1.1", 443).rule == "10.8.1.0/24"  # the /24 inside 10.8.0.0/16
    assert policy.check_address("10.78.32.1", 443).rule is None  # past the last /24, outside every /16
    assert policy.check_address("10.120.200.1", 443).rule == "10.120.0.0/16"
    per_lookup = (time.perf_counter() - started) / probes
    print(f"\n100k-rule policy: build {built * 1000:.0f} ms, {per_lookup * 1e6:.2f} us per check ({probes} checks)")


@pytest.mark.parametrize(
    ("allow", "address", "allowed"),
    [
        (["::/0"], "::ffff:169.254.169.254", False),  # IPv4 on the wire: a broad IPv6 rule does not admit it
        (["::/0"], "64:ff9b::a9fe:a9fe", False),  # NAT64: the translator connects to 169.254.169.254
        (["::/0"], "::ffff:198.51.100.7", False),
        (["::/0"], "2001:db8::7", True),
        (["2000::/3", "198.51.100.0/24"], "::ffff:198.51.100.7", True),  # the IPv4 rule decides
        (["64:ff9b::/96"], "64:ff9b::c633:6407", True),  # a rule written for NAT64 destinations
        (["[::ffff:0:0/96]"], "::ffff:198.51.100.7", True),  # a rule written inside the mapped range
        (["[::ffff:0:0/96]"], "198.51.100.7", True),
    ],
)
def test_ipv4_in_ipv6_clothing_is_decided_as_the_ipv4_host(allow: list[str], address: str, allowed: bool) -> None:
    """Issue 17, item 11: with ``--allow ::/0`` the mapped form of the metadata address was allowed while the
    address itself was blocked; ``sockguard check`` and the runtime now agree, on the stricter answer."""
    assert Policy(allow, allow_loopback=False).check_address(address, 443).allowed is allowed
