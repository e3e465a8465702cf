"""Self-tests for the test internet (tests/netlab.py): real clients against the lab, no sockguard involved."""

from __future__ import annotations

import errno
import http.client
import json
import os
import socket
import subprocess
import sys

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests import netlab as lab_module
from tests.netlab import Lab, NetlabError

pytestmark = pytest.mark.netlab


def ipv4(name: str) -> set[str]:
    return {str(info[4][0]) for info in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)}


def ipv6(name: str) -> set[str]:
    return {str(info[4][0]) for info in socket.getaddrinfo(name, 80, socket.AF_INET6, socket.SOCK_STREAM)}


def http_get(host: str, port: int, path: str = "/") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("GET", path, headers={"Host": "api.partner.test"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


# --- the namespace -------------------------------------------------------------------


def test_process_is_isolated() -> None:
    assert lab_module.only_loopback()
    assert os.environ[lab_module.ENV_FLAG] == "1"
    with open("/etc/resolv.conf") as f:
        assert f.read().splitlines()[0] == f"nameserver {lab_module.DNS_SERVER}"


@pytest.mark.parametrize("address", lab_module.LOCAL_ADDRESSES)
def test_lab_addresses_are_on_lo(address: str) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))


@pytest.mark.parametrize(
    ("family", "address"),
    [(socket.AF_INET, lab_module.UNROUTED_V4), (socket.AF_INET6, lab_module.UNROUTED_V6), (socket.AF_INET, "10.0.0.6")],
)
def test_no_route_out_of_the_namespace(family: int, address: str) -> None:
    # Only lo exists and it carries no route but its own addresses: the kernel refuses before sending anything.
    with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(OSError) as info:
        sock.connect((address, 80))
    assert info.value.errno == errno.ENETUNREACH
    with socket.socket(family, socket.SOCK_DGRAM) as sock, pytest.raises(OSError) as info:
        sock.sendto(b"x", (address, 53))
    assert info.value.errno == errno.ENETUNREACH


def test_child_processes_inherit_the_lab(netlab: Lab) -> None:
    netlab.dns.set("child.partner.test", A=["198.51.100.11"])
    code = "import os, socket; print(os.environ['SOCKGUARD_NETLAB'], socket.gethostbyname('child.partner.test'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "198.51.100.11"]
    assert netlab.dns.queries("child.partner.test", "A") == 1


def test_a_child_can_nest_its_own_lab() -> None:
    # What every xdist worker does: a second enter_isolated_namespace() inside the first.
    code = (
        "import json, os, socket\n"
        "from tests import netlab\n"
        "status = netlab.enter_isolated_namespace()\n"
        "address = socket.gethostbyname('static.netlab.test') if status.active else None\n"
        "print(json.dumps([status.mode, status.reason, os.readlink('/proc/self/ns/net'), address]))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    mode, reason, net, address = json.loads(result.stdout)
    assert (mode, reason, address) == ("nested", "", "198.51.100.30")
    assert net != os.readlink("/proc/self/ns/net")


# --- DNS ---------------------------------------------------------------------------------


def test_getaddrinfo_resolves_a_zone_name_and_counts_the_query(netlab: Lab) -> None:
    netlab.dns.set("api.partner.test", A=["198.51.100.10"], AAAA=["2001:db8::10"])
    assert netlab.dns.queries("api.partner.test") == 0
    assert ipv4("api.partner.test") == {"198.51.100.10"}
    assert netlab.dns.queries("api.partner.test", "A") == 1
    assert ipv6("API.Partner.test") == {"2001:db8::10"}
    assert netlab.dns.queries("api.partner.test", "AAAA") == 1
    assert netlab.dns.all_queries() == {"api.partner.test": 2}


def test_cname_chain_resolves(netlab: Lab) -> None:
    netlab.dns.cname("www.partner.test", "edge.cdn.test")
    netlab.dns.cname("edge.cdn.test", "pop1.cdn.test")
    netlab.dns.set("pop1.cdn.test", A=["203.0.113.10"])
    assert ipv4("www.partner.test") == {"203.0.113.10"}
    info = socket.getaddrinfo("www.partner.test", 80, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)
    assert info[0][3] == "pop1.cdn.test"
    assert netlab.dns.queries("www.partner.test") >= 1
    assert netlab.dns.queries("pop1.cdn.test") == 0  # the server follows the chain in one answer


def test_wildcard_names(netlab: Lab) -> None:
    netlab.dns.set("*.cdn.test", A=["203.0.113.11"])
    netlab.dns.set("special.cdn.test", A=["203.0.113.10"])
    assert ipv4("a.b.cdn.test") == {"203.0.113.11"}
    assert ipv4("special.cdn.test") == {"203.0.113.10"}
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("cdn.test", 80, socket.AF_INET)


def test_nxdomain_raises_gaierror(netlab: Lab) -> None:
    with pytest.raises(socket.gaierror) as info:
        socket.getaddrinfo("missing.partner.test", 80, socket.AF_INET)
    assert info.value.errno == socket.EAI_NONAME
    assert netlab.dns.log() == [("missing.partner.test", "A", "udp", "main")]  # once: no search-list retries
    netlab.dns.cname("dangling.partner.test", "missing.partner.test")
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("dangling.partner.test", 80, socket.AF_INET)


def test_remove_and_nodata(netlab: Lab) -> None:
    netlab.dns.set("v4only.partner.test", A=["198.51.100.12"])
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("v4only.partner.test", 80, socket.AF_INET6)
    assert netlab.dns.remove("v4only.partner.test") is True
    assert netlab.dns.remove("v4only.partner.test") is False
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("v4only.partner.test", 80, socket.AF_INET)


def test_tcp_transport_and_ttl(netlab: Lab) -> None:
    netlab.dns.set("ttl.partner.test", A=["198.51.100.10"], ttl=1234)
    response = dns.query.tcp(dns.message.make_query("ttl.partner.test", "A"), lab_module.DNS_SERVER, timeout=5)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer[0].ttl == 1234
    assert [str(rdata) for rdata in response.answer[0]] == ["198.51.100.10"]
    assert netlab.dns.log() == [("ttl.partner.test", "A", "tcp", "main")]


def test_hosts_file_names_resolve_without_dns(netlab: Lab) -> None:
    assert ipv4("static.netlab.test") == {"198.51.100.30"}
    assert ipv4("localhost") == {"127.0.0.1"}
    assert netlab.dns.all_queries() == {}


def test_blackhole_counts_and_never_answers(netlab: Lab) -> None:
    query = dns.message.make_query("slow.partner.test", "A")
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(query, lab_module.BLACKHOLE_DNS, timeout=0.3)
    assert netlab.dns.blackhole_queries("slow.partner.test") == 1
    assert netlab.dns.queries("slow.partner.test") == 0


def test_glibc_times_out_against_the_blackhole(netlab: Lab) -> None:
    netlab.dns.set("slow.partner.test", A=["198.51.100.10"])
    with netlab.nameservers(lab_module.BLACKHOLE_DNS), pytest.raises(socket.gaierror) as info:
        socket.getaddrinfo("slow.partner.test", 80, socket.AF_INET)
    assert info.value.errno == socket.EAI_AGAIN
    assert netlab.dns.blackhole_queries("slow.partner.test") == 1
    assert ipv4("slow.partner.test") == {"198.51.100.10"}  # resolv.conf restored


# --- TCP / UDP -----------------------------------------------------------------------------------


def test_http_get_is_served_and_counted(netlab: Lab) -> None:
    server = netlab.tcp("198.51.100.10", 80, http=True, body="hello")
    assert server.accepted == 0
    response = http_get("198.51.100.10", 80, "/v1/items?x=1")
    assert (response.status, response.getheader("Connection")) == (200, "close")
    assert server.accepted == 1
    request = server.requests[0]
    assert (request["method"], request["path"], request["headers"]["host"]) == (
        "GET",
        "/v1/items?x=1",
        "api.partner.test",
    )


def test_http_redirect(netlab: Lab) -> None:
    netlab.tcp("203.0.113.10", 8080, redirect_to="http://blocked.test/next")
    response = http_get("203.0.113.10", 8080)
    assert response.status == 302
    assert response.getheader("Location") == "http://blocked.test/next"


def test_ipv6_and_metadata_servers(netlab: Lab) -> None:
    v6 = netlab.tcp("2001:db8::10", 443, http=True, status=204, body="")
    metadata = netlab.tcp(lab_module.METADATA_V4, 80, http=True, body="ami-0")
    assert v6.netloc == "[2001:db8::10]:443"
    assert http_get("2001:db8::10", 443).status == 204
    assert http_get(lab_module.METADATA_V4, 80).status == 200
    assert (v6.accepted, metadata.accepted) == (1, 1)


def test_connect_is_counted_without_waiting(netlab: Lab) -> None:
    server = netlab.tcp("10.20.30.40", 5432)
    for _ in range(5):
        socket.create_connection(server.address, timeout=5).close()
    assert server.accepted == 5  # the read drains the server first: no race with accept()


def test_close_immediately(netlab: Lab) -> None:
    server = netlab.tcp("198.51.100.11", 25, close=True)
    with socket.create_connection(server.address, timeout=5) as sock:
        try:
            assert sock.recv(10) == b""
        except ConnectionResetError:
            pass
    assert server.accepted == 1


def test_udp_datagrams_are_counted_and_echoed(netlab: Lab) -> None:
    server = netlab.udp("203.0.113.11", 514)
    echo = netlab.udp("2001:db8::11", 7, echo=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"one", server.address)
        sock.sendto(b"two", server.address)
    assert server.datagrams == 2
    assert server.payloads == [b"one", b"two"]
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"ping", echo.address)
        assert sock.recvfrom(100)[0] == b"ping"
    assert echo.datagrams == 1


def test_reset_closes_servers_and_empties_the_zone(netlab: Lab) -> None:
    server = netlab.tcp("198.51.100.12", 80)
    netlab.dns.set("gone.partner.test", A=["198.51.100.12"])
    assert ipv4("gone.partner.test") == {"198.51.100.12"}
    netlab.reset()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.address, timeout=5)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("gone.partner.test", 80, socket.AF_INET)
    with pytest.raises(NetlabError, match=r"no tcp server on 198\.51\.100\.12 port 80"):
        server.accepted  # noqa: B018


def test_reconfigure_and_ephemeral_port(netlab: Lab) -> None:
    server = netlab.tcp("198.51.100.10")
    assert server.port > 0
    socket.create_connection(server.address, timeout=5).close()
    same = netlab.tcp("198.51.100.10", server.port, http=True, status=404)
    assert http_get(*same.address).status == 404
    assert same.accepted == 2


def test_bad_input_is_reported(netlab: Lab) -> None:
    with pytest.raises(NetlabError, match="not an IPv4 address"):
        netlab.dns.set("bad.partner.test", A=["2001:db8::1"])
    with pytest.raises(NetlabError, match="not names"):
        netlab.tcp("api.partner.test", 80)
    with pytest.raises(NetlabError, match=r"cannot listen on 192\.0\.2\.1"):
        netlab.udp("192.0.2.1", 53)  # not a lab address
    netlab.sync()  # the channel still works


def test_control_channel_needs_no_socket(netlab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # A guard may block every socket in this process (loopback and AF_UNIX included): the lab uses pipes.
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "sockets are blocked")

    server = netlab.udp("198.51.100.10", 9999)
    monkeypatch.setattr(socket.socket, "__init__", refuse)
    monkeypatch.setattr(socket, "socketpair", refuse)
    netlab.dns.set("x.partner.test", A=["198.51.100.10"])
    assert server.datagrams == 0
    assert netlab.dns.queries() == 0
