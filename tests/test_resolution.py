"""Name decisions against a real DNS server (netlab): nothing is asked for a
blocked name, answers are checked as addresses, rebinding is caught."""

from __future__ import annotations

import socket

import pytest

import sockguard

pytestmark = pytest.mark.netlab


def test_blocked_name_never_reaches_dns(netlab):
    netlab.dns.set("exfil.blocked.test", A=["198.51.100.10"])
    server = netlab.tcp("198.51.100.10", 80)
    with sockguard.guarded(allow=["api.partner.test"]):
        for call in (
            lambda: socket.getaddrinfo("exfil.blocked.test", 80),
            lambda: socket.gethostbyname("exfil.blocked.test"),
            lambda: socket.create_connection(("exfil.blocked.test", 80), timeout=2),
            lambda: socket.socket().connect(("exfil.blocked.test", 80)),
            lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("exfil.blocked.test", 53)),
        ):
            with pytest.raises(sockguard.EgressBlocked) as info:
                call()
            assert info.value.reason == "not-allowed"
    assert netlab.dns.queries("exfil.blocked.test") == 0
    assert server.accepted == 0


def test_allowed_name_resolves_and_connects(netlab):
    netlab.dns.set("api.partner.test", A=["198.51.100.10"], AAAA=["2001:db8::10"])
    v4 = netlab.tcp("198.51.100.10", 443)
    v6 = netlab.tcp("2001:db8::10", 443)
    with sockguard.guarded(allow=["api.partner.test:443"]):
        socket.create_connection(("api.partner.test", 443), timeout=2).close()
        for info in socket.getaddrinfo("api.partner.test", 443, type=socket.SOCK_STREAM):
            sock = socket.socket(info[0], info[1])
            sock.connect(info[4])  # the resolved address is known to come from the name
            sock.close()
        # The name's port scope applies to its addresses too.
        with pytest.raises(sockguard.EgressBlocked):
            socket.create_connection(("198.51.100.10", 80), timeout=2)
    assert v4.accepted + v6.accepted == 3


def test_raw_address_of_an_allowed_name_is_still_raw_before_any_lookup(netlab):
    server = netlab.tcp("198.51.100.11", 443)
    with sockguard.guarded(allow=["other.partner.test"]), pytest.raises(sockguard.EgressBlocked) as info:
        socket.create_connection(("198.51.100.11", 443), timeout=2)
    assert info.value.reason == "raw-ip"
    assert server.accepted == 0


def test_name_that_resolves_to_internal_or_metadata_is_blocked(netlab):
    netlab.dns.set("rebind.partner.test", A=["169.254.169.254"])
    netlab.dns.set("private.partner.test", A=["10.20.30.40"])
    metadata = netlab.tcp("169.254.169.254", 80)
    private = netlab.tcp("10.20.30.40", 80)
    with sockguard.guarded(allow=["*.partner.test"]):
        for name, address, category in (
            ("rebind.partner.test", "169.254.169.254", "metadata"),
            ("private.partner.test", "10.20.30.40", "private"),
        ):
            with pytest.raises(sockguard.EgressBlocked) as info:
                socket.create_connection((name, 80), timeout=2)
            assert (info.value.reason, info.value.address) == ("internal-address", address)
            assert category in str(info.value)
    assert metadata.accepted == private.accepted == 0
    # An explicit IP rule is what makes an internal address reachable through a name.
    with sockguard.guarded(allow=["*.partner.test", "10.20.30.40"]):
        socket.create_connection(("private.partner.test", 80), timeout=2).close()
    assert private.accepted == 1


def test_rebinding_between_lookups_is_caught(netlab):
    netlab.dns.set("flip.partner.test", A=["198.51.100.12"], ttl=0)
    public = netlab.tcp("198.51.100.12", 80)
    internal = netlab.tcp("10.0.0.5", 80)
    with sockguard.guarded(allow=["flip.partner.test"]):
        socket.create_connection(("flip.partner.test", 80), timeout=2).close()
        netlab.dns.set("flip.partner.test", A=["10.0.0.5"], ttl=0)
        with pytest.raises(sockguard.EgressBlocked) as info:
            socket.create_connection(("flip.partner.test", 80), timeout=2)
    assert info.value.reason == "internal-address"
    assert (public.accepted, internal.accepted) == (1, 0)


def test_mixed_answers_keep_only_allowed_addresses(netlab, tmp_path):
    netlab.dns.set("mixed.partner.test", A=["10.20.30.40", "198.51.100.10"])
    public = netlab.tcp("198.51.100.10", 80)
    private = netlab.tcp("10.20.30.40", 80)
    log = tmp_path / "d.jsonl"
    with sockguard.guarded(allow=["mixed.partner.test"], log=str(log)):
        answers = socket.getaddrinfo("mixed.partner.test", 80, socket.AF_INET, socket.SOCK_STREAM)
        assert [a[4][0] for a in answers] == ["198.51.100.10"]
        for _ in range(3):
            socket.create_connection(("mixed.partner.test", 80), timeout=2).close()
    assert (public.accepted, private.accepted) == (3, 0)
    dropped = [line for line in log.read_text().splitlines() if '"10.20.30.40"' in line]
    assert dropped and all('"internal-address"' in line for line in dropped)


def test_deny_rules_apply_to_resolved_addresses(netlab):
    netlab.dns.set("cdn.partner.test", A=["203.0.113.10"])
    server = netlab.tcp("203.0.113.10", 443)
    with (
        sockguard.guarded(allow=["*.partner.test"], deny=["203.0.113.0/24"]),
        pytest.raises(sockguard.EgressBlocked) as info,
    ):
        socket.create_connection(("cdn.partner.test", 443), timeout=2)
    assert (info.value.reason, info.value.rule) == ("denied", "203.0.113.0/24")
    assert server.accepted == 0


def test_cname_chain_is_decided_on_the_asked_name(netlab):
    netlab.dns.set("edge.cdn-provider.test", A=["198.51.100.11"])
    netlab.dns.cname("assets.partner.test", "edge.cdn-provider.test")
    server = netlab.tcp("198.51.100.11", 80)
    with sockguard.guarded(allow=["assets.partner.test"]):
        socket.create_connection(("assets.partner.test", 80), timeout=2).close()
    assert server.accepted == 1


def test_hosts_file_mapping_to_a_denied_address(netlab):
    # static.netlab.test is in the lab's /etc/hosts: no DNS involved at all.
    server = netlab.tcp("198.51.100.30", 80)
    with (
        sockguard.guarded(allow=["static.netlab.test"], deny=["198.51.100.30", "2001:db8::30"]),
        pytest.raises(sockguard.EgressBlocked) as info,
    ):
        socket.create_connection(("static.netlab.test", 80), timeout=2)
    assert info.value.reason == "denied"  # no answer survived: the lookup raises, never an empty list
    assert server.accepted == 0
    assert netlab.dns.queries("static.netlab.test") == 0


def test_metadata_name_needs_an_exact_rule(netlab):
    netlab.dns.set("metadata.google.internal", A=["169.254.169.254"])
    with sockguard.guarded(allow=["*.internal", "*.google.internal"]), pytest.raises(sockguard.EgressBlocked) as info:
        socket.getaddrinfo("metadata.google.internal", 80)
    assert info.value.reason == "metadata-name"
    assert netlab.dns.queries("metadata.google.internal") == 0


def test_monitor_mode_resolves_everything_and_logs(netlab, tmp_path):
    netlab.dns.set("unlisted.partner.test", A=["198.51.100.10"])
    server = netlab.tcp("198.51.100.10", 80)
    log = tmp_path / "m.jsonl"
    with sockguard.guarded(mode="monitor", log=str(log)):
        socket.create_connection(("unlisted.partner.test", 80), timeout=2).close()
    assert server.accepted == 1
    text = log.read_text()
    assert '"would-block"' in text and '"unlisted.partner.test"' in text


def _outcome(name):
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
    except socket.gaierror as exc:
        return (type(exc), exc.errno)


def test_an_absolute_name_is_not_answered_from_the_hosts_file(netlab):
    """glibc's files backend compares the name as given: ``localhost.`` and ``static.netlab.test.`` (trailing dot)
    are not /etc/hosts names and go to DNS. The guard handed C the name without its dot, so they resolved from the
    hosts file where unguarded they do not (urllib3's suite: its ``localhost.`` probe passed only under the guard,
    and its tests that need ``localhost.`` ran)."""
    netlab.dns.set("static.netlab.test", A=["198.51.100.31"])  # DNS says otherwise than the hosts file (.30)
    for name in ("localhost.", "static.netlab.test.", "LocalHost."):
        before = netlab.dns.queries(name)
        unguarded = _outcome(name)
        asked = netlab.dns.queries(name) - before
        with sockguard.guarded(allow=["static.netlab.test"], allow_loopback=True):
            guarded = _outcome(name)
        assert guarded == unguarded, name
        assert netlab.dns.queries(name) - before == 2 * asked, name  # the same queries, guarded or not
    with sockguard.guarded(allow=["static.netlab.test"], allow_loopback=True):  # the control: without the dot
        assert _outcome("static.netlab.test") == ["198.51.100.30"]
