"""``sockguard export`` under hostile input (issue 17, items 1-4).

* Every free-text position (the configuration path, the resolver's name, a DNS error message, Kubernetes
  names and selectors) is filled with hostile strings, and each output is parsed back by the target's own
  tool (``nft``, ``iptables-restore``/``-save``, ``json``, PyYAML, the schemas): it must be exactly the
  rules a harmless string gives, and nothing else.
* Never wider, proven: for random policies (names, wildcards, CIDRs, ports, denies) every format's allowed
  (address, protocol, port) set on a sampled grid is a subset of what the runtime policy allows. nftables
  and iptables are judged from what the kernel loaded (``nft -j list ruleset``, ``iptables-save``).

Firewall tools run only inside network namespaces the tests create (``unshare --net``).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockguard.addresses import parse_address
from sockguard.export import cli as export_cli
from sockguard.export.model import merge_entries, same_net_merged, subtract
from sockguard.export.plan import K8sOptions, Resolution, build_plan
from sockguard.export.targets import render
from sockguard.policy import Policy
from tests.test_export import CILIUM_SCHEMA, K8S_SCHEMA, _require, cilium_regex, k8s_checker, parser, sg_checker

# --- the tools, in a namespace of their own --------------------------------------------------------------------


def _netns_ok() -> bool:
    if os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


NETNS = _netns_ok()
needs_netns = pytest.mark.skipif(not NETNS, reason="needs root and unshare --net for a private network namespace")


def load_and_list(tmp: Path, files: dict[str, str]) -> dict[str, str]:
    """Load each file with its tool in one fresh network namespace and return what the kernel holds:
    ``nft -j list ruleset`` for nftables, ``iptables-save`` / ``ip6tables-save`` for the others."""
    script = ["set -e"]
    out: dict[str, str] = {}
    for fmt, text in files.items():
        path = tmp / f"rules.{fmt}"
        path.write_text(text)
        mark = f"=== {fmt}"
        if fmt == "nftables":
            script += [f"nft -f {shlex.quote(str(path))}", f"echo '{mark}'", "nft -j list ruleset"]
        else:
            tool = "iptables" if fmt == "iptables" else "ip6tables"
            script += [f"{tool}-restore --noflush {shlex.quote(str(path))}", f"echo '{mark}'", f"{tool}-save -t filter"]
        out[fmt] = ""
    done = subprocess.run(["unshare", "--net", "sh", "-c", "\n".join(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + "\n" + "\n".join(files.values())
    current = None
    for line in done.stdout.splitlines():
        if line.startswith("=== "):
            current = line[4:]
            continue
        if current is not None:
            out[current] += line + "\n"
    return out


def _saved_rules(saved: str) -> list[str]:
    """iptables-save output without its date comments and counters: the rules as the kernel holds them."""
    return [ln for ln in saved.splitlines() if ln and not ln.startswith("#") and not ln.startswith(":")]


def _nft_ruleset(listing: str) -> list[dict[str, Any]]:
    """``nft -j list ruleset`` without handles and metainfo (those differ from load to load)."""
    items = json.loads(listing)["nftables"]

    def strip(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k != "handle"}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    return [strip(item) for item in items if "metainfo" not in item]


# --- hostile strings -------------------------------------------------------------------------------------------

HOSTILE_PIECES = [
    "\n",
    "\r",
    "\r\n",
    "\x1b[2J",
    "\x00",
    "\u2028",
    "\u202e",
    "\x85",
    '"',
    "'",
    "\\",
    "#",
    ";",
    "{",
    "}",
    "%",
    "$(reboot)",
    "`id`",
    "\nflush ruleset\n",
    "\n-A OUTPUT -j ACCEPT\n",
    "\nCOMMIT\n*filter\n",
    "\ndelete table inet filter\n",
    '"}]}',
    "\ud800",
    "é",
    "☃",
    "\U0001f600",
    " ",
    "a",
]
HOSTILE = st.lists(st.sampled_from(HOSTILE_PIECES), min_size=1, max_size=8).map("".join)

ALLOW_POOL = [
    "api.example.test:443",
    "*.w.example.test",
    "203.0.113.0/25:8000-8100",
    "198.51.100.0/24",
    "[2001:db8::/32]:443",
    "10.0.0.5:5432",
    "[::ffff:203.0.113.128/121]",
]
DENY_POOL = ["198.51.100.9", "198.51.100.0/25:22", "api.example.test:22", "10.0.0.0/8:5432"]
FORMATS = ("nftables", "iptables", "ip6tables", "aws-sg", "k8s", "cilium", "json")


def _plan_and_render(fmt: str, allow, deny, *, source: str, resolver: str, error: str, k8s: K8sOptions | None = None):
    def resolve(host: str) -> Resolution:
        if host == "api.example.test":
            return Resolution(((parse_address("203.0.113.7"), 300), (parse_address("2001:db8::7"), 300)))
        return Resolution((), error)

    plan = build_plan(
        allow,
        deny,
        fmt=fmt,
        source=source,
        resolve=resolve,
        resolver_name=resolver,
        dns_servers=[(parse_address("192.0.2.53"), 53)],
        allow_loopback=False,
        k8s=k8s,
    )
    return render(fmt, plan), plan.messages


def _json_without_free_text(doc: Any) -> Any:
    """A JSON export with its free-text fields (source, description, warnings, notes, errors) blanked."""
    if isinstance(doc, dict):
        blank = {"sockguard/source", "sockguard/warnings", "description", "source", "warnings", "notes", "error"}
        blank.add("resolved_at")  # a time stamp
        return {k: ("..." if k in blank else _json_without_free_text(v)) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_json_without_free_text(v) for v in doc]
    return doc


@needs_netns
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    allow=st.lists(st.sampled_from(ALLOW_POOL), min_size=1, max_size=5, unique=True),
    deny=st.lists(st.sampled_from(DENY_POOL), max_size=3, unique=True),
    source=HOSTILE,
    resolver=HOSTILE,
    error=HOSTILE,
    unresolved=st.sampled_from(["gone.example.test", "*.gone.example.test"]),
)
def test_hostile_text_never_changes_the_rules_a_tool_reads(tmp_path, allow, deny, source, resolver, error, unresolved):
    """Hostile text in the configuration path, the resolver name and a DNS error message reaches comments,
    annotations and descriptions only, escaped: each tool parses the file into exactly the rules that a
    harmless text gives."""
    allow = [*allow, unresolved]  # a name that fails to resolve carries `error` into a warning
    hostile, benign = {}, {}
    for fmt in FORMATS:
        hostile[fmt], _ = _plan_and_render(fmt, allow, deny, source=source, resolver=resolver, error=error)
        benign[fmt], _ = _plan_and_render(fmt, allow, deny, source="plain.toml", resolver="ns", error="NXDOMAIN")
        for line in hostile[fmt].splitlines():
            assert line.isprintable() or line.replace("\t", "").isprintable(), line  # no control character at all
    # The firewall files: every line that is not a comment is the same; the kernel holds the same rules.
    for fmt in ("nftables", "iptables", "ip6tables"):
        rules_h = [ln for ln in hostile[fmt].splitlines() if not ln.lstrip().startswith("#")]
        rules_b = [ln for ln in benign[fmt].splitlines() if not ln.lstrip().startswith("#")]
        strip = [ln.split("  # ")[0] for ln in rules_h], [ln.split("  # ")[0] for ln in rules_b]
        assert strip[0] == strip[1]
        assert all(ln.isascii() for ln in hostile[fmt].splitlines())
    loaded_h = load_and_list(tmp_path, {f: hostile[f] for f in ("nftables", "iptables", "ip6tables")})
    loaded_b = load_and_list(tmp_path, {f: benign[f] for f in ("nftables", "iptables", "ip6tables")})
    assert _nft_ruleset(loaded_h["nftables"]) == _nft_ruleset(loaded_b["nftables"])
    assert [t["table"]["name"] for t in _nft_ruleset(loaded_h["nftables"]) if "table" in t] == ["sockguard"]
    for fmt in ("iptables", "ip6tables"):
        assert _saved_rules(loaded_h[fmt]) == _saved_rules(loaded_b[fmt])
        jumps = [ln for ln in _saved_rules(loaded_h[fmt]) if ln.startswith("-A OUTPUT")]
        assert jumps == ["-A OUTPUT -j SOCKGUARD-EGRESS"]
    # The JSON formats: parsed by json and by a YAML parser alike, schema-valid, same apart from free text.
    yaml = pytest.importorskip("yaml")
    jsonschema = pytest.importorskip("jsonschema")
    for fmt in ("aws-sg", "k8s", "cilium", "json"):
        doc = json.loads(hostile[fmt])
        assert yaml.safe_load(hostile[fmt]) == doc
        assert _json_without_free_text(doc) == _json_without_free_text(json.loads(benign[fmt]))
        assert hostile[fmt].isascii()
    jsonschema.Draft202012Validator(K8S_SCHEMA).validate(json.loads(hostile["k8s"]))
    jsonschema.Draft202012Validator(CILIUM_SCHEMA).validate(json.loads(hostile["cilium"]))


def test_a_configuration_path_with_newlines_injects_nothing(unconfigured, capsys):
    """Issue 17, item 1: a directory name with a newline and a firewall command in it."""
    evil = unconfigured / "x\nflush ruleset\n-A OUTPUT -j ACCEPT\n#"
    evil.mkdir()
    (evil / "sockguard.toml").write_text('allow = ["203.0.113.0/24:443"]\n')
    outputs = {}
    for fmt in ("nftables", "iptables"):
        code = export_cli.main(parser().parse_args(["--format", fmt, "--config", str(evil / "sockguard.toml")]))
        out, err = capsys.readouterr()
        assert code == 0, err
        outputs[fmt] = out
        assert "\nflush ruleset" not in out and "\n-A OUTPUT -j ACCEPT" not in out
        assert "x\\x0aflush ruleset\\x0a-A OUTPUT -j ACCEPT\\x0a#" in out  # shown, escaped, in the header comment
    if not NETNS:
        pytest.skip("needs root and unshare --net to load the files")
    _require("nft")
    _require("iptables-restore")
    loaded = load_and_list(unconfigured, outputs)
    assert [ln for ln in _saved_rules(loaded["iptables"]) if ln.startswith("-A OUTPUT")] == [
        "-A OUTPUT -j SOCKGUARD-EGRESS"
    ]
    assert "flush" not in loaded["nftables"]


@settings(max_examples=200, deadline=None)
@given(
    name=st.one_of(HOSTILE, st.sampled_from(["egress", "sockguard-egress", "a.b"])),
    namespace=st.one_of(HOSTILE, st.sampled_from(["payments", "kube-system"])),
    selector=st.one_of(
        HOSTILE.map(lambda t: f"app={t}"), HOSTILE.map(lambda t: f"{t}=api"), st.sampled_from(["app=api", "x/y=z"])
    ),
    fmt=st.sampled_from(["k8s", "cilium"]),
)
def test_hostile_kubernetes_names_and_selectors_are_refused_or_kept_intact(name, namespace, selector, fmt):
    """Names and selectors either fail with exit 2 and a message naming the option, or are written exactly
    as given into a document that parses and validates."""
    argv = ["--format", fmt, "--no-resolve", "--allow", "203.0.113.0/24", "--name", name, "--namespace", namespace]
    argv += ["--pod-selector", selector]
    args = parser().parse_args(argv)
    try:
        options = export_cli.k8s_options(args)
    except export_cli.UsageError as exc:
        assert any(opt in str(exc) for opt in ("--name", "--namespace", "--pod-selector"))
        return
    assert "\n" not in name + namespace + selector
    text, _ = _plan_and_render(fmt, ["203.0.113.0/24"], [], source="s", resolver="r", error="e", k8s=options)
    doc = json.loads(text)
    assert doc["metadata"]["name"] == name and doc["metadata"]["namespace"] == namespace
    key, _, value = selector.partition("=")
    selected = doc["spec"]["podSelector" if fmt == "k8s" else "endpointSelector"]["matchLabels"]
    assert selected == {key: value}
    import jsonschema

    jsonschema.Draft202012Validator(K8S_SCHEMA if fmt == "k8s" else CILIUM_SCHEMA).validate(doc)


def test_option_values_with_a_trailing_newline_are_refused():
    """``$`` in a regular expression also matches before a final newline: every check is a full match."""
    for argv in (["--name", "egress\n"], ["--namespace", "payments\n"], ["--pod-selector", "app=api\n"]):
        with pytest.raises(export_cli.UsageError):
            export_cli.k8s_options(parser().parse_args(["--format", "k8s", *argv]))
    with pytest.raises(export_cli.UsageError):
        export_cli.parse_server("192.0.2.53:\uff15\uff13", "--dns-server")  # fullwidth digits are not a port


# --- never wider, proven on a grid -----------------------------------------------------------------------------

#: The world the grid lives in: what each name resolves to (at export time and at run time alike).
WORLD: dict[str, list[str]] = {
    "api.example.test": ["203.0.113.7", "2001:db8::7"],
    "a.w.example.test": ["203.0.113.8", "10.0.0.8"],
    "b.c.w.example.test": ["198.51.100.9"],
    "evil.test": ["203.0.113.7"],
    "internal.example.test": ["10.1.2.3", "169.254.169.254"],
    "nat64.example.test": ["64:ff9b::a01:203", "64:ff9b::cb00:7107"],
    "sixtofour.example.test": ["2002:a01:203::1"],
    "compat.example.test": ["::a01:203"],
    "teredo.example.test": ["2001:0:4136:e378:8000:63bf:f5fe:fdfc"],  # carries 10.1.2.3
    "ula.example.test": ["fd00::5"],
}
GRID_ADDRESSES = sorted(
    {a for addrs in WORLD.values() for a in addrs}
    | {"203.0.113.1", "203.0.113.200", "198.51.100.1", "198.51.100.200", "10.0.0.1", "10.0.0.5", "192.168.1.1"}
    | {"2001:db8::1", "2001:db8:1::1", "192.0.2.53"}
)
GRID_SERVICES = [("icmp", 0), ("tcp", 22), ("udp", 22), ("tcp", 53), ("tcp", 443), ("udp", 443), ("tcp", 5432)]
GRID_SERVICES += [("tcp", 8080), ("tcp", 65535), ("udp", 1024)]

NAME_RULES = ["api.example.test", "api.example.test:443", "*.w.example.test", "*.example.test:1-1024", "evil.test"]
NAME_RULES += ["internal.example.test", "nat64.example.test", "sixtofour.example.test", "compat.example.test"]
NAME_RULES += ["teredo.example.test", "ula.example.test:443"]
CIDR_RULES = ["203.0.113.0/24", "203.0.113.0/25:443", "10.0.0.0/8:22", "10.1.2.3", "198.51.100.0/24:1-65535"]
CIDR_RULES += ["[2001:db8::/32]:443", "[::ffff:203.0.113.0/120]", "10.0.0.0/8", "[64:ff9b::/96]:443", "[::/0]:443"]
DENY_RULES = ["203.0.113.7:22", "10.0.0.0/8", "api.example.test:1-65535", "*.w.example.test", "198.51.100.0/25"]
DENY_RULES += ["203.0.113.0/24:1-65535", "10.0.0.0/8:5432", "evil.test", "b.c.w.example.test:22"]


def _world_resolver(host: str) -> Resolution:
    if host not in WORLD:
        return Resolution((), "no such name (NXDOMAIN)")
    return Resolution(tuple((parse_address(a), 60) for a in WORLD[host]))


def _names_for(address: str) -> list[str | None]:
    return [None, *(name for name, addrs in WORLD.items() if address in addrs)]


def policy_allows(policy: Policy, address: str, port: int) -> bool:
    """What the runtime lets through to (address, port): directly, or through any name that resolves there."""
    return any(policy.check_address(address, port, name).allowed for name in _names_for(address))


def _ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def _version(text: str) -> int:
    return ipaddress.ip_address(text).version


def _in_elem(elem: Any, family: int, value: int) -> bool:
    if isinstance(elem, str):
        return _version(elem) == family and _ip(elem) == value
    if "prefix" in elem:
        net = ipaddress.ip_network(f"{elem['prefix']['addr']}/{elem['prefix']['len']}")
        return net.version == family and int(net.network_address) <= value <= int(net.broadcast_address)
    if "range" in elem:
        lo, hi = elem["range"]
        return _version(lo) == family and _ip(lo) <= value <= _ip(hi)
    raise AssertionError(f"unexpected set element {elem}")


def _port_in(right: Any, port: int) -> bool:
    if isinstance(right, int):
        return right == port
    if "range" in right:
        return right["range"][0] <= port <= right["range"][1]
    if "set" in right:
        return any(_port_in(item, port) for item in right["set"])
    raise AssertionError(f"unexpected port match {right}")


def nft_allows(listing: str, address: str, proto: str, port: int) -> bool:
    """The verdict the loaded nftables ruleset gives a new packet (as ``nft -j list ruleset`` shows it)."""
    items = json.loads(listing)["nftables"]
    sets = {item["set"]["name"]: item["set"].get("elem", []) for item in items if "set" in item}
    family, value = _version(address), _ip(address)
    for item in items:
        if "rule" not in item:
            continue
        matched, verdict = True, None
        for expr in item["rule"]["expr"]:
            if "match" in expr:
                left, right, op = expr["match"]["left"], expr["match"]["right"], expr["match"]["op"]
                if "ct" in left:
                    ok = False  # a new connection is not established/related
                elif "payload" in left and left["payload"]["field"] == "daddr":
                    want = 4 if left["payload"]["protocol"] == "ip" else 6
                    elems = sets[right[1:]] if isinstance(right, str) and right.startswith("@") else [right]
                    ok = family == want and any(_in_elem(e, family, value) for e in elems)
                elif "payload" in left and left["payload"]["protocol"] == "icmpv6":
                    ok = False  # the probes are not neighbour discovery
                elif "meta" in left and left["meta"]["key"] == "l4proto":
                    inside = proto in right["set"]
                    ok = inside if op == "==" else not inside
                elif "payload" in left and left["payload"]["field"] == "dport":
                    ok = proto in ("tcp", "udp") and _port_in(right, port)
                else:
                    raise AssertionError(f"unexpected match {expr}")
                if not ok:
                    matched = False
                    break
            elif "accept" in expr or "reject" in expr or "drop" in expr:
                verdict = "accept" if "accept" in expr else "refuse"
        if matched and verdict is not None:
            return verdict == "accept"
    return False  # policy drop


def ipt_allows(saved: str, address: str, proto: str, port: int) -> bool:
    """The verdict of the loaded SOCKGUARD-EGRESS chain (as iptables-save shows it) for a new packet."""
    family, value = _version(address), _ip(address)
    for line in _saved_rules(saved):
        words = shlex.split(line)
        if words[:2] != ["-A", "SOCKGUARD-EGRESS"]:
            continue
        ok, target, i = True, None, 2
        while i < len(words):
            word = words[i]
            if word == "-d":
                net = ipaddress.ip_network(words[i + 1])
                ok = ok and net.version == family and int(net.network_address) <= value <= int(net.broadcast_address)
                i += 2
            elif word == "-p":
                ok = ok and words[i + 1] == proto
                i += 2
            elif word == "--dport":
                lo, _, hi = words[i + 1].partition(":")
                ok = ok and int(lo) <= port <= int(hi or lo)
                i += 2
            elif word == "--dports":
                spans = [(int(a), int(b or a)) for a, _, b in (p.partition(":") for p in words[i + 1].split(","))]
                ok = ok and any(lo <= port <= hi for lo, hi in spans)
                i += 2
            elif word == "--ctstate" or word == "--icmpv6-type":
                ok = False
                i += 2
            elif word in ("-m", "--comment", "--reject-with"):
                i += 2
            elif word == "-j":
                target = words[i + 1]
                i += 2
            else:
                raise AssertionError(f"unexpected iptables word {word!r} in {line}")
        if ok and target is not None:
            return target == "ACCEPT"
    return False


def _cidr_hit(cidrs: list[dict], address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(c["cidr"]) for c in cidrs)


def _to_ports_hit(to_ports: list[dict] | None, proto: str, port: int) -> bool:
    if to_ports is None:
        return True
    assert to_ports, "an empty toPorts list"
    for entry in to_ports:
        assert entry["ports"], "an empty ports list"
        for item in entry["ports"]:
            lo = int(item["port"])
            hi = item.get("endPort", lo)
            if item["protocol"].lower() == proto and lo <= port <= hi:
                return True
    return False


def cilium_allows(doc: dict, name: str | None, address: str, proto: str, port: int) -> bool:
    spec = doc["spec"]
    for rule in spec.get("egressDeny", []):
        if _cidr_hit(rule["toCIDRSet"], address) and _to_ports_hit(rule.get("toPorts"), proto, port):
            return False
    for rule in spec["egress"]:
        if "toFQDNs" in rule:
            fqdn = f"{name}."
            hit = name is not None and any(
                ("matchName" in s and s["matchName"] + "." == fqdn)
                or ("matchPattern" in s and cilium_regex(s["matchPattern"]).match(fqdn))
                for s in rule["toFQDNs"]
            )
        elif "toCIDRSet" in rule:
            hit = _cidr_hit(rule["toCIDRSet"], address)
        else:
            continue  # the DNS rule to kube-dns pods
        if hit and _to_ports_hit(rule.get("toPorts"), proto, port):
            return True
    return False


@needs_netns
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(st.sampled_from(NAME_RULES), max_size=4, unique=True),
    cidrs=st.lists(st.sampled_from(CIDR_RULES), max_size=4, unique=True),
    deny=st.lists(st.sampled_from(DENY_RULES), max_size=3, unique=True),
)
def test_every_export_is_a_subset_of_the_policy(tmp_path, names, cidrs, deny):
    """For random policies, what each format lets through on a grid of addresses (public, internal, every
    IPv6 form of an internal IPv4 address) and services (icmp, tcp and udp ports) is allowed by the runtime
    policy too: directly, or through a name that resolves there. Never wider."""
    allow = names + cidrs
    policy = Policy(allow, deny, allow_loopback=False)
    out: dict[str, str] = {}
    for fmt in FORMATS:
        plan = build_plan(allow, deny, fmt=fmt, resolve=_world_resolver, allow_loopback=False, dns=False)
        out[fmt] = render(fmt, plan)
    loaded = load_and_list(tmp_path, {f: out[f] for f in ("nftables", "iptables", "ip6tables")})
    sg = sg_checker(json.loads(out["aws-sg"]))
    netpol = k8s_checker(json.loads(out["k8s"]))
    cilium = json.loads(out["cilium"])
    for address in GRID_ADDRESSES:
        for proto, port in GRID_SERVICES:
            allowed = policy_allows(policy, address, port)
            if allowed:
                continue
            where = f"{address} {proto}/{port} (policy: {allow} minus {deny})"
            assert not nft_allows(loaded["nftables"], address, proto, port), f"nftables wider at {where}"
            table = loaded["iptables" if _version(address) == 4 else "ip6tables"]
            assert not ipt_allows(table, address, proto, port), f"iptables wider at {where}"
            assert not sg(address, port), f"aws-sg wider at {where}"
            assert not netpol(address, port), f"k8s wider at {where}"
            for name in _names_for(address):
                assert not cilium_allows(cilium, name, address, proto, port), f"cilium wider at {where} via {name}"


def test_the_evaluators_see_what_is_allowed(tmp_path):
    """The grid checks can fail: a plain allow is seen as allowed by every evaluator."""
    if not NETNS:
        pytest.skip("needs root and unshare --net")
    allow = ["203.0.113.0/24:443", "api.example.test"]
    out = {f: render(f, build_plan(allow, [], fmt=f, resolve=_world_resolver, dns=False)) for f in FORMATS}
    loaded = load_and_list(tmp_path, {f: out[f] for f in ("nftables", "iptables", "ip6tables")})
    assert nft_allows(loaded["nftables"], "203.0.113.1", "tcp", 443)
    assert not nft_allows(loaded["nftables"], "203.0.113.1", "tcp", 444)
    assert ipt_allows(loaded["iptables"], "203.0.113.1", "udp", 443)
    assert ipt_allows(loaded["ip6tables"], "2001:db8::7", "icmp", 0)
    assert sg_checker(json.loads(out["aws-sg"]))("203.0.113.7", 0)
    assert k8s_checker(json.loads(out["k8s"]))("203.0.113.1", 443)
    doc = json.loads(out["cilium"])
    assert cilium_allows(doc, "api.example.test", "2001:db8::7", "icmp", 0)
    assert not cilium_allows(doc, "api.example.test", "10.0.0.8", "tcp", 443)  # internal answer: denied


# --- issue 17, item 2: never an empty port list -----------------------------------------------------------------


EVERY_PORT_DENIED = {
    "cidr": (["10.0.0.0/8"], ["10.0.0.0/8:1-65535"]),
    "cidr, in two denies": (["10.0.0.0/8"], ["10.0.0.0/8:1-1000", "10.0.0.0/8:1001-65535"]),
    "name": (["api.example.test"], ["api.example.test:1-65535"]),
}
#: Where only "other protocols" (icmp) are left and the target cannot say that: left out, with a warning.
#: (nftables says it exactly; iptables and Cilium keep the deny rules in front for CIDRs, which is exact too.)
LEFT_OUT = {("k8s", "cidr"), ("k8s", "cidr, in two denies"), ("aws-sg", "cidr"), ("aws-sg", "cidr, in two denies")}
LEFT_OUT |= {("iptables", "name"), ("aws-sg", "name"), ("cilium", "name"), ("k8s", "name")}


@pytest.mark.parametrize("case", sorted(EVERY_PORT_DENIED))
@pytest.mark.parametrize("fmt", ["k8s", "cilium", "iptables", "aws-sg", "nftables"])
def test_denies_that_take_every_port_leave_no_empty_port_list(fmt, case):
    """Issue 17, item 2: an empty port list means *all ports* to Kubernetes and Cilium, and iptables-restore
    refuses ``--dports`` without ports. Such a rule is left out with a warning (narrower), or said exactly."""
    allow, deny = EVERY_PORT_DENIED[case]
    text, msgs = _plan_and_render_simple(fmt, allow, deny, _world_resolver)
    assert '"ports": []' not in text and '"toPorts": []' not in text and '"to": []' not in text
    assert not any(line.rstrip().endswith(("--dports", "--dport")) for line in text.splitlines())
    assert "--dports -m" not in text and "--dport -m" not in text
    left_out = [w for w in msgs.warnings if "not exported" in w and "no names" not in w and "resolve" not in w]
    if (fmt, case) in LEFT_OUT and not (fmt == "k8s" and case == "name"):  # k8s has no names at all
        assert left_out, msgs.warnings
    elif (fmt, case) not in LEFT_OUT:
        assert not left_out, msgs.warnings


def _plan_and_render_simple(fmt, allow, deny, resolve):
    plan = build_plan(allow, deny, fmt=fmt, resolve=resolve, allow_loopback=False, dns=False)
    return render(fmt, plan), plan.messages


def test_strict_fails_where_a_deny_left_only_other_protocols(unconfigured, capsys):
    argv = ["--format", "k8s", "--allow", "10.0.0.0/8", "--deny", "10.0.0.0/8:1-65535", "--strict"]
    assert export_cli.main(parser().parse_args(argv)) == export_cli.EXIT_STRICT
    out, err = capsys.readouterr()
    assert '"ports": []' not in out and "not exported (narrower)" in err


# --- issue 17, item 3: every IPv6 form of the internal ranges ---------------------------------------------------

INTERNAL_FORMS = {
    "10.1.2.3": ["::ffff:10.1.2.3", "::10.1.2.3", "64:ff9b::10.1.2.3", "2002:a01:203::1"],
    "169.254.169.254": ["::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::5", "::a9fe:a9fe"],
    "192.168.7.7": ["64:ff9b::c0a8:707", "2002:c0a8:707:1::1"],
}


@pytest.mark.parametrize("internal", sorted(INTERNAL_FORMS))
def test_cilium_denies_every_form_of_an_internal_address_for_names(internal):
    """toFQDNs admits whatever a name resolves to; the runtime refuses a name that resolves to an internal
    address in any of its IPv6 spellings, so egressDeny must hold each of them (and all of Teredo)."""
    policy = Policy(["*.example.test"], allow_loopback=False)
    text, _ = _plan_and_render_simple("cilium", ["*.example.test"], [], None)
    doc = json.loads(text)
    for form in [internal, *INTERNAL_FORMS[internal], "2001:0:4136:e378:8000:63bf:f5fe:fdfc"]:
        assert not policy.check_address(form, 443, "x.example.test").allowed, form
        assert not cilium_allows(doc, "x.example.test", str(ipaddress.ip_address(form)), "tcp", 443), form
    assert cilium_allows(doc, "x.example.test", "203.0.113.7", "tcp", 443)
    assert cilium_allows(doc, "x.example.test", "64:ff9b::cb00:7107", "tcp", 443)  # NAT64 of a public address


def test_cilium_keeps_the_forms_a_cidr_allow_admits():
    """An IPv4 allow also admits its mapped and NAT64 forms (the runtime unwraps them): not denied."""
    allow = ["*.example.test", "10.1.2.0/24:5432"]
    policy = Policy(allow, allow_loopback=False)
    doc = json.loads(_plan_and_render_simple("cilium", allow, [], None)[0])
    for form in ("10.1.2.3", "64:ff9b::a01:203"):
        assert policy.check_address(form, 5432, "db.example.test").allowed
        assert cilium_allows(doc, "db.example.test", form, "tcp", 5432), form
        assert not cilium_allows(doc, "db.example.test", form, "tcp", 5433), form
        assert not cilium_allows(doc, "db.example.test", form, "icmp", 0), form  # names carry no icmp then


# --- issue 17, item 4: the model is O(n log n) and still exact --------------------------------------------------


def test_twenty_thousand_copies_merge_into_one_block():
    from sockguard.export.model import ALL, Entry, Net, Service

    big = Net(4, 0x0A000000, 8)
    entries = [Entry(big, ALL, "10.0.0.0/8")] * 20_000
    entries += [
        Entry(Net(4, 0x0A000000 | (i << 8) | 1, 32), Service(False, ((443, 443),)), f"h{i}") for i in range(20_000)
    ]
    merged = merge_entries(entries)
    assert merged == [Entry(big, ALL, "10.0.0.0/8")]
    assert len(same_net_merged(entries)) == 20_001
    plan = build_plan(["10.0.0.0/8"] * 20_000 + [f"10.{i >> 8 & 255}.{i & 255}.1:{1 + i % 999}" for i in range(20_000)],
                      ["10.9.0.0/16:22"], fmt="k8s", dns=False)  # fmt: skip
    doc = json.loads(render("k8s", plan))
    netpol = k8s_checker(doc)
    assert netpol("10.1.2.3", 80) and netpol("10.9.1.1", 80) and not netpol("10.9.1.1", 22)


@settings(max_examples=300, deadline=None)
@given(
    keep=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 20)), max_size=6),
    cut=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 20)), max_size=6),
)
def test_subtract_is_set_difference(keep, cut):
    keep_r = [(lo, lo + n) for lo, n in keep]
    cut_r = [(lo, lo + n) for lo, n in cut]
    got = subtract(keep_r, cut_r)
    want = {p for lo, hi in keep_r for p in range(lo, hi + 1)} - {p for lo, hi in cut_r for p in range(lo, hi + 1)}
    assert {p for lo, hi in got for p in range(lo, hi + 1)} == want
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(got))  # sorted, merged
