"""The native layer (LD_PRELOAD) against real programs in the netlab (docs/native.md, docs/coverage.md).

Policy as in the coverage matrix: allow api.allowed.test (and the redirect/ws names), loopback not allowed.
Every blocked cell asserts, from the far side, zero connections, zero datagrams and zero DNS queries; every
allowed cell asserts the allowed server was reached. Programs run as children with the library preloaded and
the policy compiled by ``sockguard.native.blob`` from the same rules the Python layer uses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.coverage_support import (
    ALLOW,
    ALLOWED_NAME,
    ALLOWED_V4,
    BLOCKED_NAME,
    BLOCKED_V4,
    Scene,
    guarded_env,
    scene_fixture,  # noqa: F401  (the `scene` fixture)
)
from tests.native_support import (
    SANITIZER_ENV,
    asan_runtime,
    build_sanitized,
    c_compiler,
    preloaded_env,
    require_library,
    write_policy,
)

pytestmark = pytest.mark.netlab
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return write_policy(tmp_path / "policy.bin", ALLOW, allow_loopback=False, log=str(tmp_path / "decisions.jsonl"))


def run(argv: list[str], env: dict[str, str], timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def native_log(policy: Path) -> list[dict[str, Any]]:
    path = policy.parent / "decisions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def need(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        pytest.skip(f"{program} is not installed (scripts/test installs it as root on Debian)")
    return found


# -- curl, getent, git ---------------------------------------------------------------------------------------


def test_curl_allowed_name_and_blocked_name_and_raw_ip(scene: Scene, policy_file: Path) -> None:
    curl = need("curl")
    env = preloaded_env(policy_file)
    allowed = run([curl, "-sS", "-m", "5", f"http://{ALLOWED_NAME}/"], env)
    assert allowed.returncode == 0 and allowed.stdout == "hello", allowed.stderr
    by_name = run([curl, "-sS", "-m", "5", f"http://{BLOCKED_NAME}/"], env)
    assert by_name.returncode == 6, by_name.stderr  # "could not resolve host": refused before DNS
    assert "sockguard blocked DNS lookup to blocked.test" in by_name.stderr
    raw_ip = run([curl, "-sS", "-m", "5", f"http://{BLOCKED_V4}/"], env)
    assert raw_ip.returncode == 7, raw_ip.stderr
    assert "sockguard blocked connection to 203.0.113.10:80: raw IP address" in raw_ip.stderr
    scene.assert_blocked_side_untouched()
    blocks = [e for e in native_log(policy_file) if e["decision"] == "block"]
    assert {(e["op"], e["reason"], e["program"], e["layer"]) for e in blocks} == {
        ("resolve", "not-allowed", "curl", "native"),
        ("connect", "raw-ip", "curl", "native"),
    }
    allows = [e for e in native_log(policy_file) if e["decision"] == "allow"]
    assert any(
        e["op"] == "connect" and e["host"] is None and e["address"] in (ALLOWED_V4, "2001:db8::10") for e in allows
    )
    log = str(policy_file.parent / "decisions.jsonl")
    report = run([sys.executable, "-m", "sockguard", "report", log], dict(os.environ))
    assert "native:curl" in report.stdout, report.stderr  # one log, one reader for both layers


def test_curl_to_an_allowed_name_that_resolves_to_an_internal_address_is_blocked(
    scene: Scene, policy_file: Path
) -> None:
    """DNS rebinding: the answer is dropped (internal-address), as the Python layer drops it."""
    curl = need("curl")
    internal = scene.lab.tcp("10.0.0.5", 80, http=True, body="internal")
    scene.lab.dns.set(ALLOWED_NAME, A=["10.0.0.5"])
    result = run([curl, "-sS", "-m", "5", f"http://{ALLOWED_NAME}/"], preloaded_env(policy_file))
    assert result.returncode != 0
    assert internal.accepted == 0
    assert any(e["reason"] == "internal-address" and e["address"] == "10.0.0.5" for e in native_log(policy_file))


def test_getent(scene: Scene, policy_file: Path) -> None:
    getent = need("getent")
    env = preloaded_env(policy_file)
    allowed = run([getent, "hosts", ALLOWED_NAME], env)
    assert allowed.returncode == 0 and ("198.51.100.10" in allowed.stdout or "2001:db8::10" in allowed.stdout)
    blocked = run([getent, "hosts", BLOCKED_NAME], env)
    assert blocked.returncode == 2
    blocked_v4 = run([getent, "ahostsv4", BLOCKED_NAME], env)
    assert blocked_v4.returncode == 2
    scene.assert_blocked_side_untouched()


def test_git_over_http(scene: Scene, policy_file: Path, tmp_path: Path) -> None:
    git = need("git")
    env = preloaded_env(policy_file, GIT_TERMINAL_PROMPT="0", HOME=str(tmp_path))
    run([git, "ls-remote", f"http://{ALLOWED_NAME}/repo.git"], env)  # the lab server is no git server: it fails
    assert any("info/refs" in r["path"] for r in scene.allowed.requests + scene.allowed_v6.requests)
    blocked = run([git, "ls-remote", f"http://{BLOCKED_NAME}/repo.git"], env)
    assert blocked.returncode != 0 and "sockguard blocked DNS lookup to blocked.test" in blocked.stderr
    raw = run([git, "ls-remote", f"http://{BLOCKED_V4}/repo.git"], env)
    assert raw.returncode != 0
    scene.assert_blocked_side_untouched()


# -- Python C extensions, with both layers active ------------------------------------------------------------


def both_layers(policy: Path, **extra: str) -> dict[str, str]:
    """A Python child guarded by the sitecustomize (the Python layer) and the preload library."""
    env = guarded_env(**extra)
    env.update(LD_PRELOAD=require_library(), SOCKGUARD_NATIVE_POLICY=str(policy))
    return env


def python_child(code: str, env: dict[str, str], timeout: float = 60) -> dict[str, Any]:
    result = run([sys.executable, "-c", textwrap.dedent(code)], env, timeout=timeout)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and lines, f"{result.stdout}\n{result.stderr[-3000:]}"
    return json.loads(lines[-1])


PYCURL = """
import io, json, pycurl
out = {}
for key, url in {"allowed": "http://api.allowed.test/", "name": "http://blocked.test/",
                 "raw": "http://203.0.113.10/", "redirect": "http://redirect.allowed.test/"}.items():
    c, buf = pycurl.Curl(), io.BytesIO()
    c.setopt(pycurl.URL, url); c.setopt(pycurl.WRITEDATA, buf); c.setopt(pycurl.TIMEOUT, 3)
    c.setopt(pycurl.FOLLOWLOCATION, 1)
    try:
        c.perform(); out[key] = buf.getvalue().decode()
    except pycurl.error as exc:
        out[key] = "error %d" % exc.args[0]
    c.close()
print(json.dumps(out))
"""


def test_pycurl(scene: Scene, policy_file: Path) -> None:
    pytest.importorskip("pycurl")
    out = python_child(PYCURL, both_layers(policy_file))
    assert out["allowed"] == "hello"
    assert out["name"] == "error 6" and out["raw"] == "error 7" and out["redirect"] == "error 6"
    assert scene.redirect.accepted == 1
    scene.assert_blocked_side_untouched()


GRPC = """
import json, sys, grpc
out = {}
for host in sys.argv[1:]:
    channel = grpc.insecure_channel(host + ":50051")
    try:
        grpc.channel_ready_future(channel).result(timeout=1.5); out[host] = "ready"
    except grpc.FutureTimeoutError:
        out[host] = "timeout"
    channel.close()
print(json.dumps(out))
"""


@pytest.mark.parametrize("resolver", ["native", "ares"])
def test_grpcio(scene: Scene, policy_file: Path, resolver: str) -> None:
    """gRPC core resolves in C (getaddrinfo, or c-ares' own DNS packets, decided from the packet and learned
    from the answer) and connects to IPv4-mapped addresses."""
    pytest.importorskip("grpc")
    allowed = scene.lab.tcp(ALLOWED_V4, 50051, close=True)
    allowed_v6 = scene.lab.tcp("2001:db8::10", 50051, close=True)
    blocked = scene.lab.tcp(BLOCKED_V4, 50051, close=True)
    env = both_layers(policy_file, GRPC_DNS_RESOLVER=resolver)
    result = run([sys.executable, "-c", GRPC, ALLOWED_NAME, BLOCKED_NAME, BLOCKED_V4], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert allowed.accepted + allowed_v6.accepted >= 1  # the allowed name was resolved and connected
    assert blocked.accepted == 0
    scene.assert_blocked_side_untouched()
    if resolver == "ares":
        assert scene.lab.dns.queries(ALLOWED_NAME) >= 1  # c-ares' own query left (decided from the packet)


UVLOOP = """
import asyncio, json, socket, uvloop
async def main():
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, family=socket.AF_INET)
    allowed = (await loop.getaddrinfo("api.allowed.test", 5353, family=socket.AF_INET))[0][4]
    transport.sendto(b"allowed", allowed)
    transport.sendto(b"raw", ("203.0.113.10", 5353))   # an unconnected datagram: sent by libuv in C
    await asyncio.sleep(0.2)
    transport.close()
    return {"loop": type(loop).__module__}
print(json.dumps(uvloop.run(main())))
"""


def test_uvloop_unconnected_udp_sendto(scene: Scene, policy_file: Path) -> None:
    pytest.importorskip("uvloop")
    out = python_child(UVLOOP, both_layers(policy_file))
    assert out["loop"] == "uvloop"
    assert scene.allowed_udp.payloads == [b"allowed"]
    scene.assert_blocked_side_untouched()


PSYCOPG = """
import json, sys, psycopg
out = {}
for conninfo in sys.argv[1:]:
    try:
        psycopg.connect(conninfo + " port=5432 user=app dbname=app", connect_timeout=2)
    except psycopg.OperationalError as exc:
        out[conninfo] = str(exc)[:300]
print(json.dumps(out))
"""


def test_psycopg_native_layer_alone(scene: Scene, policy_file: Path) -> None:
    """libpq connects from C: without the Python layer, the native layer alone holds it."""
    pytest.importorskip("psycopg")
    allowed = scene.lab.tcp(ALLOWED_V4, 5432, close=True)
    blocked = scene.lab.tcp(BLOCKED_V4, 5432, close=True)
    hosts = [f"host={ALLOWED_NAME}", f"host={BLOCKED_V4}", f"host={ALLOWED_NAME} hostaddr={BLOCKED_V4}"]
    result = run([sys.executable, "-c", PSYCOPG, *hosts], preloaded_env(policy_file))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert allowed.accepted >= 1
    assert blocked.accepted == 0
    assert "Permission denied" in out[hosts[1]]
    scene.assert_blocked_side_untouched()


CTYPES = """
import ctypes, json, socket, struct
out = {}
sa = struct.pack("<HH4s8x", socket.AF_INET, socket.htons(80), socket.inet_aton("203.0.113.10"))
for label, lib in (("CDLL(None)", ctypes.CDLL(None, use_errno=True)),
                   ("CDLL(libc.so.6)", ctypes.CDLL("libc.so.6", use_errno=True))):
    for how in ("connect", "syscall"):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if how == "connect":
            r = lib.connect(s.fileno(), sa, len(sa))
        else:
            r = lib.syscall(42, s.fileno(), sa, len(sa))   # SYS_connect on x86_64
        out[label + "." + how] = [r, ctypes.get_errno()]
        s.close()
    # SCTP (multi-homed associations): refused at socket() unless allow_raw; this kernel would say EPROTONOSUPPORT
    out[label + ".socket-sctp"] = [lib.socket(socket.AF_INET, socket.SOCK_STREAM, 132), ctypes.get_errno()]
    out[label + ".syscall-socket-sctp"] = [lib.syscall(41, socket.AF_INET6, socket.SOCK_SEQPACKET, 132),
                                           ctypes.get_errno()]  # SYS_socket on x86_64
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    out[label + ".__connect"] = [lib.__connect(s.fileno(), sa, len(sa)), ctypes.get_errno()]  # libc's second name
    s.close()
    res = ctypes.c_void_p()
    out[label + ".getaddrinfo"] = lib.getaddrinfo(b"blocked.test", b"80", None, ctypes.byref(res))
    answer = ctypes.create_string_buffer(512)  # glibc's private resolver entry point, reachable by name
    search = lib.__res_context_search
    out[label + ".__res_context_search"] = search(None, b"blocked.test", 1, 1, answer, 512, 0, 0, 0, 0, 0, 0)
print(json.dumps(out))
"""


def test_ctypes_calls_into_libc(scene: Scene, policy_file: Path) -> None:
    """CDLL(None) and CDLL("libc.so.6"), connect, libc's second name __connect, syscall(SYS_connect),
    socket()/syscall(SYS_socket) of SCTP, getaddrinfo and the private __res_context_search: dlsym returns the
    guarded functions, syscall() is interposed."""
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("the SYS_connect number in this test is x86_64's")
    out = python_child(CTYPES, preloaded_env(policy_file))
    for label in ("CDLL(None)", "CDLL(libc.so.6)"):
        assert out[f"{label}.connect"] == [-1, 13] and out[f"{label}.syscall"] == [-1, 13], out
        assert out[f"{label}.__connect"] == [-1, 13], out
        assert out[f"{label}.socket-sctp"] == [-1, 13] and out[f"{label}.syscall-socket-sctp"] == [-1, 13], out
        assert out[f"{label}.__res_context_search"] == -1, out
        assert out[f"{label}.getaddrinfo"] == -11  # EAI_SYSTEM (errno EACCES)
    scene.assert_blocked_side_untouched()


# -- a C program calling what glibc resolves internally ------------------------------------------------------

C_PROGRAM = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <resolv.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int udp_to(const char *ip, int count) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(5353)};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    struct mmsghdr msgs[2];
    struct iovec iov = {.iov_base = "x", .iov_len = 1};
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < count; i++) {
        msgs[i].msg_hdr.msg_name = &sa;
        msgs[i].msg_hdr.msg_namelen = sizeof sa;
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int r = sendmmsg(fd, msgs, count, 0);
    int e = errno;
    close(fd);
    return r < 0 ? -e : r;
}

int main(void) {
    unsigned char answer[4096];
    printf("{");
    printf("\"res_query_blocked\": %d, ", res_query("blocked.test", C_IN, T_A, answer, sizeof answer));
    printf("\"res_query_allowed\": %d, ", res_query("api.allowed.test", C_IN, T_A, answer, sizeof answer) > 0);
    printf("\"res_search_blocked\": %d, ", res_search("blocked.test", C_IN, T_A, answer, sizeof answer));
    struct gaicb a = {.ar_name = "api.allowed.test"}, b = {.ar_name = "blocked.test"};
    struct gaicb *list[2] = {&a, &b};
    int r = getaddrinfo_a(GAI_WAIT, list, 2, NULL);
    printf("\"getaddrinfo_a\": [%d, %d, %d], ", r, gai_error(&a), gai_error(&b));
    struct in_addr blocked; /* not one of the lab's addresses on lo (this host's own are allowed) */
    inet_pton(AF_INET, "203.0.113.99", &blocked);
    struct hostent *h = gethostbyaddr(&blocked, 4, AF_INET);
    printf("\"gethostbyaddr_blocked\": %d, ", h != NULL);
    struct in_addr allowed;
    inet_pton(AF_INET, "198.51.100.10", &allowed);
    h = gethostbyaddr(&allowed, 4, AF_INET);  /* learned from getaddrinfo_a above: the PTR query may leave */
    printf("\"gethostbyaddr_allowed_sent\": 1, ");
    printf("\"sendmmsg_blocked\": %d, ", udp_to("203.0.113.10", 2));
    printf("\"sendmmsg_allowed\": %d, ", udp_to("198.51.100.10", 1));
    long ring = syscall(SYS_io_uring_setup, 4, answer);
    printf("\"io_uring_setup\": [%ld, %d]", ring, ring < 0 ? errno : 0);
    printf("}\n");
    return 0;
}
"""


def build_probe(tmp_path: Path) -> Path:
    compiler = c_compiler()
    if compiler is None:
        pytest.skip("no C compiler")
    source = tmp_path / "probe.c"
    source.write_text(C_PROGRAM)
    binary = tmp_path / "probe"
    built = run([compiler, "-o", str(binary), str(source), "-lresolv"], dict(os.environ))
    assert built.returncode == 0, built.stderr
    return binary


def test_c_program_res_query_getaddrinfo_a_gethostbyaddr_sendmmsg_io_uring(
    scene: Scene, policy_file: Path, tmp_path: Path
) -> None:
    result = run([str(build_probe(tmp_path))], preloaded_env(policy_file))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["res_query_blocked"] == -1 and out["res_search_blocked"] == -1
    assert out["res_query_allowed"] == 1
    assert out["getaddrinfo_a"][0] == 0 and out["getaddrinfo_a"][1] == 0 and out["getaddrinfo_a"][2] == -11
    assert out["gethostbyaddr_blocked"] == 0
    assert out["sendmmsg_blocked"] == -13 and out["sendmmsg_allowed"] == 1
    assert out["io_uring_setup"] == [-1, 38]  # ENOSYS
    scene.assert_blocked_side_untouched()
    assert scene.lab.dns.queries("99.113.0.203.in-addr.arpa") == 0  # no PTR query for the blocked address
    assert scene.lab.dns.queries("10.100.51.198.in-addr.arpa") == 1  # the allowed one was sent
    assert scene.allowed_udp.datagrams == 1
    assert any(e["op"] == "io_uring_setup" for e in native_log(policy_file))


DNSPYTHON = """
import ctypes, json, dns.message, dns.query, dns.resolver
out = {}
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = ["127.0.0.53"]
for name in ("api.allowed.test", "blocked.test"):
    query = dns.message.make_query(name, "A")
    try:  # the raw query: the native layer reads the question from the packet
        out[name] = [r.to_text() for r in dns.query.udp(query, "127.0.0.53", timeout=2).answer]
    except OSError as exc:
        out[name] = "error %d" % exc.errno
print(json.dumps(out))
"""


def test_the_preload_library_itself_under_asan_and_ubsan(
    scene: Scene, policy_file: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The sanitized build of the whole library, preloaded after the ASan runtime, on the paths that parse
    bytes from outside (DNS packets on a :53 socket and their answers, res_query answers, getaddrinfo
    results) and on the name, reverse, sendmmsg, syscall and dlsym paths. (curl is left out: curl with the
    ASan runtime preloaded hangs in setlocale even without sockguard.)"""
    runtime = asan_runtime()
    if runtime is None:
        pytest.skip("no AddressSanitizer runtime")
    library = build_sanitized("libsockguard-asan.so", tmp_path_factory.getbasetemp())
    env = preloaded_env(policy_file, **SANITIZER_ENV)
    env["LD_PRELOAD"] = f"{runtime}:{library}"
    env["ASAN_OPTIONS"] = "detect_leaks=0:exitcode=99"  # programs' own leaks are not ours to judge
    probe = run([str(build_probe(tmp_path))], env)
    assert probe.returncode == 0 and "Sanitizer" not in probe.stderr and "runtime error" not in probe.stderr, (
        probe.stderr
    )
    assert json.loads(probe.stdout)["res_query_blocked"] == -1
    getent = run(["getent", "hosts", ALLOWED_NAME], env)
    assert getent.returncode == 0 and "Sanitizer" not in getent.stderr, getent.stderr
    pytest.importorskip("dns")
    child = run([sys.executable, "-c", DNSPYTHON], env)
    assert child.returncode == 0 and "Sanitizer" not in child.stderr and "runtime error" not in child.stderr, (
        child.stderr
    )
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out["blocked.test"] == "error 13" and "198.51.100.10" in out["api.allowed.test"][0]
    ctypes_child = run([sys.executable, "-c", CTYPES], env)
    assert ctypes_child.returncode == 0 and "Sanitizer" not in ctypes_child.stderr, ctypes_child.stderr
    search = run([str(build_search(tmp_path))], {**env, **SEARCH_ENV})  # search lists: res_ninit, _res, candidates
    assert search.returncode == 0 and "Sanitizer" not in search.stderr, search.stderr[-3000:]
    assert "runtime error" not in search.stderr, search.stderr[-3000:]
    tcp_child = run([sys.executable, "-c", DNS_OVER_TCP], env)  # the DNS-over-TCP framing and short writes
    assert tcp_child.returncode == 0 and "Sanitizer" not in tcp_child.stderr, tcp_child.stderr[-3000:]
    assert "runtime error" not in tcp_child.stderr, tcp_child.stderr[-3000:]
    scene.assert_blocked_side_untouched()


# -- what preloading cannot hold is said, never silent --------------------------------------------------------


@pytest.fixture
def static_binary(tmp_path: Path) -> Path:
    compiler = c_compiler()
    if compiler is None:
        pytest.skip("no C compiler")
    source = tmp_path / "static.c"
    source.write_text("int main(void) { return 0; }\n")
    binary = tmp_path / "static-tool"
    built = run([compiler, "-static", "-o", str(binary), str(source)], dict(os.environ))
    if built.returncode != 0:
        pytest.skip(f"cannot link statically here: {built.stderr[-300:]}")
    return binary


def test_sockguard_run_warns_before_a_static_binary_and_strict_refuses(static_binary: Path, tmp_path: Path) -> None:
    require_library()
    sockguard = [sys.executable, "-m", "sockguard", "run", "--allow", ALLOWED_NAME]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_")}
    warned = run([*sockguard, "--", str(static_binary)], env, cwd=tmp_path)
    assert warned.returncode == 0
    assert f"{static_binary} is statically linked" in warned.stderr and "will NOT be guarded" in warned.stderr
    refused = run([*sockguard, "--strict", "--", str(static_binary)], env, cwd=tmp_path)
    assert refused.returncode == 2 and "refusing to start it (--strict)" in refused.stderr


def test_a_guarded_process_that_execs_a_static_binary_warns_once(static_binary: Path, policy_file: Path) -> None:
    result = run(["sh", "-c", f"{static_binary}; {static_binary}; exec {static_binary}"], preloaded_env(policy_file))
    assert result.returncode == 0
    assert result.stderr.count(f"starts {static_binary}, which is statically linked") == 1, result.stderr
    assert any(e["event"] == "unguarded-child" for e in native_log(policy_file))


def test_a_child_started_with_a_scrubbed_environment_is_warned_about(policy_file: Path) -> None:
    result = run([sys.executable, "-c", "import os; os.execve('/bin/true', ['true'], {})"], preloaded_env(policy_file))
    assert result.returncode == 0
    assert "which is its environment drops LD_PRELOAD" in result.stderr


# -- activation, modes, failing closed ---------------------------------------------------------------------------


def test_sockguard_run_preloads_the_library_for_the_whole_tree(scene: Scene, tmp_path: Path) -> None:
    curl = need("curl")
    require_library()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOCKGUARD_", "LD_PRELOAD"))}
    env["LD_PRELOAD"] = ""  # an existing (empty) value is kept, not an error
    command = [sys.executable, "-m", "sockguard", "run", "--allow", ALLOWED_NAME, "--", "sh", "-c"]
    shell = f"curl -sS -m 5 http://{ALLOWED_NAME}/ && curl -sS -m 5 http://{BLOCKED_V4}/"
    result = run([*command, shell], env, cwd=tmp_path)
    assert result.stdout == "hello" and result.returncode == 7, result.stderr
    assert scene.blocked.accepted == 0
    leaked = run([sys.executable, "-m", "sockguard", "run", "--no-native", "--allow", ALLOWED_NAME, "--", curl, "-sS",
                  "-m", "5", f"http://{BLOCKED_V4}/"], env, cwd=tmp_path)  # fmt: skip
    assert leaked.stdout == "leaked"  # --no-native: curl is not Python, nothing holds it (inside the lab)


def test_monitor_mode_logs_would_block_and_lets_the_call_through(scene: Scene, tmp_path: Path) -> None:
    curl = need("curl")
    policy = write_policy(
        tmp_path / "p.bin", ALLOW, allow_loopback=False, mode="monitor", log=str(tmp_path / "decisions.jsonl")
    )
    result = run([curl, "-sS", "-m", "5", f"http://{BLOCKED_V4}/"], preloaded_env(policy))
    assert result.stdout == "leaked" and "would block connection to 203.0.113.10:80" in result.stderr
    assert [e["decision"] for e in native_log(policy) if e["address"] == BLOCKED_V4] == ["would-block"]


def test_without_a_usable_policy_the_library_fails_closed(scene: Scene, tmp_path: Path) -> None:
    curl = need("curl")
    for policy in (None, tmp_path / "missing.bin", tmp_path / "garbage.bin"):
        (tmp_path / "garbage.bin").write_bytes(b"SGPOLICY" + bytes(100))
        result = run([curl, "-sS", "-m", "5", f"http://{ALLOWED_NAME}/"], preloaded_env(policy))
        assert result.returncode != 0
        assert result.stderr.count("native layer in curl") == 1 and "blocking all network traffic" in result.stderr
    off = run([curl, "-sS", "-m", "5", f"http://{ALLOWED_NAME}/"], preloaded_env(None, SOCKGUARD_MODE="off"))
    assert off.stdout == "hello"
    assert scene.allowed.accepted + scene.allowed_v6.accepted == 1


def test_in_a_python_process_the_python_layer_stays_the_user_facing_one(scene: Scene, policy_file: Path) -> None:
    """Both layers decide the same; Python raises EgressBlocked with its caller, and the C layer, which never
    sees the blocked call, writes nothing for it."""
    code = """
    import json, socket, urllib.request
    out = {"allowed": urllib.request.urlopen("http://api.allowed.test/", timeout=3).read().decode()}
    try:
        socket.create_connection(("203.0.113.10", 80), timeout=3)
    except OSError as exc:
        out["blocked"] = type(exc).__name__
    print(json.dumps(out))
    """
    out = python_child(code, both_layers(policy_file))
    assert out == {"allowed": "hello", "blocked": "EgressBlocked"}
    assert [e for e in native_log(policy_file)] == []  # allows are the Python layer's to log; no block reached C
    scene.assert_blocked_side_untouched()


SYNCED = """
import io, json, pycurl, sockguard

def fetch(url):
    c, buf = pycurl.Curl(), io.BytesIO()
    c.setopt(pycurl.URL, url); c.setopt(pycurl.WRITEDATA, buf); c.setopt(pycurl.TIMEOUT, 3)
    try:
        c.perform(); return buf.getvalue().decode()
    except pycurl.error as exc:
        return "error %d" % exc.args[0]
    finally:
        c.close()

out = {"before": fetch("http://blocked.test/")}
with sockguard.guarded(allow=["blocked.test"], allow_loopback=False):
    out["inside"] = fetch("http://blocked.test/")
    out["inside-allowed-name"] = fetch("http://api.allowed.test/")
out["after"] = fetch("http://blocked.test/")
print(json.dumps(out))
"""


def test_a_policy_installed_at_run_time_reaches_the_native_layer(scene: Scene, policy_file: Path) -> None:
    """sockguard.guarded() in a preloaded process whose configuration allows run-time changes: libcurl (C) follows
    the Python layer's new policy, and the start-up one again afterwards (without the opt-in guarded() is refused:
    tests/test_integrity_adversarial.py)."""
    pytest.importorskip("pycurl")
    out = python_child(SYNCED, both_layers(policy_file, SOCKGUARD_ALLOW_RUNTIME_CHANGES="1"))
    assert out == {"before": "error 6", "inside": "leaked", "inside-allowed-name": "error 6", "after": "error 6"}
    assert scene.blocked.accepted + scene.blocked_v6.accepted == 1  # only the one the new policy allowed


AFTER_SUBPROCESS = """
import json, socket, subprocess
subprocess.run(["true"], check=True)   # CPython starts it with vfork: the child runs on this process's memory
try:
    socket.create_connection(("203.0.113.10", 80), timeout=3)
    print(json.dumps("connected"))
except OSError as exc:
    print(json.dumps(exc.errno))
"""


def test_the_layer_stays_active_in_a_parent_after_vfork_and_exec(
    scene: Scene, policy_file: Path, static_binary: Path
) -> None:
    """A vfork child that execs never returns into the library: the parent's state must not be left changed (a
    re-entry count once stayed raised, and the parent passed every later call straight to libc)."""
    assert python_child(AFTER_SUBPROCESS, preloaded_env(policy_file)) == 13
    shell = run(["sh", "-c", f"ls >/dev/null; {static_binary}"], preloaded_env(policy_file))
    assert f"starts {static_binary}, which is statically linked" in shell.stderr  # the second exec is checked too
    scene.assert_blocked_side_untouched()


OTHER_INTERPOSER = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <sys/socket.h>
/* another preload library that finds "the real connect" on libc's handle (some do) */
int connect(int fd, const struct sockaddr *sa, socklen_t len) {
    typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
    static connect_fn real;
    if (!real) real = (connect_fn)dlsym(dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD), "connect");
    fprintf(stderr, "other-interposer: connect\n");
    return real(fd, sa, len);
}
"""


def test_another_interposer_after_this_one_gets_libc_and_no_loop(
    scene: Scene, policy_file: Path, tmp_path: Path
) -> None:
    compiler = c_compiler()
    if compiler is None:
        pytest.skip("no C compiler")
    curl = need("curl")
    source = tmp_path / "other.c"
    source.write_text(OTHER_INTERPOSER)
    other = tmp_path / "libother.so"
    built = run([compiler, "-shared", "-fPIC", "-o", str(other), str(source), "-ldl"], dict(os.environ))
    assert built.returncode == 0, built.stderr
    env = preloaded_env(policy_file)
    env["LD_PRELOAD"] = f"{env['LD_PRELOAD']}:{other}"
    allowed = run([curl, "-sS", "-m", "5", f"http://{ALLOWED_NAME}/"], env, timeout=30)
    assert allowed.stdout == "hello" and "other-interposer: connect" in allowed.stderr  # both ran, in order, once
    blocked = run([curl, "-sS", "-m", "5", f"http://{BLOCKED_V4}/"], env, timeout=30)
    assert blocked.returncode == 7 and "other-interposer" not in blocked.stderr  # refused before the next one
    scene.assert_blocked_side_untouched()


DUPLICATED_DNS_SOCKET = """
import json, os, socket
import dns.message
query = dns.message.make_query("blocked.test", "A").to_wire()
out = {}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.53", 53))          # a resolv.conf nameserver: trusted, its questions decided
for how in ("dup", "dup2"):
    fd = os.dup(s.fileno()) if how == "dup" else os.dup2(s.fileno(), 77)
    try:
        os.write(fd, query); out[how] = "sent"
    except OSError as exc:
        out[how] = exc.errno
    os.close(fd)
print(json.dumps(out))
"""


def test_a_duplicated_dns_socket_is_still_a_dns_socket(scene: Scene, policy_file: Path) -> None:
    pytest.importorskip("dns")
    assert python_child(DUPLICATED_DNS_SOCKET, preloaded_env(policy_file)) == {"dup": 13, "dup2": 13}
    scene.assert_blocked_side_untouched()


DNS_OVER_TCP = """
import json, os, socket, struct
import dns.message
allowed = dns.message.make_query("api.allowed.test", "A").to_wire()
blocked = dns.message.make_query("blocked.test", "A").to_wire()
frame = lambda wire: struct.pack("!H", len(wire)) + wire
writes = {
    # two queries in one write (pipelining, as glibc's own writev does): each is decided
    "pipelined": [frame(allowed) + frame(blocked)],
    # a length prefix that claims more than the message that follows: the server reads the rest of the
    # allowed message's frame from the next write, whose own first bytes the check would take for a prefix
    "long-prefix": [struct.pack("!H", len(allowed) + 2) + allowed, b"\\0\\0" + frame(blocked)],
    # the prefix on its own, then a body with a second frame behind it
    "split": [struct.pack("!H", len(allowed)), allowed + frame(blocked)],
    # a prefix that claims less than the message written
    "short-prefix": [struct.pack("!H", 12) + allowed[:12] + frame(blocked)],
    # the controls: allowed queries, pipelined, and a prefix written alone before its message
    "allowed-pipelined": [frame(allowed) + frame(allowed)],
    "allowed-split": [struct.pack("!H", len(allowed)), allowed],
}
out = {}
for how, parts in writes.items():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(("127.0.0.53", 53))          # a resolv.conf nameserver: trusted, its questions decided
    results = []
    for part in parts:
        try:
            results.append(os.write(s.fileno(), part))
        except OSError as exc:
            results.append(-exc.errno)
    out[how] = results
    try:
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    except OSError:
        pass
    s.close()

# A short write: the kernel takes part of a checked message; the next write must go on with exactly its rest.
import dns.edns, select
padded = dns.message.make_query("api.allowed.test", "A", use_edns=0,
                                 options=[dns.edns.GenericOption(65001, b"x" * 40000)]).to_wire(max_size=65535)
for how in ("short-write-then-other-bytes", "short-write-then-its-rest"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    s.connect(("127.0.0.53", 53))
    s.setblocking(False)
    big = frame(padded)
    took = os.write(s.fileno(), big)
    rest = big[took:]
    if how == "short-write-then-other-bytes":
        rest = (frame(blocked) + rest)[: len(rest)]
    results = [took < len(big)]
    while rest:
        select.select([], [s], [], 2)
        try:
            n = os.write(s.fileno(), rest)
        except BlockingIOError:
            continue
        except OSError as exc:
            results.append(-exc.errno)
            break
        rest = rest[n:]
    out[how] = results
    s.close()
print(json.dumps(out))
"""


def test_dns_over_tcp_decides_every_framed_query(scene: Scene, policy_file: Path) -> None:
    """A TCP DNS stream carries length-prefixed messages, several to a write: every message the server will read
    is decided, and a write whose framing does not add up is refused (not sent as it is)."""
    pytest.importorskip("dns")
    out = python_child(DNS_OVER_TCP, preloaded_env(policy_file))
    assert scene.lab.dns.queries(BLOCKED_NAME) == 0, (out, scene.lab.dns.log())
    refused = ("pipelined", "long-prefix", "split", "short-prefix", "short-write-then-other-bytes")
    assert all(-13 in out[how] for how in refused), out
    assert out["allowed-pipelined"] == [2 * (len_allowed := out["allowed-split"][1]) + 4], out
    assert out["allowed-split"] == [2, len_allowed], out
    assert out["short-write-then-its-rest"] == [True] and out["short-write-then-other-bytes"][0] is True, out
    assert scene.lab.dns.queries(ALLOWED_NAME) >= 4  # both pipelined, the split one, the padded one


@pytest.mark.parametrize("database", ["ahosts", "hosts"])  # getaddrinfo, gethostbyname2
def test_the_resolver_environment_adds_no_undecided_name_to_a_native_lookup(
    scene: Scene, policy_file: Path, database: str
) -> None:
    """LOCALDOMAIN (a search list the program's environment chooses) and RES_OPTIONS' ndots make glibc ask DNS
    for `api.allowed.test.<domain>` before the allowed name: a name the policy never decided, in a zone the
    environment chose. The lookup still answers with the allowed name, and no other name is asked for."""
    getent = need("getent")
    env = preloaded_env(policy_file, LOCALDOMAIN="evil.example", RES_OPTIONS="ndots:5")
    result = run([getent, database, ALLOWED_NAME], env)
    assert result.returncode == 0 and (ALLOWED_V4 in result.stdout or "2001:db8::10" in result.stdout), result
    assert scene.lab.dns.queries(f"{ALLOWED_NAME}.evil.example") == 0, scene.lab.dns.log()
    assert scene.lab.dns.queries(ALLOWED_NAME) >= 1


SEARCH_PROGRAM = r"""
#define _GNU_SOURCE
#include <netdb.h>
#include <resolv.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static int gai(const char *name) {
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int r = getaddrinfo(name, "80", &hints, &res);
    if (res) freeaddrinfo(res);
    return r;
}

int main(void) {
    unsigned char answer[4096];
    printf("{\"res_search\": %d, ", res_search("api.allowed.test", C_IN, T_A, answer, sizeof answer) > 0);
    printf("\"gethostbyname\": %d, ", gethostbyname("api.allowed.test") != NULL);
    printf("\"getaddrinfo\": %d, ", gai("api.allowed.test"));
    printf("\"short_name\": %d, ", gai("api"));  /* found as api.allowed.test through the search list */
    /* the program rewrites the thread's resolver state itself, after the variables were read */
    static char evil[] = "evil2.example";
    _res.dnsrch[0] = evil;
    _res.dnsrch[1] = NULL;
    _res.ndots = 15;
    printf("\"after_res_changed\": %d}\n", gai("api.allowed.test"));
    return 0;
}
"""


SEARCH_ENV = {"LOCALDOMAIN": "evil.example allowed.test", "RES_OPTIONS": "ndots:5"}


def build_search(tmp_path: Path) -> Path:
    compiler = c_compiler()
    if compiler is None:
        pytest.skip("no C compiler")
    (tmp_path / "search.c").write_text(SEARCH_PROGRAM)
    built = run([compiler, "-o", str(tmp_path / "search"), str(tmp_path / "search.c"), "-lresolv"], dict(os.environ))
    assert built.returncode == 0, built.stderr
    return tmp_path / "search"


def test_the_resolver_environment_adds_no_undecided_name_to_res_search_or_a_changed_res(
    scene: Scene, tmp_path: Path
) -> None:
    """res_search, gethostbyname and getaddrinfo under LOCALDOMAIN + ndots, a short name found through an allowed
    search-list candidate (the short name allowed too, as the Python layer requires), and a program that rewrites
    `_res` itself: only allowed names are asked for."""
    policy = write_policy(tmp_path / "search.bin", [*ALLOW, "api"], allow_loopback=False)
    env = preloaded_env(policy, **SEARCH_ENV)
    result = run([str(build_search(tmp_path))], env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out == {"res_search": 1, "gethostbyname": 1, "getaddrinfo": 0, "short_name": 0, "after_res_changed": 0}
    asked = {name for name, *_ in scene.lab.dns.log()}
    assert asked == {ALLOWED_NAME}, scene.lab.dns.log()  # never *.evil.example, *.evil2.example, or "api"


HIGH_DESCRIPTOR = """
import json, os, resource, socket
import dns.message
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 70001), max(hard, 70001)))
except (ValueError, OSError):
    print(json.dumps({"skip": hard}))
    raise SystemExit
query = dns.message.make_query("blocked.test", "A").to_wire()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
fd = os.dup2(s.fileno(), 70000)        # past the descriptors a fixed-size table could follow
s.close()
high = socket.socket(fileno=fd)
out = {}
try:
    high.connect(("127.0.0.53", 53))
    os.write(fd, query); out["high"] = "sent"
except OSError as exc:
    out["high"] = exc.errno
print(json.dumps(out))
"""


def test_a_dns_socket_on_a_high_descriptor_is_still_decided(scene: Scene, policy_file: Path) -> None:
    """A descriptor number past a fixed 65,536-entry table (a server with a high descriptor limit): the table now
    covers the hard limit, and a descriptor it cannot follow is refused as a DNS socket rather than one whose
    queries leave unread. (Skipped where the hard limit cannot be raised past 70,000.)"""
    pytest.importorskip("dns")
    out = python_child(HIGH_DESCRIPTOR, preloaded_env(policy_file))
    if "skip" in out:
        pytest.skip(f"cannot raise RLIMIT_NOFILE past 70,000 here (hard limit {out['skip']})")
    assert out == {"high": 13}
    assert scene.lab.dns.queries(BLOCKED_NAME) == 0


INHERITED_DNS_SOCKET = """
import json, os, socket, subprocess, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.53", 53))          # a resolv.conf nameserver: trusted, its questions decided
child = '''
import json, os, sys
import dns.message
query = dns.message.make_query("blocked.test", "A").to_wire()
try:
    os.write(int(sys.argv[1]), query); print(json.dumps({"inherited": "sent"}))
except OSError as exc:
    print(json.dumps({"inherited": exc.errno}))
'''
run = subprocess.run([sys.executable, "-c", child, str(s.fileno())], pass_fds=[s.fileno()], capture_output=True,
                     text=True)
print(run.stdout.strip().splitlines()[-1] if run.stdout.strip() else json.dumps({"error": run.stderr}))
"""


def test_a_dns_socket_inherited_across_exec_is_still_a_dns_socket(scene: Scene, policy_file: Path) -> None:
    """A socket connected to the nameserver, handed to a new program (exec keeps it): the new program's library
    starts with an empty table, and finds it among the descriptors it inherited."""
    pytest.importorskip("dns")
    assert python_child(INHERITED_DNS_SOCKET, preloaded_env(policy_file)) == {"inherited": 13}
    assert scene.lab.dns.queries(BLOCKED_NAME) == 0


RECEIVED_DNS_SOCKET = """
import ctypes, json, os, socket
import dns.message
query = dns.message.make_query("blocked.test", "A").to_wire()
out = {}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.53", 53))
left, right = socket.socketpair()
socket.send_fds(left, [b"x"], [s.fileno()])       # handed over SCM_RIGHTS (to this process, for the test)
_, [received], _, _ = socket.recv_fds(right, 1, 1)
try:
    os.write(received, query); out["scm_rights"] = "sent"
except OSError as exc:
    out["scm_rights"] = exc.errno
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_char_p), ("len", ctypes.c_size_t)]
vec = iovec(query, len(query))
for how in ("pwritev2", "pwritev64v2"):   # offset -1: a plain write, on a socket
    sent = getattr(libc, how)(s.fileno(), ctypes.byref(vec), 1, ctypes.c_long(-1), 0)
    out[how] = "sent" if sent >= 0 else ctypes.get_errno()
copy = libc.syscall(32, s.fileno())               # SYS_dup (x86_64), past the dup() interposer
try:
    os.write(copy, query); out["syscall_dup"] = "sent"
except OSError as exc:
    out["syscall_dup"] = exc.errno
print(json.dumps(out))
"""


def test_a_dns_socket_received_duplicated_or_written_by_pwritev2_is_still_a_dns_socket(
    scene: Scene, policy_file: Path
) -> None:
    import platform

    pytest.importorskip("dns")
    if platform.machine() != "x86_64":
        pytest.skip("the SYS_dup number in this test is x86_64's")
    out = python_child(RECEIVED_DNS_SOCKET, preloaded_env(policy_file))
    assert out == {"scm_rights": 13, "pwritev2": 13, "pwritev64v2": 13, "syscall_dup": 13}
    assert scene.lab.dns.queries(BLOCKED_NAME) == 0
