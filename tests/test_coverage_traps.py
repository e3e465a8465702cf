"""Coverage matrix, the known traps (docs/coverage.md): resolvers that bypass Python's socket module.

* gevent: ``patch_all()`` swaps ``socket.socket``/``getaddrinfo`` after the guard wrapped them, and its ares
  resolver sends queries from C. Run in guarded children (monkey-patching must not touch pytest).
* aiohttp picks ``AsyncResolver`` (c-ares via aiodns) whenever aiodns is installed; aiodns/pycares used
  directly, with the system's or a custom nameserver.
* dnspython used directly: question names and nameservers.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

import sockguard
from tests import netlab as lab_module
from tests.coverage_support import (
    ALLOW,
    ALLOWED_NAME,
    ALLOWED_V4,
    BLOCKED_NAME,
    BLOCKED_V4,
    CHILD_PRELUDE,
    POLICY,
    SCENARIOS,
    Scene,
    assert_wraps_block,
    guarded_env,
    run_child,
    run_stepped_child,
    scene_fixture,  # noqa: F401  (the `scene` fixture)
)

# -- gevent (monkey-patched, in a guarded child) ----------------------------------------------------

GEVENT_CHILD = """
import os
from gevent import monkey
monkey.patch_all()
import gevent, socket, urllib.request, requests
if os.environ.get("INSTALL_AFTER") == "1":  # no sitecustomize: the guard comes after gevent
    import sockguard
    sockguard.install(allow=os.environ["ALLOW"].split(","), allow_loopback=False, from_environment=False)
HOSTS = {"allowed": "api.allowed.test", "blocked-name": "blocked.test", "blocked-raw-ip": "203.0.113.10"}
URLS = {**{k: f"http://{v}/" for k, v in HOSTS.items()}, "redirect-to-blocked": "http://redirect.allowed.test/"}

def connect(host):
    sock = socket.socket()
    sock.settimeout(3)
    try:
        sock.connect((host, 80))
    finally:
        sock.close()

def sendto(host):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"x", (host, 5353))

for scenario in URLS:
    url = URLS[scenario]
    if scenario in HOSTS:
        host = HOSTS[scenario]
        cell(f"socket.create_connection/{scenario}", lambda: socket.create_connection((host, 80), timeout=3).close())
        cell(f"socket.connect/{scenario}", lambda: connect(host))
        cell(f"udp.sendto/{scenario}", lambda: sendto(host))
    cell(f"urllib.request/{scenario}", lambda: urllib.request.build_opener().open(url, timeout=3).read())
    cell(f"requests/{scenario}", lambda: requests.get(url, timeout=3).text)
    step(scenario)
RESULTS["resolver"] = type(gevent.get_hub().resolver).__module__
RESULTS["socket class"] = socket.socket.__module__
print(json.dumps(RESULTS))
"""
GEVENT_VARIANTS = {
    # guard active from start-up (sitecustomize), gevent patches afterwards: the trap as reported
    "thread-resolver": {"GEVENT_RESOLVER": "thread"},
    "ares-resolver": {"GEVENT_RESOLVER": "ares"},
    # guard installed through the API after patch_all()
    "ares-install-after": {"GEVENT_RESOLVER": "ares", "INSTALL_AFTER": "1"},
}
GEVENT_CLIENTS = {
    "socket.create_connection": ("EgressBlocked", "LookupBlocked"),  # LookupBlocked: a blocked name
    "socket.connect": ("EgressBlocked", "LookupBlocked"),
    "udp.sendto": ("EgressBlocked", "LookupBlocked"),
    "urllib.request": ("URLError",),
    "requests": ("ConnectionError",),
}
_gevent_runs: dict[str, dict[str, Any]] = {}


def _gevent_run(scene: Scene, variant: str) -> dict[str, Any]:
    """One child per variant runs every cell, pausing after each scenario while the far side is read; the
    counts are kept per scenario (the difference to the previous one)."""
    if variant not in _gevent_runs:
        extra = dict(GEVENT_VARIANTS[variant])
        env = guarded_env(**extra, ALLOW=",".join(ALLOW))
        if extra.get("INSTALL_AFTER"):
            env.pop("PYTHONPATH")
            env["SOCKGUARD_MODE"] = "off"

        def snapshot() -> dict[str, int]:
            blocked = scene.blocked_side()
            return {
                "allowed": scene.allowed.accepted + scene.allowed_v6.accepted,
                "allowed udp": scene.allowed_udp.datagrams,
                "redirect": scene.redirect.accepted,
                **{f"blocked {kind}": count for kind, count in blocked.items()},
            }

        results, steps = run_stepped_child(CHILD_PRELUDE + GEVENT_CHILD, env, snapshot)
        previous: dict[str, int] = {}
        for scenario, counts in steps.items():
            results[f"far side/{scenario}"] = {k: v - previous.get(k, 0) for k, v in counts.items()}
            previous = counts
        _gevent_runs[variant] = results
    return _gevent_runs[variant]


GEVENT_CELLS = [
    (variant, client, scenario)
    for variant in GEVENT_VARIANTS
    for client in GEVENT_CLIENTS
    for scenario in SCENARIOS
    if scenario != "redirect-to-blocked" or client in ("urllib.request", "requests")
]


@pytest.mark.parametrize(("variant", "client", "scenario"), GEVENT_CELLS)
def test_gevent_matrix(scene: Scene, variant: str, client: str, scenario: str) -> None:
    pytest.importorskip("gevent")
    run = _gevent_run(scene, variant)
    assert run["socket class"].startswith("gevent")  # patch_all really replaced socket.socket
    assert run["resolver"] == f"gevent.resolver.{GEVENT_VARIANTS[variant]['GEVENT_RESOLVER']}"
    cell = run[f"{client}/{scenario}"]
    far = run[f"far side/{scenario}"]  # what arrived during this scenario (all its clients)
    if scenario == "allowed":
        assert cell["ok"], cell
        assert (far["allowed"], far["allowed udp"]) == (4, 1)  # 4 TCP clients, one datagram
        return
    assert not cell["ok"] and cell["blocked"], cell
    assert cell["error"][0] in GEVENT_CLIENTS[client]
    assert (far["blocked tcp"], far["blocked udp"], far["blocked dns"]) == (0, 0, 0)
    if scenario == "redirect-to-blocked":
        assert far["redirect"] == 2


def test_gevent_ares_custom_nameserver_is_a_destination(scene: Scene) -> None:
    """GEVENTARES_SERVERS points c-ares at a nameserver no rule covers: refused before c-ares sends."""
    pytest.importorskip("gevent")
    code = CHILD_PRELUDE + (
        "from gevent import monkey\nmonkey.patch_all()\nimport socket\n"
        f"cell('lookup', lambda: socket.getaddrinfo({ALLOWED_NAME!r}, 80))\nprint(json.dumps(RESULTS))\n"
    )
    env = guarded_env(GEVENT_RESOLVER="ares", GEVENTARES_SERVERS=lab_module.BLACKHOLE_DNS)
    cell = run_child(code, env)["lookup"]
    assert not cell["ok"] and cell["blocked"] and cell["error"][0] in ("EgressBlocked", "LookupBlocked"), cell
    assert f"{lab_module.BLACKHOLE_DNS}:53" in cell["message"]
    assert scene.lab.dns.blackhole_queries() == 0 and scene.lab.dns.queries() == 0


# -- aiohttp / aiodns / pycares: c-ares sends from C ----------------------------------------------------


def test_aiohttp_drops_an_internal_answer_of_an_allowed_name(scene: Scene) -> None:
    """DNS rebinding through c-ares: the allowed name answers an internal address; the answer is refused
    before aiohttp connects (AsyncResolver's answers are checked like socket.getaddrinfo's)."""
    aiohttp = pytest.importorskip("aiohttp")
    internal = scene.lab.tcp(lab_module.INTERNAL_V4[0], 80, http=True, body="internal")
    scene.lab.dns.set(ALLOWED_NAME, A=[lab_module.INTERNAL_V4[0]])

    async def main() -> None:
        async with aiohttp.ClientSession() as session, session.get(f"http://{ALLOWED_NAME}/") as response:
            await response.read()

    with sockguard.guarded(**POLICY), pytest.raises(aiohttp.ClientError) as info:
        asyncio.run(main())
    blocked = assert_wraps_block(info.value, aiohttp.ClientConnectorError)
    assert (blocked.reason, blocked.address) == ("internal-address", lab_module.INTERNAL_V4[0])
    assert internal.accepted == 0


def _aiodns_call(call: str, name: str, nameservers: list[str] | None = None) -> Any:
    aiodns = pytest.importorskip("aiodns")

    async def main() -> Any:
        resolver = aiodns.DNSResolver(nameservers=nameservers, timeout=1, tries=1)
        try:
            if call == "query_dns":
                return await resolver.query_dns(name, "A")
            return await resolver.getaddrinfo(name, family=socket.AF_INET)
        finally:
            await resolver.close()

    return asyncio.run(main())


@pytest.mark.parametrize("call", ["query_dns", "getaddrinfo"])
def test_aiodns_direct_blocked_name_never_leaves(scene: Scene, call: str) -> None:
    with sockguard.guarded(**POLICY):
        assert _aiodns_call(call, ALLOWED_NAME)  # the system nameserver, an allowed name: works
        with pytest.raises(sockguard.EgressBlocked) as info:
            _aiodns_call(call, BLOCKED_NAME)
    assert info.value.reason == "not-allowed"
    assert scene.lab.dns.queries(ALLOWED_NAME) >= 1
    scene.assert_blocked_side_untouched()


def test_aiodns_custom_nameserver_is_a_destination(scene: Scene) -> None:
    """c-ares queries a nameserver the app chose, not the system's: decided like any destination."""
    with sockguard.guarded(**POLICY), pytest.raises(sockguard.EgressBlocked) as info:
        _aiodns_call("query_dns", ALLOWED_NAME, [lab_module.BLACKHOLE_DNS])
    assert (info.value.address, info.value.port, info.value.reason) == (lab_module.BLACKHOLE_DNS, 53, "raw-ip")
    assert scene.lab.dns.blackhole_queries() == 0
    allow = [*ALLOW, f"{lab_module.DNS_SERVER}:53"]
    with sockguard.guarded(allow=allow, allow_loopback=False):  # an IP rule for it: allowed
        assert _aiodns_call("query_dns", ALLOWED_NAME, [lab_module.DNS_SERVER]).answer


# -- dnspython used directly --------------------------------------------------------------------------

NAMESERVER_RULE = f"{lab_module.DNS_SERVER}:53"  # the lab resolver is loopback, which the policy does not allow
DNS_POLICY: dict[str, Any] = {"allow": [*ALLOW, NAMESERVER_RULE], "allow_loopback": False}


def _dns_cells() -> dict[str, Any]:
    import dns.asyncresolver
    import dns.message
    import dns.query
    import dns.resolver

    def resolver(nameserver: str = lab_module.DNS_SERVER) -> Any:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [nameserver]
        r.lifetime = 2
        return r

    def asyncresolve(name: str) -> Any:
        async def main() -> Any:
            r = dns.asyncresolver.Resolver(configure=False)
            r.nameservers = [lab_module.DNS_SERVER]
            return await r.resolve(name, "A")

        return asyncio.run(main())

    def send_wire(name: str) -> Any:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            wire = dns.message.make_query(name, "A").to_wire()
            dns.query.send_udp(sock, wire, (lab_module.DNS_SERVER, 53))

    return {
        "Resolver.resolve": lambda name: resolver().resolve(name, "A"),
        "asyncresolver.resolve": asyncresolve,
        "query.udp": lambda name: dns.query.udp(dns.message.make_query(name, "A"), lab_module.DNS_SERVER, timeout=2),
        "query.tcp": lambda name: dns.query.tcp(dns.message.make_query(name, "TXT"), lab_module.DNS_SERVER, timeout=2),
        "query.send_udp(wire)": send_wire,
    }


DNS_CLIENTS = ("Resolver.resolve", "asyncresolver.resolve", "query.udp", "query.tcp", "query.send_udp(wire)")


@pytest.mark.parametrize("scenario", ["allowed", "blocked-name"])
@pytest.mark.parametrize("client", DNS_CLIENTS)
def test_dnspython_question_names_are_checked(scene: Scene, client: str, scenario: str) -> None:
    dns_resolver = pytest.importorskip("dns.resolver")
    call = _dns_cells()[client]
    name = ALLOWED_NAME if scenario == "allowed" else BLOCKED_NAME
    with sockguard.guarded(**DNS_POLICY):
        if scenario == "allowed":
            call(name)
        else:
            with pytest.raises(Exception) as info:
                call(name)
    if scenario == "allowed":
        assert scene.lab.dns.queries(ALLOWED_NAME) == 1
        return
    expected = dns_resolver.NoNameservers if "resolve" in client else sockguard.EgressBlocked
    blocked = assert_wraps_block(info.value, expected)
    assert (blocked.host, blocked.reason) == (BLOCKED_NAME, "not-allowed")
    scene.assert_blocked_side_untouched()


def test_dnspython_answers_are_admitted_for_connects(scene: Scene) -> None:
    """An address dnspython resolved for an allowed name may be connected to, as after socket.getaddrinfo."""
    pytest.importorskip("dns.resolver")
    with sockguard.guarded(**DNS_POLICY):
        answer = _dns_cells()["Resolver.resolve"](ALLOWED_NAME)
        assert [rdata.address for rdata in answer] == [ALLOWED_V4]
        socket.create_connection((ALLOWED_V4, 80), timeout=3).close()
    assert scene.allowed.accepted == 1


@pytest.mark.parametrize("nameserver", [lab_module.BLACKHOLE_DNS, lab_module.DNS_SERVER])
def test_dnspython_unlisted_nameserver_is_blocked(scene: Scene, nameserver: str) -> None:
    """A nameserver is a destination like any other: without an IP rule (and no pinned resolver), a query
    to it does not leave, even for an allowed name."""
    import dns.message
    import dns.query

    query = dns.message.make_query(ALLOWED_NAME, "A")
    with sockguard.guarded(**POLICY), pytest.raises(sockguard.EgressBlocked) as info:
        dns.query.udp(query, nameserver, timeout=2)
    assert (info.value.address, info.value.port) == (nameserver, 53)
    assert scene.lab.dns.blackhole_queries() == 0
    assert scene.lab.dns.queries() == 0


def test_dnspython_reverse_lookup_of_an_address_passes(scene: Scene) -> None:
    """A PTR question for an address is a reverse lookup, allowed as gethostbyaddr(address) is."""
    import dns.message
    import dns.query
    import dns.reversename

    query = dns.message.make_query(dns.reversename.from_address(BLOCKED_V4), "PTR")
    with sockguard.guarded(**DNS_POLICY):
        dns.query.udp(query, lab_module.DNS_SERVER, timeout=2)
    assert scene.lab.dns.queries("10.113.0.203.in-addr.arpa") == 1
    assert scene.blocked.accepted == 0 and scene.blocked_udp.datagrams == 0


# -- the patches themselves -------------------------------------------------------------------------


def test_every_integration_has_a_post_import_hook() -> None:
    from sockguard import _hook, integrations
    from sockguard.http import hooks

    assert tuple(hooks.PATCHES) == _hook.HTTP_INTEGRATIONS  # request events and checks (sockguard/http/)
    assert tuple(integrations.PATCHES) + _hook.HTTP_INTEGRATIONS == _hook.INTEGRATIONS


def test_a_patch_that_does_not_fit_warns_and_never_breaks_the_import(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown version of a library (here a gevent._socket3 whose socket class lacks connect) is reported
    on stderr; the application's import goes on."""
    import types

    from sockguard import integrations

    module = types.ModuleType("gevent._socket3")
    module.socket = type("socket", (), {})  # type: ignore[attr-defined]
    integrations.patch(module)
    err = capsys.readouterr().err
    assert "could not guard gevent._socket3" in err and "NOT checked" in err


def test_aiodns_in_pinned_mode_may_not_use_the_system_nameserver(scene: Scene) -> None:
    """Pinned mode promises that only the pinned servers hear the app's lookups (docs/resolver.md); c-ares
    reads resolv.conf itself, so its query to the system nameserver is refused before it is sent."""
    from sockguard import guard
    from sockguard.config import Settings

    settings = Settings(allow=list(ALLOW), allow_loopback=False, resolver=[f"{lab_module.BLACKHOLE_DNS}:53"])
    with guard.applied(guard.state_from_settings(settings)), pytest.raises(sockguard.EgressBlocked) as info:
        _aiodns_call("query_dns", ALLOWED_NAME)  # the system nameserver (127.0.0.53) is not the pinned one
    assert (info.value.address, info.value.port) == (lab_module.DNS_SERVER, 53)
    assert scene.lab.dns.queries() == 0 and scene.lab.dns.blackhole_queries() == 0
