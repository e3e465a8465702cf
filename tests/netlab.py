"""netlab: a private "test internet" for the suite (see docs/netlab.md).

``enter_isolated_namespace()`` moves the whole pytest process (and so every child: subprocesses, xdist workers)
into a fresh network + mount namespace: only ``lo``, carrying realistic "remote" addresses, and private
``/etc/hosts`` / ``/etc/resolv.conf`` pointing at the lab DNS server. Nothing can leave the namespace: there is
no interface but loopback and no route.

``Lab`` starts ``netlab_server.py`` (DNS, counting TCP/UDP servers) as an unguarded subprocess and drives it over
its stdin/stdout pipes, so a process-wide guard in the test process (even one that blocks loopback or AF_UNIX)
never cuts the control channel.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import ipaddress
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

# --- the lab's addresses -------------------------------------------------------

DNS_SERVER = "127.0.0.53"  # the lab resolver (UDP + TCP port 53); /etc/resolv.conf points here
BLACKHOLE_DNS = "127.0.0.54"  # receives and counts queries, never answers (resolver time-outs)
REMOTE_V4 = ("198.51.100.10", "198.51.100.11", "198.51.100.12", "198.51.100.30", "203.0.113.10", "203.0.113.11")
REMOTE_V6 = ("2001:db8::10", "2001:db8::11", "2001:db8::30", "2001:db8:1::10")
INTERNAL_V4 = ("10.20.30.40", "10.0.0.5")  # stand-ins for private / internal services
METADATA_V4 = "169.254.169.254"  # cloud metadata stand-in
METADATA_V6 = "fd00:ec2::254"
LOCAL_ADDRESSES = REMOTE_V4 + REMOTE_V6 + INTERNAL_V4 + (METADATA_V4, METADATA_V6)
UNROUTED_V4 = "192.0.2.1"  # not on lo and no route: connect() fails with ENETUNREACH
UNROUTED_V6 = "2001:db8:ffff::1"
HOSTS = {  # names in the lab's /etc/hosts (answered by glibc "files", never by DNS)
    "static.netlab.test": ("198.51.100.30", "2001:db8::30"),
}
RESOLV_OPTIONS = "options timeout:1 attempts:1"
ENV_FLAG = "SOCKGUARD_NETLAB"  # "1" in the environment of every process inside the lab

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2


class NetlabError(RuntimeError):
    """The lab server refused a command or died."""


class _Unavailable(Exception):
    pass


@dataclasses.dataclass
class Status:
    """What ``enter_isolated_namespace()`` achieved in this process (one object, updated in place)."""

    active: bool = False
    reason: str = "netlab.enter_isolated_namespace() was not called (tests/conftest.py pytest_configure)"
    mode: str = ""  # "unshared", "nested" (was already isolated), "pre-isolated" (could not unshare the net ns)
    resolv_conf: str = ""  # the file our bind mount covers, and the (st_dev, st_ino) it must show
    resolv_conf_id: tuple[int, int] = (0, 0)

    def describe(self) -> str:
        if self.active:
            return f"isolated network namespace ({self.mode}), resolver {DNS_SERVER}"
        return f"UNAVAILABLE ({self.reason}); tests marked netlab are skipped"


STATUS = Status()


# --- the namespace ---------------------------------------------------------------


def enter_isolated_namespace() -> Status:
    """Isolate this process (and its future children); never raises. Call before any thread starts."""
    if STATUS.active or STATUS.mode:
        return STATUS
    try:
        mode, resolv_conf, resolv_conf_id = _enter()
    except (_Unavailable, OSError, subprocess.SubprocessError) as exc:
        STATUS.active, STATUS.reason, STATUS.mode = False, str(exc), "unavailable"
        os.environ.pop(ENV_FLAG, None)
        return STATUS
    STATUS.active, STATUS.reason, STATUS.mode = True, "", mode
    STATUS.resolv_conf, STATUS.resolv_conf_id = resolv_conf, resolv_conf_id
    os.environ[ENV_FLAG] = "1"
    return STATUS


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare.argtypes = [ctypes.c_int]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def only_loopback() -> bool:
    """True when this process's network namespace has no interface but ``lo``."""
    with open("/proc/self/net/dev") as f:
        names = {line.split(":", 1)[0].strip() for line in f.readlines()[2:]}
    return names <= {"lo"}


def _enter() -> tuple[str, str, tuple[int, int]]:
    if not sys.platform.startswith("linux"):
        raise _Unavailable(f"network namespaces need Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        raise _Unavailable("not root: unshare(CLONE_NEWNET|CLONE_NEWNS) needs CAP_SYS_ADMIN; run the suite as root")
    ip = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip", "/bin/ip") if os.path.exists(p)), None)
    if ip is None:
        raise _Unavailable("the `ip` command (iproute2) is missing")
    targets = [os.path.realpath(p) for p in ("/etc/hosts", "/etc/resolv.conf")]
    for target in targets:
        if not os.path.isfile(target):
            raise _Unavailable(f"{target} is missing, so it cannot be replaced by a bind mount")
    libc = _libc()
    was_isolated = only_loopback()
    try:
        _check(
            libc.unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWUTS), "unshare(CLONE_NEWNET|CLONE_NEWNS|CLONE_NEWUTS)"
        )
        mode = "nested" if was_isolated else "unshared"
    except OSError as exc:
        if not was_isolated:
            raise _Unavailable(str(exc))
        try:  # e.g. `unshare --net` without the rights to nest: keep its namespace, still need our own mounts
            _check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare(CLONE_NEWNS|CLONE_NEWUTS)")
        except OSError as exc2:
            raise _Unavailable(f"{exc}; {exc2}")
        mode = "pre-isolated"
    # From here on we are in our own namespaces; failing leaves this process isolated but without a lab.
    try:
        # Without this, a bind mount would propagate to the host's mount namespace (shared subtrees).
        _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making the mount tree private")
    except OSError as exc:
        raise _Unavailable(str(exc))
    _add_addresses(ip)
    # glibc derives a DNS search domain from a dotted host name ("h.corp.example" -> every failed lookup is
    # retried as "name.corp.example"); a single-label name keeps query counts exact. Our own UTS namespace.
    hostname = os.uname().nodename
    if "." in hostname:
        label = hostname.split(".", 1)[0].encode() or b"netlab"
        _check(libc.sethostname(label, len(label)), "sethostname")
    # The mounts pin the files' inodes, so the directory goes at once: nothing is left behind, even after kill -9.
    with tempfile.TemporaryDirectory(prefix="netlab-") as directory:
        files = {"hosts": _hosts_file(), "resolv.conf": _resolv_conf([DNS_SERVER])}
        for (name, text), target in zip(files.items(), targets, strict=True):
            source = os.path.join(directory, name)
            with open(source, "w") as f:
                f.write(text)
            try:
                # Nested (an xdist worker): the parent lab's file is mounted here and already unlinked, and
                # nothing can be mounted on an unlinked file. Drop that mount (private: the parent keeps it).
                for _ in range(8):
                    if os.stat(target).st_nlink != 0:
                        break
                    _check(libc.umount2(target.encode(), MNT_DETACH), f"unmounting the parent lab's {target}")
                _check(libc.mount(source.encode(), target.encode(), None, MS_BIND, None), f"bind-mount on {target}")
            except OSError as exc:
                raise _Unavailable(str(exc))
        stat = os.stat(targets[1])
        if (stat.st_dev, stat.st_ino) != _file_id(os.path.join(directory, "resolv.conf")):
            raise _Unavailable(f"the bind mount over {targets[1]} is not visible")
    if not only_loopback():
        raise _Unavailable("the namespace still has a non-loopback interface")
    return mode, targets[1], (stat.st_dev, stat.st_ino)


def _file_id(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return (stat.st_dev, stat.st_ino)


def _add_addresses(ip: str) -> None:
    commands = ["link set lo up"]
    for address in LOCAL_ADDRESSES:
        if ipaddress.ip_address(address).version == 4:
            commands.append(f"addr replace {address}/32 dev lo")
        else:
            commands.append(f"addr replace {address}/128 dev lo nodad")
    result = subprocess.run(
        [ip, "-batch", "-"], input="\n".join(commands) + "\n", capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise _Unavailable(f"`ip -batch` failed setting up lo: {result.stderr.strip()}")


def _hosts_file() -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"127.0.1.1\t{os.uname().nodename}"]
    for name, addresses in HOSTS.items():
        lines += [f"{address}\t{name}" for address in addresses]
    return "\n".join(lines) + "\n"


def _resolv_conf(nameservers: Iterable[str], search: Iterable[str] = (), ndots: int | None = None) -> str:
    # No search list by default: with a single-label host name (see _enter) glibc then sends each lookup exactly
    # once. ``search``/``ndots`` make glibc try other names first (tests of the resolver environment).
    text = "".join(f"nameserver {ns}\n" for ns in nameservers)
    if search:
        text += f"search {' '.join(search)}\n"
    return text + RESOLV_OPTIONS + (f" ndots:{ndots}" if ndots is not None else "") + "\n"


# --- the lab server client ---------------------------------------------------------


def _server_env() -> dict[str, str]:
    """The server must run unguarded: SOCKGUARD_MODE=off and no sockguard sitecustomize on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_")}
    env["SOCKGUARD_MODE"] = "off"
    env[ENV_FLAG] = "1"
    entries = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and not _is_sockguard_site(p)]
    if entries:
        env["PYTHONPATH"] = os.pathsep.join(entries)
    else:
        env.pop("PYTHONPATH", None)
    return env


def _is_sockguard_site(path: str) -> bool:
    try:
        with open(os.path.join(path, "sitecustomize.py")) as f:
            return "sockguard" in f.read()
    except OSError:
        return False


class Lab:
    """Handle on the running lab server. Thread-safe; every read is a synchronous round trip."""

    def __init__(self, timeout: float = 10.0) -> None:
        if not STATUS.active:
            raise NetlabError(f"netlab is unavailable: {STATUS.reason}")
        self.timeout = timeout
        self._lock = threading.Lock()
        self._next_id = 0
        self._buffer = b""
        self._log = tempfile.NamedTemporaryFile(prefix="netlab-server-", suffix=".log", delete=False)  # noqa: SIM115
        server = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netlab_server.py")
        self._proc = subprocess.Popen(
            [sys.executable, "-u", server],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=_server_env(),
            close_fds=True,
        )
        ready = self._read_message()
        if not ready.get("ready"):
            self.stop()
            raise NetlabError(f"the lab server failed to start: {ready.get('error')}")
        self.pid: int = ready["pid"]
        self.dns = Dns(self)

    # addresses, for convenience next to the fixture
    DNS_SERVER = DNS_SERVER
    BLACKHOLE_DNS = BLACKHOLE_DNS
    REMOTE_V4 = REMOTE_V4
    REMOTE_V6 = REMOTE_V6
    INTERNAL_V4 = INTERNAL_V4
    METADATA_V4 = METADATA_V4
    METADATA_V6 = METADATA_V6
    UNROUTED_V4 = UNROUTED_V4
    UNROUTED_V6 = UNROUTED_V6

    def tcp(
        self,
        host: str,
        port: int = 0,
        *,
        http: bool = False,
        status: int | None = None,
        body: str = "ok",
        redirect_to: str | None = None,
        headers: dict[str, str] | None = None,
        close: bool = False,
        keepalive: bool = False,
        routes: dict[str, dict[str, Any]] | None = None,
    ) -> TcpServer:
        """A counting TCP server on (host, port). ``http``: answer one HTTP/1.1 request, then close;
        ``redirect_to`` implies http and 302 + Location; ``close``: close every connection at once;
        ``keepalive`` (implies http): answer every request on a connection and keep it open; ``routes``
        (implies http): ``{path: {"status": 404, "body": "...", "headers": {...}}}`` for the paths that answer
        otherwise. The same (host, port) again reconfigures the existing server (counts kept)."""
        headers = dict(headers or {})
        if redirect_to is not None:
            http = True
            headers.setdefault("Location", redirect_to)
            status = status or 302
        http = http or keepalive or bool(routes)
        args = {"host": host, "port": port, "http": http, "status": status or 200, "body": body, "headers": headers}
        result = self._call("tcp", **args, close=close, keepalive=keepalive, routes=routes or {})
        return TcpServer(self, result["host"], result["port"])

    def udp(self, host: str, port: int = 0, *, echo: bool = False) -> UdpServer:
        """A counting UDP server on (host, port); ``echo`` sends every datagram back."""
        result = self._call("udp", host=host, port=port, echo=echo)
        return UdpServer(self, result["host"], result["port"])

    def sync(self) -> None:
        """Wait until the server has handled everything the kernel queued for it (every read does this too)."""
        self._call("sync")

    def reset(self) -> None:
        """Close every TCP/UDP server, empty the zone and the query log, restore /etc/resolv.conf."""
        self._call("reset")
        self.use_nameservers(DNS_SERVER)

    def use_nameservers(self, *nameservers: str, search: Iterable[str] = (), ndots: int | None = None) -> None:
        """Rewrite the lab's /etc/resolv.conf (glibc rereads it when it changes), optionally with a ``search`` list
        and ``options ndots:N``. ``reset()`` restores it."""
        for ns in nameservers:
            ipaddress.ip_address(ns)
        path = STATUS.resolv_conf
        if _file_id(path) != STATUS.resolv_conf_id:  # never write the host's file
            raise NetlabError(f"{path} is not the lab's bind mount here; refusing to rewrite it")
        text = _resolv_conf(nameservers, search, ndots)
        with open(path) as f:
            if f.read() == text:
                return
        with open(path, "w") as f:  # in place: the same inode, which the mount shows
            f.write(text)

    @contextlib.contextmanager
    def nameservers(self, *nameservers: str, search: Iterable[str] = (), ndots: int | None = None) -> Iterator[None]:
        """``with lab.nameservers(BLACKHOLE_DNS): ...`` -- resolv.conf is restored afterwards."""
        self.use_nameservers(*nameservers, search=search, ndots=ndots)
        try:
            yield
        finally:
            self.use_nameservers(DNS_SERVER)

    def stop(self) -> None:
        """Shut the server down (idempotent)."""
        if self._proc.poll() is None:
            try:
                self._call("quit")
            except NetlabError:
                pass
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout, self._log):
            if stream is not None:
                stream.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)

    # --- the pipe protocol ---

    def _call(self, op: str, **args: Any) -> Any:
        with self._lock:
            self._next_id += 1
            call_id = self._next_id
            request = json.dumps({"id": call_id, "op": op, "args": args}) + "\n"
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(request.encode())
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                raise NetlabError(f"the lab server is gone{self._server_log()}")
            message = self._read_message()
        if "error" in message:
            raise NetlabError(f"netlab {op}: {message['error']}")
        if message.get("id") != call_id:
            raise NetlabError(f"netlab {op}: out-of-order reply {message!r}")
        return message.get("result")

    def _read_message(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([fd], [], [], self.timeout)
            if not ready:
                raise NetlabError(f"the lab server did not answer within {self.timeout}s{self._server_log()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise NetlabError(f"the lab server exited{self._server_log()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _server_log(self) -> str:
        try:
            with open(self._log.name, errors="replace") as f:
                tail = f.read()[-2000:]
        except OSError:
            return ""
        return f"; its stderr:\n{tail}" if tail else ""


@dataclasses.dataclass(frozen=True)
class _Endpoint:
    lab: Lab
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _stats(self, proto: str) -> dict[str, Any]:
        return self.lab._call("stats", proto=proto, host=self.host, port=self.port)


class TcpServer(_Endpoint):
    """A TCP server in the lab; every property is read live from the server (after a drain)."""

    @property
    def url(self) -> str:
        return f"http://{self.netloc}/"

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return self._stats("tcp")["accepted"]

    @property
    def requests(self) -> list[dict[str, Any]]:
        """HTTP requests served: {"method", "path", "headers" (lower-case keys), "body"}."""
        return self._stats("tcp")["requests"]

    @property
    def received(self) -> int:
        """Bytes received over all connections."""
        return self._stats("tcp")["received"]

    def close(self) -> None:
        self.lab._call("close", proto="tcp", host=self.host, port=self.port)


class UdpServer(_Endpoint):
    """A UDP server in the lab; every property is read live from the server (after a drain)."""

    @property
    def datagrams(self) -> int:
        """Datagrams received so far."""
        return self._stats("udp")["datagrams"]

    @property
    def payloads(self) -> list[bytes]:
        """The datagrams' contents (the first 1000)."""
        return [p.encode("latin-1") for p in self._stats("udp")["payloads"]]

    def close(self) -> None:
        self.lab._call("close", proto="udp", host=self.host, port=self.port)


class Dns:
    """The zone served on ``DNS_SERVER`` and the query logs of both DNS servers. Names are case-insensitive."""

    def __init__(self, lab: Lab) -> None:
        self._lab = lab

    def set(self, name: str, *, A: Iterable[str] = (), AAAA: Iterable[str] = (), ttl: int = 60) -> None:
        """Replace ``name`` with these addresses. A name with no address of the asked type answers NODATA."""
        self._lab._call("dns_set", name=name, A=list(A), AAAA=list(AAAA), ttl=ttl)

    def cname(self, name: str, target: str, *, ttl: int = 60) -> None:
        """Make ``name`` a CNAME for ``target`` (chains are followed in answers; a dangling one is NXDOMAIN)."""
        self._lab._call("dns_cname", name=name, target=target, ttl=ttl)

    def remove(self, name: str) -> bool:
        """Remove ``name`` (then NXDOMAIN); False if it was not in the zone."""
        return self._lab._call("dns_remove", name=name)

    def log(self) -> list[tuple[str, str, str, str]]:
        """Every query so far: (qname, qtype, "udp"|"tcp", "main"|"blackhole"), in arrival order."""
        return [tuple(entry) for entry in self._lab._call("dns_log")]  # type: ignore[misc]

    def queries(self, name: str | None = None, rtype: str | None = None, *, server: str = "main") -> int:
        """How many queries ``server`` received for ``name`` (any name if None), optionally of one type."""
        wanted = name.rstrip(".").lower() if name is not None else None
        return sum(
            1
            for qname, qtype, _, srv in self.log()
            if srv == server and (wanted is None or qname == wanted) and (rtype is None or qtype == rtype.upper())
        )

    def all_queries(self, *, server: str = "main") -> dict[str, int]:
        """{qname: count} for ``server``."""
        return dict(Counter(qname for qname, _, _, srv in self.log() if srv == server))

    def blackhole_queries(self, name: str | None = None) -> int:
        """Queries received by ``BLACKHOLE_DNS`` (which never answers)."""
        return self.queries(name, server="blackhole")

    def clear_log(self) -> None:
        self._lab._call("dns_clear_log")
