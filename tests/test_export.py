"""``sockguard export``: every format parsed back, checked against its published schema or tool,
and compared with the policy's own decisions (lossless where the target can say it, narrower
with a warning where it cannot, never wider).

No test here sends a DNS query anywhere but a server the test starts on 127.0.0.1, and the
firewall end-to-end tests run inside a network namespace they create themselves.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockguard import cli
from sockguard.addresses import parse_address
from sockguard.export import cli as export_mod
from sockguard.export.model import (
    ALL,
    Entry,
    Net,
    Service,
    blocks_with_except,
    flatten,
    merge,
    name_allows,
    range_to_nets,
    subtract,
)
from sockguard.export.plan import K8sOptions, Resolution, build_plan
from sockguard.export.targets import render
from sockguard.policy import Policy
from sockguard.rules import parse_rule

# --- helpers --------------------------------------------------------------------------------------------


def fake_resolver(table: dict[str, list[tuple[str, int]]]):
    """A resolver function for unit tests: name -> [(address, ttl)]; unknown names fail like NXDOMAIN."""
    calls: list[str] = []

    def resolve(host: str) -> Resolution:
        calls.append(host)
        if host not in table:
            return Resolution((), "no such name (NXDOMAIN)")
        return Resolution(tuple((parse_address(a), ttl) for a, ttl in table[host]))

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def export(fmt: str, allow, deny=(), resolve=None, **kw) -> tuple[str, Any]:
    plan = build_plan(allow, deny, fmt=fmt, resolve=resolve, **kw)
    return render(fmt, plan), plan.messages


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sockguard export")
    export_mod.add_arguments(p)
    return p


@pytest.fixture
def clean_env(unconfigured):
    """No config file or SOCKGUARD_* variable from the outside leaks into the export."""
    return unconfigured


def run_export(argv: list[str], capsys, resolve=None) -> tuple[int, str, str]:
    code = export_mod.main(parser().parse_args(argv), resolve=resolve)
    out, err = capsys.readouterr()
    return code, out, err


class FakeDNS:
    """A tiny dnspython DNS server on 127.0.0.1 (random port) that counts the queries it gets."""

    def __init__(self, records: dict[str, list[tuple[str, str, int]]]) -> None:
        import dns.message
        import dns.rcode
        import dns.rdatatype
        import dns.rrset

        self._dns = (dns.message, dns.rcode, dns.rdatatype, dns.rrset)
        self.records = records
        self.queries: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        message, rcode, rdatatype, rrset = self._dns
        while True:
            data, peer = self.sock.recvfrom(4096)
            if data == b"stop":
                return
            query = message.from_wire(data)
            question = query.question[0]
            name = question.name.to_text().rstrip(".").lower()
            kind = rdatatype.to_text(question.rdtype)
            self.queries.append((name, kind))
            response = message.make_response(query)
            if name not in self.records:
                response.set_rcode(rcode.NXDOMAIN)
            for rtype, address, ttl in self.records.get(name, []):
                if rtype == kind:
                    response.answer.append(rrset.from_text(question.name, ttl, "IN", rtype, address))
            self.sock.sendto(response.to_wire(), peer)

    def stop(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"stop", ("127.0.0.1", self.port))
        self.thread.join()
        self.sock.close()


@pytest.fixture
def fake_dns() -> Iterator[FakeDNS]:
    server = FakeDNS(
        {
            "api.example.test": [("A", "203.0.113.7", 300), ("AAAA", "2001:db8::7", 120)],
            "internal.example.test": [("A", "10.20.30.40", 60)],
        }
    )
    yield server
    server.stop()


# --- the model ------------------------------------------------------------------------------------------


def test_port_ranges_merge_and_subtract():
    assert merge([(5, 9), (1, 3), (4, 4), (20, 30)]) == ((1, 9), (20, 30))
    assert subtract(((1, 65535),), ((22, 22),)) == ((1, 21), (23, 65535))
    assert subtract(((10, 20),), ((1, 5), (15, 30))) == ((10, 14),)
    assert subtract(((10, 20),), ((10, 20),)) == ()


def test_range_to_nets_is_exact_and_minimal():
    nets = range_to_nets(4, int(ipaddress.ip_address("10.0.0.1")), int(ipaddress.ip_address("10.0.0.6")))
    assert [n.text() for n in nets] == ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
    assert [n.text() for n in range_to_nets(6, 0, (1 << 128) - 1)] == ["::/0"]
    assert [n.text() for n in range_to_nets(4, 0, (1 << 32) - 1)] == ["0.0.0.0/0"]


def test_flatten_carves_denies_out_of_allows():
    allow = [Entry(Net(4, 10 << 24, 8), ALL, "10.0.0.0/8")]
    deny = [
        Entry(Net(4, (10 << 24) | (1 << 16) | (2 << 8) | 3, 32), ALL, "deny one host"),
        Entry(Net(4, (10 << 24) | (9 << 16), 16), Service(False, ((22, 22),)), "deny ssh"),
    ]
    segments = flatten(allow, deny)
    services = {s.service for s in segments}
    assert services == {ALL, Service(True, ((1, 21), (23, 65535)))}
    # every address of 10/8 except the denied host is still covered
    total = sum(s.hi - s.lo + 1 for s in segments)
    assert total == (1 << 24) - 1
    blocks = blocks_with_except([s for s in segments if s.service == ALL], [allow[0].net])
    assert [(n.text(), [h.text() for h in holes]) for n, holes in blocks] == [
        ("10.0.0.0/8", ["10.1.2.3/32", "10.9.0.0/16"])
    ]


def test_name_denies_subtract_exactly_or_narrow_with_a_report():
    allow = [parse_rule(r) for r in ("api.example.test", "*.example.test:443", "*.other.test")]
    deny = [parse_rule(r) for r in ("api.example.test:22", "secret.example.test", "*.other.test")]
    names, cancelled = name_allows(allow, deny)
    by_rule = {n.rule.text: n for n in names}
    # an exact deny of the same name with a port: exact subtraction, other protocols stay
    assert by_rule["api.example.test"].service == Service(True, ((1, 21), (23, 65535)))
    assert by_rule["api.example.test"].partial_denies == ()
    # the wildcard covers more than the deny: a name selector cannot leave one name out -> cancelled, not exact
    assert ("*.example.test:443", "secret.example.test", False) in [(a.text, d.text, e) for a, d, e in cancelled]
    # the same wildcard denied: exact cancellation
    assert ("*.other.test", "*.other.test", True) in [(a.text, d.text, e) for a, d, e in cancelled]


# --- the policy's own decisions are the reference -------------------------------------------------------

BASE = int(ipaddress.ip_address("10.0.0.0"))


@st.composite
def cidr_rules(draw, max_rules: int):
    out = []
    for _ in range(draw(st.integers(0, max_rules))):
        prefix = draw(st.integers(26, 32))
        offset = draw(st.integers(0, 255)) & ~((1 << (32 - prefix)) - 1)
        net = ipaddress.ip_network(f"{ipaddress.ip_address(BASE + offset)}/{prefix}")
        text = str(net.network_address) if prefix == 32 else str(net)
        ports = draw(st.sampled_from([None, None, (22, 22), (20, 25), (443, 443), (21, 23)]))
        if ports:
            text += f":{ports[0]}" if ports[0] == ports[1] else f":{ports[0]}-{ports[1]}"
        out.append(text)
    return out


PROBE_PORTS = (0, 19, 20, 21, 22, 23, 25, 26, 443, 444)  # 0: a datagram without a port (icmp, raw)


def sg_checker(perms: list[dict]):
    """Security-group semantics: any permission whose range holds the address and whose protocol/ports match."""
    compiled = []
    for perm in perms:
        ranges = [r["CidrIp"] for r in perm.get("IpRanges", [])] + [r["CidrIpv6"] for r in perm.get("Ipv6Ranges", [])]
        ports = None if perm["IpProtocol"] == "-1" else (perm["FromPort"], perm["ToPort"])
        compiled.append(([ipaddress.ip_network(c) for c in ranges], ports))

    def allows(addr: str, port: int) -> bool:
        ip = ipaddress.ip_address(addr)
        return any(
            any(ip in net for net in nets) and (ports is None or (port and ports[0] <= port <= ports[1]))
            for nets, ports in compiled
        )

    return allows


def sg_allows(perms: list[dict], addr: str, port: int) -> bool:
    return sg_checker(perms)(addr, port)


def k8s_checker(policy: dict):
    """NetworkPolicy semantics: a rule admits the address if an ipBlock holds it outside its excepts,
    and the port if the rule has no ports or one entry's port..endPort holds it."""
    compiled = []
    for rule in policy["spec"]["egress"]:
        peers = [p["ipBlock"] for p in rule.get("to", []) if "ipBlock" in p]
        net = ipaddress.ip_network
        blocks = [(net(b["cidr"]), [net(e) for e in b.get("except", [])]) for b in peers]
        ports = [(p["port"], p.get("endPort", p["port"])) for p in rule.get("ports", [])] or None
        compiled.append((blocks, ports))

    def allows(addr: str, port: int) -> bool:
        ip = ipaddress.ip_address(addr)
        for blocks, ports in compiled:
            if not any(ip in net and not any(ip in hole for hole in holes) for net, holes in blocks):
                continue
            if ports is None or (port and any(lo <= port <= hi for lo, hi in ports)):
                return True
        return False

    return allows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(allow=cidr_rules(5), deny=cidr_rules(4))
def test_sg_and_networkpolicy_match_the_policy_exactly(allow, deny):
    """For every address of 10.0.0.0/24 and a spread of ports, the security group and the
    NetworkPolicy allow exactly what Policy.check_address allows; where they cannot say it they
    warn, and the only difference is then traffic without ports (narrower)."""
    policy = Policy(allow, deny, allow_loopback=False)
    sg_text, sg_msgs = export("aws-sg", allow, deny, dns=False)
    k8s_text, k8s_msgs = export("k8s", allow, deny, dns=False)
    sg, netpol = sg_checker(json.loads(sg_text)), k8s_checker(json.loads(k8s_text))
    for offset in range(256):
        addr = str(ipaddress.ip_address(BASE + offset))
        for port in PROBE_PORTS:
            want = policy.check_address(addr, port).allowed
            for got, msgs in ((sg(addr, port), sg_msgs), (netpol(addr, port), k8s_msgs)):
                if got == want:
                    continue
                assert not got, f"export wider than the policy at {addr} port {port}"
                assert port == 0 and any("other protocols" in w for w in msgs.warnings), (addr, port, msgs.warnings)


def cilium_regex(pattern: str) -> re.Pattern[str]:
    """Cilium's matchPattern semantics, after pkg/fqdn/matchpattern (Cilium >= 1.19): a leading "**."
    is one or more labels, "*" is any run of DNS characters within a label, names end with a dot."""
    chars = "[-a-zA-Z0-9_]"
    body = pattern.lower().rstrip(".") + "."
    prefix = ""
    if body.startswith("**."):
        prefix, body = f"({chars}+[.])+", body[3:]
    body = body.replace(".", "[.]").replace("*", f"{chars}*")
    return re.compile("^" + prefix + body + "$")


def cilium_admits(policy: dict, name: str) -> bool:
    fqdn = name + "."
    for rule in policy["spec"]["egress"]:
        for selector in rule.get("toFQDNs", []):
            if "matchName" in selector and selector["matchName"].rstrip(".") + "." == fqdn:
                return True
            if "matchPattern" in selector and cilium_regex(selector["matchPattern"]).match(fqdn):
                return True
    return False


LABELS = st.sampled_from(["a", "b", "api", "x-1", "_srv"])
SUFFIXES = st.sampled_from(["example.test", "b.example.test", "api.example.test", "other.test", "test"])


@settings(max_examples=300, deadline=None)
@given(
    allow=st.lists(
        st.sampled_from(["example.test", "*.example.test", "api.example.test", "*.b.example.test"]), min_size=1
    ),
    deny=st.lists(st.sampled_from(["api.example.test", "*.b.example.test", "a.example.test"]), max_size=2),
    labels=st.lists(LABELS, max_size=3),
    suffix=SUFFIXES,
)
def test_cilium_names_match_the_policy(allow, deny, labels, suffix):
    """toFQDNs admits a name only if the policy admits it (any port), and exactly the same names
    when no deny cuts into a wildcard; Cilium < 1.19 (one-label '*') is never wider either."""
    name = ".".join([*labels, suffix])
    policy = Policy(allow, deny)
    want = policy.check_name(name).allowed
    for version, exact in (((1, 19), True), ((1, 18), False)):
        text, msgs = export("cilium", allow, deny, k8s=K8sOptions(cilium_version=version))
        got = cilium_admits(json.loads(text), name)
        assert not (got and not want), f"cilium {version} admits {name} which the policy blocks"
        if got != want:
            assert not exact or msgs.warnings, f"cilium {version} silently narrower for {name}"


def test_cilium_wildcard_translation_and_version_warning():
    text, msgs = export("cilium", ["*.example.test:443", "api.example.test"])
    fqdns = [s for r in json.loads(text)["spec"]["egress"] for s in r.get("toFQDNs", [])]
    assert {"matchPattern": "**.example.test"} in fqdns and {"matchName": "api.example.test"} in fqdns
    assert not msgs.warnings
    pattern = cilium_regex("**.example.test")
    assert pattern.match("a.b.c.example.test.") and pattern.match("a.example.test.")
    assert not pattern.match("example.test.") and not pattern.match("aexample.test.")

    text, msgs = export("cilium", ["*.example.test:443"], k8s=K8sOptions(cilium_version=(1, 18)))
    fqdns = [s for r in json.loads(text)["spec"]["egress"] for s in r.get("toFQDNs", [])]
    assert fqdns == [{"matchPattern": "*.example.test"}]
    assert any("deeper names are not covered" in w for w in msgs.warnings)

    _, msgs = export("cilium", ["203.0.113.0/24:8000-8100"], k8s=K8sOptions(cilium_version=(1, 15)))
    assert any("ignores endPort" in w for w in msgs.warnings)
    _, msgs = export("cilium", ["203.0.113.0/24:8000-8100"], k8s=K8sOptions(cilium_version=(1, 16)))
    assert not msgs.warnings


def test_cilium_denies_internal_ranges_for_names_but_not_allowed_cidrs():
    text, msgs = export("cilium", ["api.example.test", "10.0.0.0/8", "172.16.5.5:5432"], ["203.0.113.0/24:25"])
    spec = json.loads(text)["spec"]
    denied = {c["cidr"]: rule.get("toPorts") for rule in spec["egressDeny"] for c in rule["toCIDRSet"]}
    assert "10.0.0.0/8" not in denied  # allowed by a CIDR rule
    assert "169.254.0.0/16" in denied and denied["169.254.0.0/16"] is None  # metadata and link-local
    assert "fd00::/8" in denied or "fc00::/7" in denied
    # 172.16.5.5 is allowed on 5432 only: names that resolve there are denied every other port
    ports = [p for pr in denied["172.16.5.5/32"] for p in pr["ports"]]
    assert {"port": "1", "endPort": 5431, "protocol": "TCP"} in ports
    assert {"port": "5433", "endPort": 65535, "protocol": "UDP"} in ports
    assert any("icmp" in w for w in msgs.warnings)  # the part Cilium deny rules cannot say
    # the user's deny, and its IPv6 embeddings (names may resolve to NAT64/6to4 forms)
    assert denied["203.0.113.0/24"][0]["ports"][0] == {"port": "25", "protocol": "TCP"}
    assert "64:ff9b::cb00:7100/120" in denied and "2002:cb00:7100::/40" in denied


def test_mapped_rules_also_cover_ipv4_and_v4_denies_cover_embeddings():
    policy = Policy(["[::ffff:203.0.113.0/120]", "2002::/16"], ["198.51.100.7"])
    assert policy.check_address("203.0.113.5", 443).allowed
    assert not policy.check_address("2002:c633:6407::1", 443).allowed  # 6to4 of the denied host
    text, msgs = export("aws-sg", ["[::ffff:203.0.113.0/120]", "2002::/16"], ["198.51.100.7"], dns=False)
    perms = json.loads(text)
    assert sg_allows(perms, "203.0.113.5", 443)
    assert not sg_allows(perms, "2002:c633:6407::1", 443)
    assert sg_allows(perms, "2002:c633:6408::1", 443)
    assert not msgs.warnings


def test_cilium_dns_rule_port_chunks_and_partial_services():
    from sockguard.export.targets.cilium import _cilium_port_rules

    rules = _cilium_port_rules(Service(False, tuple((p, p) for p in range(1000, 1060, 2))))
    assert [len(r["ports"]) for r in rules] == [40, 20]  # 30 ports x tcp/udp, at most 40 per entry
    text, _ = export("cilium", ["api.example.test", "*.cdn.example.test"], k8s=K8sOptions(dns_names="policy"))
    dns_rule = json.loads(text)["spec"]["egress"][0]
    assert dns_rule["toPorts"][0]["rules"]["dns"] == [
        {"matchName": "api.example.test"},
        {"matchPattern": "**.cdn.example.test"},
    ]


def test_nftables_keeps_other_protocols_where_others_cannot():
    resolve = fake_resolver({"api.example.test": [("203.0.113.7", 60)]})
    text, msgs = export("nftables", ["api.example.test"], ["api.example.test:22"], resolve=resolve, dns=False)
    assert "meta l4proto != { tcp, udp } accept" in text
    assert "th dport { 1-21, 23-65535 } accept" in text
    assert not any("other protocols" in w for w in msgs.warnings)
    _, msgs = export("iptables", ["api.example.test"], ["api.example.test:22"], resolve=resolve, dns=False)
    assert any("other protocols" in w for w in msgs.warnings)


def test_sg_descriptions_stay_within_aws_limits():
    from sockguard.export.targets.aws_sg import sg_description

    text = sg_description((*(f"name-{i}.example.test ttl 300s" for i in range(40)), "weird\"label'é"))
    assert len(text) == 255 and text.endswith("...")
    assert sg_description(("a'b\"c",)) == "sockguard: a_b_c"


# --- names resolved to addresses ------------------------------------------------------------------------


def test_names_become_addresses_with_ttl_and_a_warning():
    resolve = fake_resolver({"api.example.test": [("203.0.113.7", 300), ("2001:db8::7", 120)]})
    text, msgs = export("aws-sg", ["api.example.test:443", "*.example.test"], resolve=resolve, dns=False)
    perms = json.loads(text)
    tcp = next(p for p in perms if p["IpProtocol"] == "tcp")
    assert (tcp["FromPort"], tcp["ToPort"]) == (443, 443)
    assert tcp["IpRanges"] == [{"CidrIp": "203.0.113.7/32", "Description": "sockguard: api.example.test ttl 300s"}]
    assert tcp["Ipv6Ranges"][0]["CidrIpv6"] == "2001:db8::7/128"
    assert any("ttl 120s" in w and "Addresses change" in w for w in msgs.warnings)
    assert any("*.example.test" in w and "wildcard" in w for w in msgs.warnings)
    assert resolve.calls == ["api.example.test"]


def test_internal_answers_and_failures_are_left_out():
    resolve = fake_resolver({"db.example.test": [("10.1.2.3", 60)], "meta.example.test": [("169.254.169.254", 60)]})
    text, msgs = export(
        "nftables", ["db.example.test", "meta.example.test", "gone.example.test"], resolve=resolve, dns=False
    )
    assert "10.1.2.3" not in text and "169.254.169.254" not in text
    assert any("gone.example.test" in w and "NXDOMAIN" in w for w in msgs.warnings)
    assert any("internal address" in n for n in msgs.notes)
    policy = Policy(["db.example.test"])  # the policy agrees: the name may not reach a private address
    assert not policy.check_address("10.1.2.3", 443, name="db.example.test").allowed


def test_no_resolve_sends_no_query(fake_dns, clean_env, capsys):
    code, out, err = run_export(
        [
            "--format",
            "nftables",
            "--allow",
            "api.example.test",
            "--no-resolve",
            "--resolver",
            f"127.0.0.1:{fake_dns.port}",
        ],
        capsys,
    )
    assert code == 0
    assert fake_dns.queries == []
    assert "not resolved (--no-resolve)" in err and "203.0.113.7" not in out


def test_cli_resolves_through_the_given_resolver(fake_dns, clean_env, capsys):
    code, out, err = run_export(
        [
            "--format",
            "aws-sg",
            "--allow",
            "api.example.test:443",
            "--allow",
            "internal.example.test",
            "--resolver",
            f"127.0.0.1:{fake_dns.port}",
        ],
        capsys,
    )
    assert code == 0, err
    assert sorted(fake_dns.queries) == sorted(
        [
            ("api.example.test", "A"),
            ("api.example.test", "AAAA"),
            ("internal.example.test", "A"),
            ("internal.example.test", "AAAA"),
        ]
    )
    perms = json.loads(out)
    descriptions = [r["Description"] for p in perms for r in p.get("IpRanges", []) + p.get("Ipv6Ranges", [])]
    assert "sockguard: api.example.test ttl 300s" in descriptions
    assert "sockguard: api.example.test ttl 120s" in descriptions
    assert "10.20.30.40" not in out  # internal answer left out
    assert "warning:" in err and "Addresses change" in err
    # the resolver on loopback is not a security-group destination
    assert "is loopback; not added" in err


# --- schemas --------------------------------------------------------------------------------------------

# Transcribed from the Kubernetes OpenAPI v3 document (api/openapi-spec/v3/apis__networking.k8s.io__v1_openapi.json:
# io.k8s.api.networking.v1.{NetworkPolicy,NetworkPolicySpec,NetworkPolicyEgressRule,NetworkPolicyPeer,IPBlock,
# NetworkPolicyPort}). Types and "required" as published; additionalProperties false is added (as kubectl's
# strict field validation would reject unknown fields).
_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array"},
    },
    "additionalProperties": False,
}
K8S_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "networking.k8s.io/v1"},
        "kind": {"const": "NetworkPolicy"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "spec": {"$ref": "#/$defs/NetworkPolicySpec"},
    },
    "additionalProperties": False,
    "$defs": {
        "NetworkPolicySpec": {
            "type": "object",
            "required": ["podSelector"],
            "properties": {
                "egress": {"type": "array", "items": {"$ref": "#/$defs/NetworkPolicyEgressRule"}},
                "ingress": {"type": "array"},
                "podSelector": _SELECTOR,
                "policyTypes": {"type": "array", "items": {"type": "string", "enum": ["Ingress", "Egress"]}},
            },
            "additionalProperties": False,
        },
        "NetworkPolicyEgressRule": {
            "type": "object",
            "properties": {
                "ports": {"type": "array", "items": {"$ref": "#/$defs/NetworkPolicyPort"}},
                "to": {"type": "array", "items": {"$ref": "#/$defs/NetworkPolicyPeer"}},
            },
            "additionalProperties": False,
        },
        "NetworkPolicyPeer": {
            "type": "object",
            "properties": {
                "ipBlock": {"$ref": "#/$defs/IPBlock"},
                "namespaceSelector": _SELECTOR,
                "podSelector": _SELECTOR,
            },
            "additionalProperties": False,
        },
        "IPBlock": {
            "type": "object",
            "required": ["cidr"],
            "properties": {"cidr": {"type": "string"}, "except": {"type": "array", "items": {"type": "string"}}},
            "additionalProperties": False,
        },
        "NetworkPolicyPort": {
            "type": "object",
            "properties": {
                "endPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                "port": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                "protocol": {"type": "string", "enum": ["TCP", "UDP", "SCTP"]},
            },
            "additionalProperties": False,
        },
    },
}

# Transcribed from Cilium's CRD (pkg/k8s/apis/cilium.io/client/crds/v2/ciliumnetworkpolicies.yaml): the spec's
# anyOf/oneOf, and the egress / egressDeny members sockguard writes with their patterns, enums and limits.
_LABEL_VALUE = {"type": "string", "maxLength": 63, "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"}
_ENDPOINT_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": _LABEL_VALUE},
        "matchExpressions": {"type": "array"},
    },
    "additionalProperties": False,
}
_PORT_PROTOCOL = {
    "type": "object",
    "properties": {
        "endPort": {"type": "integer", "minimum": 0, "maximum": 65535},
        "port": {
            "type": "string",
            "pattern": r"^(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
            r"|([a-zA-Z0-9]-?)*[a-zA-Z](-?[a-zA-Z0-9])*$",
        },
        "protocol": {"type": "string", "enum": ["TCP", "UDP", "SCTP", "VRRP", "IGMP", "ANY"]},
    },
    "additionalProperties": False,
}
_DNS_SELECTOR = {
    "type": "object",
    "oneOf": [{"required": ["matchName"]}, {"required": ["matchPattern"]}],
    "properties": {
        "matchName": {"type": "string", "maxLength": 255, "pattern": r"^([-a-zA-Z0-9_]+[.]?)+$"},
        "matchPattern": {"type": "string", "maxLength": 255, "pattern": r"^([-a-zA-Z0-9_*]+[.]?)+$"},
    },
    "additionalProperties": False,
}
_CIDR_SET = {
    "type": "array",
    "items": {
        "type": "object",
        "oneOf": [{"required": ["cidr"]}, {"required": ["cidrGroupRef"]}, {"required": ["cidrGroupSelector"]}],
        "properties": {"cidr": {"type": "string"}, "except": {"type": "array", "items": {"type": "string"}}},
        "additionalProperties": False,
    },
}
CILIUM_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cilium.io/v2"},
        "kind": {"const": "CiliumNetworkPolicy"},
        "metadata": K8S_SCHEMA["properties"]["metadata"],
        "spec": {
            "type": "object",
            "anyOf": [
                {"required": ["ingress"]},
                {"required": ["ingressDeny"]},
                {"required": ["egress"]},
                {"required": ["egressDeny"]},
            ],
            "oneOf": [{"required": ["endpointSelector"]}, {"required": ["nodeSelector"]}],
            "properties": {
                "description": {"type": "string"},
                "endpointSelector": _ENDPOINT_SELECTOR,
                "enableDefaultDeny": {
                    "type": "object",
                    "properties": {"egress": {"type": "boolean"}, "ingress": {"type": "boolean"}},
                    "additionalProperties": False,
                },
                "egress": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "toEndpoints": {"type": "array", "items": _ENDPOINT_SELECTOR},
                            "toFQDNs": {"type": "array", "items": _DNS_SELECTOR},
                            "toCIDRSet": _CIDR_SET,
                            "toPorts": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "ports": {"type": "array", "maxItems": 40, "items": _PORT_PROTOCOL},
                                        "rules": {
                                            "type": "object",
                                            "oneOf": [{"required": ["http"]}, {"required": ["dns"]}],
                                            "properties": {"dns": {"type": "array", "items": _DNS_SELECTOR}},
                                            "additionalProperties": False,
                                        },
                                    },
                                    "additionalProperties": False,
                                },
                            },
                        },
                        "additionalProperties": False,
                    },
                },
                "egressDeny": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "toCIDRSet": _CIDR_SET,
                            "toPorts": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {"ports": {"type": "array", "items": _PORT_PROTOCOL}},
                                    "additionalProperties": False,
                                },
                            },
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

POLICY_ALLOW = [
    "api.example.test:443",
    "*.cdn.example.test",
    "203.0.113.0/24:8000-8100",
    "198.51.100.0/24",
    "[2001:db8::/32]:443",
    "10.0.0.5:5432",
]
POLICY_DENY = ["198.51.100.9", "198.51.100.0/25:22", "secret.cdn.example.test:25"]
PORT_HEAVY = [f"203.0.113.{i}:{1000 + 10 * i}-{1005 + 10 * i}" for i in range(1, 30)]


def _check_cidrs(doc: Any) -> None:
    """Every cidr parses, with no host bits set, and every except lies inside its cidr (the API rejects others)."""
    if isinstance(doc, dict):
        if "cidr" in doc:
            net = ipaddress.ip_network(doc["cidr"])  # strict: host bits set raises
            for hole in doc.get("except", []):
                assert ipaddress.ip_network(hole).subnet_of(net)
        for value in doc.values():
            _check_cidrs(value)
    elif isinstance(doc, list):
        for value in doc:
            _check_cidrs(value)


@pytest.mark.parametrize("allow", [POLICY_ALLOW, POLICY_ALLOW + PORT_HEAVY, []])
def test_k8s_output_validates_against_the_schema(allow):
    jsonschema = pytest.importorskip("jsonschema")
    yaml = pytest.importorskip("yaml")
    opts = K8sOptions(namespace="payments", pod_labels={"app": "api"})
    text, _ = export("k8s", allow, POLICY_DENY, k8s=opts)
    doc = json.loads(text)
    jsonschema.Draft202012Validator(K8S_SCHEMA).validate(doc)
    assert yaml.safe_load(text) == doc  # kubectl reads it as YAML too
    _check_cidrs(doc)
    for rule in doc["spec"]["egress"]:
        for port in rule.get("ports", []):
            if "endPort" in port:  # "cannot be defined if the port field is not defined ... must be >= port"
                assert isinstance(port["port"], int) and port["endPort"] >= port["port"]
    assert doc["spec"]["policyTypes"] == ["Egress"]
    assert doc["metadata"]["namespace"] == "payments"


@pytest.mark.parametrize("allow", [POLICY_ALLOW, POLICY_ALLOW + PORT_HEAVY, [], ["*.example.test"]])
def test_cilium_output_validates_against_the_crd_schema(allow):
    jsonschema = pytest.importorskip("jsonschema")
    yaml = pytest.importorskip("yaml")
    text, _ = export("cilium", allow, POLICY_DENY, k8s=K8sOptions(dns_names="policy"))
    doc = json.loads(text)
    jsonschema.Draft202012Validator(CILIUM_SCHEMA).validate(doc)
    assert yaml.safe_load(text) == doc
    _check_cidrs(doc)
    for rule in doc["spec"]["egress"]:  # "ToFQDN cannot occur in the same policy as other To* rules"
        if "toFQDNs" in rule:
            assert not {"toEndpoints", "toCIDRSet", "toCIDR", "toEntities"} & set(rule)
    # the DNS-proxy rule toFQDNs needs
    dns_rule = doc["spec"]["egress"][0]
    if allow:
        assert dns_rule["toEndpoints"][0]["matchLabels"] == {
            "k8s:io.kubernetes.pod.namespace": "kube-system",
            "k8s:k8s-app": "kube-dns",
        }
        assert "dns" in dns_rule["toPorts"][0]["rules"]
    else:
        assert doc["spec"]["egress"] == [{}]  # nothing allowed: still default-deny


def test_aws_output_validates_against_the_botocore_model():
    botocore_session = pytest.importorskip("botocore.session")
    from botocore.validate import ParamValidator

    model = botocore_session.get_session().get_service_model("ec2")
    shape = model.operation_model("AuthorizeSecurityGroupEgress").input_shape
    doc_text = model.shape_for("IpRange").members["Description"].documentation
    assert "Up to 255 characters" in doc_text and "._-:/()#,@[]+=&amp;;{}!$*" in doc_text
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-:/()#,@[]+=&;{}!$*")
    resolve = fake_resolver({"api.example.test": [("203.0.113.7", 300), ("2001:db8::7", 300)]})
    for allow in (POLICY_ALLOW, POLICY_ALLOW + PORT_HEAVY, ["a" * 60 + ".example.test"] * 1):
        text, _ = export("aws-sg", allow, POLICY_DENY, resolve=resolve, dns_servers=[(parse_address("192.0.2.53"), 53)])
        perms = json.loads(text)
        report = ParamValidator().validate({"GroupId": "sg-0123456789abcdef0", "IpPermissions": perms}, shape)
        assert not report.has_errors(), report.generate_report()
        for perm in perms:
            assert perm["IpProtocol"] in ("-1", "tcp", "udp")
            if perm["IpProtocol"] != "-1":
                assert 1 <= perm["FromPort"] <= perm["ToPort"] <= 65535
            for entry in perm.get("IpRanges", []) + perm.get("Ipv6Ranges", []):
                assert len(entry["Description"]) <= 255 and set(entry["Description"]) <= allowed
        _check_cidrs(
            [
                {"cidr": r.get("CidrIp") or r["CidrIpv6"]}
                for p in perms
                for r in p.get("IpRanges", []) + p.get("Ipv6Ranges", [])
            ]
        )


# --- the real tools -------------------------------------------------------------------------------------


def _in_fresh_netns(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a command in a network namespace of its own, so nothing can touch another namespace's rules."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to get a private network namespace")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --net failed: {probe.stderr.decode().strip()}")
    return subprocess.run(["unshare", "--net", *cmd], capture_output=True, text=True, **kw)


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed (Debian package {'nftables' if tool == 'nft' else 'iptables'})")
    return path


RESOLVE = fake_resolver({"api.example.test": [("203.0.113.7", 300), ("2001:db8::7", 300)]})


@pytest.mark.parametrize("allow", [POLICY_ALLOW, POLICY_ALLOW + PORT_HEAVY + ["203.0.113.7", "198.51.100.7"], []])
def test_nft_accepts_the_ruleset(tmp_path, allow):
    nft = _require("nft")
    text, _ = export("nftables", allow, POLICY_DENY, resolve=RESOLVE, dns_servers=[(parse_address("192.0.2.53"), 53)])
    path = tmp_path / "egress.nft"
    path.write_text(text)
    result = _in_fresh_netns([nft, "-c", "-f", str(path)])
    assert result.returncode == 0, result.stderr + text


@pytest.mark.parametrize("fmt", ["iptables", "ip6tables"])
@pytest.mark.parametrize("allow", [POLICY_ALLOW, POLICY_ALLOW + PORT_HEAVY + ["[::ffff:203.0.113.0/120]"], []])
def test_iptables_restore_accepts_the_rules(tmp_path, fmt, allow):
    tool = _require(f"{fmt}-restore")
    deny = [*POLICY_DENY, "2001:db8:dead::/48"]
    text, _ = export(fmt, allow, deny, resolve=RESOLVE, dns_servers=[(parse_address("192.0.2.53"), 53)])
    path = tmp_path / "egress.rules"
    path.write_text(text)
    result = _in_fresh_netns([tool, "--test", str(path)])
    assert result.returncode == 0, result.stderr + text
    # and applied for real (still in the private namespace), twice: the chain is replaced, not appended to
    result = _in_fresh_netns(
        ["sh", "-c", f"{tool} --noflush {path} && {tool} --noflush {path} && {fmt}-save -t filter"]
    )
    assert result.returncode == 0, result.stderr
    chain_rules = [ln for ln in result.stdout.splitlines() if ln.startswith("-A SOCKGUARD-EGRESS")]
    assert len(chain_rules) == len([ln for ln in text.splitlines() if ln.startswith("-A SOCKGUARD-EGRESS")])


# --- end to end: the rules loaded in a private namespace, seen from the servers' side --------------------

NETNS_HELPER = r"""
import errno, json, socket, subprocess, sys, threading

spec = json.loads(sys.argv[1])

def sh(*cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)}: {done.stderr.strip()}")

# The "remote" hosts are addresses on lo: locally delivered packets still pass the output hook.
sh("ip", "link", "set", "lo", "up")
for addr in spec["addresses"]:
    sh("ip", "-6" if ":" in addr else "-4", "addr", "add", addr + ("/128" if ":" in addr else "/32"), "dev", "lo")
for cmd in spec["load"]:
    sh(*cmd)

reached = []
threads = []

def tcp_server(family, port):
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    listener.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    listener.listen(64)
    def run():
        while True:
            conn, _ = listener.accept()
            local = conn.getsockname()[0]
            conn.close()
            if local in ("127.0.0.1", "::1"):
                return  # the marker: every earlier connection has been accepted
            reached.append(f"tcp {local} {port}")
    threads.append(threading.Thread(target=run))

def udp_server(family, port):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    def run():
        while True:
            data, peer = sock.recvfrom(200)
            if data == b"marker":
                return
            reached.append(data.decode())
            sock.sendto(b"echo", peer)
    threads.append(threading.Thread(target=run))

servers = sorted({(p, ":" in h, port) for p, h, port in spec["probes"]})
for proto, v6, port in servers:
    family = socket.AF_INET6 if v6 else socket.AF_INET
    (tcp_server if proto == "tcp" else udp_server)(family, port)
for t in threads:
    t.start()

results = {}
for proto, host, port in spec["probes"]:
    key = f"{proto} {host} {port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    sock.settimeout(10)
    try:
        if proto == "tcp":
            sock.connect((host, port))
        else:
            sock.sendto(key.encode(), (host, port))
            sock.recv(100)
        results[key] = "ok"
    except OSError as exc:
        results[key] = errno.errorcode.get(exc.errno, type(exc).__name__) if exc.errno else type(exc).__name__
    finally:
        sock.close()

for proto, v6, port in servers:
    family = socket.AF_INET6 if v6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM) as sock:
        target = ("::1" if v6 else "127.0.0.1", port)
        if proto == "tcp":
            sock.connect(target)
        else:
            sock.sendto(b"marker", target)
for t in threads:
    t.join()
print(json.dumps({"results": results, "reached": sorted(reached)}))
"""

E2E_ALLOW = ["api.example.test:443", "198.51.100.0/24", "[2001:db8:1::/48]:8000-8100"]
E2E_DENY = ["198.51.100.9", "198.51.100.0/25:22"]
E2E_NAMES = {"api.example.test": [("203.0.113.7", 300), ("2001:db8::7", 300)]}
E2E_ADDRESSES = ["203.0.113.7", "203.0.113.8", "198.51.100.9", "198.51.100.10", "198.51.100.200", "2001:db8::7",
                 "2001:db8:1::5"]  # fmt: skip
E2E_PROBES = [
    ("tcp", "203.0.113.7", 443),
    ("tcp", "203.0.113.7", 80),
    ("tcp", "203.0.113.8", 443),
    ("tcp", "198.51.100.10", 80),
    ("tcp", "198.51.100.9", 80),
    ("tcp", "198.51.100.10", 22),
    ("tcp", "198.51.100.200", 22),
    ("tcp", "2001:db8::7", 443),
    ("tcp", "2001:db8::7", 80),
    ("tcp", "2001:db8:1::5", 8050),
    ("tcp", "2001:db8:1::5", 9000),
    ("udp", "198.51.100.10", 5353),
    ("udp", "198.51.100.9", 5353),
    ("udp", "203.0.113.7", 443),
    ("udp", "203.0.113.8", 443),
]


def _expected(probe: tuple[str, str, int]) -> bool:
    """What sockguard itself decides for the connection (reached by name where the name resolves there)."""
    _, host, port = probe
    policy = Policy(E2E_ALLOW, E2E_DENY)
    names = [n for n, answers in E2E_NAMES.items() if any(a == host for a, _ in answers)]
    return policy.check_address(host, port, name=names[0] if names else None).allowed


@pytest.mark.parametrize("fmt", ["nftables", "iptables"])
def test_loaded_rules_block_what_the_policy_blocks(tmp_path, fmt):
    """Load the export in a fresh namespace whose loopback carries the 'remote' addresses; the
    servers record every connection and datagram that reaches them: exactly the allowed ones arrive."""
    loads = []
    if fmt == "nftables":
        text, _ = export("nftables", E2E_ALLOW, E2E_DENY, resolve=fake_resolver(E2E_NAMES), dns=False)
        (tmp_path / "rules.nft").write_text(text)
        loads.append([_require("nft"), "-f", str(tmp_path / "rules.nft")])
    else:
        for family in ("iptables", "ip6tables"):
            text, _ = export(family, E2E_ALLOW, E2E_DENY, resolve=fake_resolver(E2E_NAMES), dns=False)
            (tmp_path / family).write_text(text)
            loads.append([_require(f"{family}-restore"), "--noflush", str(tmp_path / family)])
    _require("ip")
    helper = tmp_path / "helper.py"
    helper.write_text(NETNS_HELPER)
    spec = {"addresses": E2E_ADDRESSES, "load": loads, "probes": E2E_PROBES}
    result = _in_fresh_netns([sys.executable, "-I", str(helper), json.dumps(spec)], timeout=300)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    expected = {f"{p} {h} {port}": _expected((p, h, port)) for p, h, port in E2E_PROBES}
    assert sum(expected.values()) >= 6 and sum(not v for v in expected.values()) >= 6  # both sides exercised
    for key, allowed in expected.items():
        assert (outcome["results"][key] == "ok") == allowed, (key, outcome["results"][key])
    # from the other side: only the allowed destinations ever saw a connection or datagram
    assert outcome["reached"] == sorted(k for k, allowed in expected.items() if allowed)
    blocked = {k: v for k, v in outcome["results"].items() if not expected[k]}
    # refused at once (rejected, as the guard refuses at once), not left to time out
    assert set(blocked.values()) <= {"EPERM", "EHOSTUNREACH", "EACCES"}, blocked


# --- the command ----------------------------------------------------------------------------------------


def test_exit_codes(clean_env, capsys):
    code, out, err = run_export(["--format", "k8s", "--allow", "api.example.test", "--allow", "10.0.0.0/8"], capsys)
    assert code == 0 and "warning: k8s: 'api.example.test'" in err
    code, out, err = run_export(["--format", "k8s", "--strict", "--allow", "api.example.test"], capsys)
    assert code == 1 and json.loads(out)["kind"] == "NetworkPolicy" and "--strict" in err
    code, _, err = run_export(["--format", "k8s", "--strict", "--allow", "10.0.0.0/8:443"], capsys)
    assert code == 0 and "warning" not in err
    for argv, message in [
        (["--allow", "http://api.example.test"], "looks like a URL"),
        (["--resolver", "dns.example.test"], "--resolver"),
        (["--name", "Bad_Name"], "--name"),
        (["--pod-selector", "app"], "--pod-selector"),
        (["--cilium-version", "latest"], "--cilium-version"),
        (["--config", str(clean_env / "missing.toml")], "does not exist"),
    ]:
        code, out, err = run_export(["--format", "cilium", *argv], capsys)
        assert code == 2 and message in err and out == "", (argv, err)


def test_config_file_and_output_file(clean_env, capsys):
    (clean_env / "sockguard.toml").write_text('allow = ["198.51.100.0/24:443"]\ndeny = ["198.51.100.7"]\n')
    target = clean_env / "out" / "sg.json"
    target.parent.mkdir()
    code, out, err = run_export(
        ["--format", "aws-sg", "-o", str(target), "--allow", "203.0.113.5", "--dns-server", "192.0.2.53"], capsys
    )
    assert code == 0 and out == "", err
    perms = json.loads(target.read_text())
    assert sg_allows(perms, "198.51.100.8", 443) and not sg_allows(perms, "198.51.100.7", 443)
    assert sg_allows(perms, "203.0.113.5", 22) and sg_allows(perms, "192.0.2.53", 53)
    assert not sg_allows(perms, "198.51.100.8", 80)
    assert [p.name for p in target.parent.iterdir()] == ["sg.json"]  # no temporary file left behind


def test_wired_into_the_sockguard_command(clean_env, capsys):
    code = cli.main(
        ["export", "--format", "json", "--no-resolve", "--allow", "10.0.0.0/8", "--allow", "api.example.test"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert [r["rule"] for r in data["allow"]] == ["10.0.0.0/8", "api.example.test"]
    assert data["allow"][0]["cidr"] == "10.0.0.0/8" and data["allow"][1]["host"] == "api.example.test"
