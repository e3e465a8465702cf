"""``sockguard demo``: an offline replay of the health-check incident.

A health check whose URL was misconfigured with a raw IP retried every 5 s
until the provider reported the host for "active scanning". The replay runs
under a simulated clock (seconds of wall time), with counting servers on every
address it uses, so it proves what did and did not reach the network:

1. an allowlisted call succeeds;
2. the misconfigured health check is blocked on every retry, the target counts
   0 connections, one alert names the code and the setting to fix;
3. the allowlisted partner goes down: after 10 refused attempts the breaker
   fails fast (nothing reaches the kernel), probes after a growing cooldown and
   closes when the partner is back.

Isolation: as root with ``unshare`` and ``ip`` available, the demo re-runs
itself in a private network + mount namespace (only ``lo``, documentation
addresses on it, a private /etc/hosts). Otherwise every address is on
loopback (127.0.0.0/8). Either way no packet can leave the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import urllib.error
from typing import Any

INSIDE = "SOCKGUARD_DEMO_INSIDE"  # set in the re-executed child, inside the namespace
ISOLATION = "SOCKGUARD_DEMO_ISOLATION"  # auto (default) | namespace | loopback
PARTNER_NAME = "api.partner.test"
ADDRESSES = {  # mode -> (partner API, misconfigured health-check target)
    "namespace": ("198.51.100.20", "203.0.113.66"),
    "loopback": ("127.0.0.20", "127.0.0.66"),
}
INTERVAL = 5.0  # the health check's retry period (simulated seconds)

APP_SOURCE = '''\
"""The application under the guard (written out by `sockguard demo`)."""

import os
import urllib.request

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an environment proxy


def vpn_gate_check() -> int:
    """Health check of the VPN gate; the scheduler retries it every 5 s."""
    with _OPENER.open(os.environ["VPN_GATE_URL"], timeout=2) as response:
        return response.status


def partner_status() -> int:
    with _OPENER.open(os.environ["PARTNER_API_URL"], timeout=2) as response:
        return response.status
'''


def main(args: argparse.Namespace) -> int:
    fast = bool(getattr(args, "fast", False))
    wanted = os.environ.get(ISOLATION, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "namespace", "loopback"):
        print(f"sockguard demo: {ISOLATION} must be auto, namespace or loopback, got {wanted!r}", file=sys.stderr)
        return 2
    if os.environ.get(INSIDE) == "1":
        mode, note = _setup_namespace()
        return run(fast, mode, note)
    note = "loopback addresses only (127.0.0.0/8)"
    if wanted != "loopback":
        why = _namespace_unavailable()
        if why is None:
            _reexec(fast)  # does not return
        if wanted == "namespace":
            print(f"sockguard demo: cannot isolate in a network namespace: {why}", file=sys.stderr)
            return 2
        note = f"loopback addresses only (127.0.0.0/8); no private namespace: {why}"
    return run(fast, "loopback", note)


# -- isolation ---------------------------------------------------------------------------


def _namespace_unavailable() -> str | None:
    """Why the namespace mode cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "not root"
    for tool in ("unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            return f"the {tool!r} command is missing"
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"unshare failed: {probe.stderr.strip() or probe.returncode}"
    return None


def _reexec(fast: bool) -> None:
    sys.stdout.flush()
    argv = ["unshare", "--net", "--mount", "--propagation", "private"]
    argv += [sys.executable, "-m", "sockguard", "demo", *(["--fast"] if fast else [])]
    os.execvpe("unshare", argv, {**os.environ, INSIDE: "1"})


def _setup_namespace() -> tuple[str, str]:
    """Inside the fresh namespace: lo up with the documentation addresses, a private /etc/hosts."""
    partner, target = ADDRESSES["namespace"]
    commands = ["link set lo up", f"addr add {partner}/32 dev lo", f"addr add {target}/32 dev lo"]
    result = subprocess.run(["ip", "-batch", "-"], input="\n".join(commands) + "\n", capture_output=True, text=True)
    if result.returncode != 0:
        subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True)
        return "loopback", f"loopback addresses inside a private namespace (ip failed: {result.stderr.strip()})"
    hosts = tempfile.NamedTemporaryFile("w", prefix="sockguard-demo-hosts-", delete=False)  # noqa: SIM115
    hosts.write(f"127.0.0.1\tlocalhost\n{partner}\t{PARTNER_NAME}\n")
    hosts.close()
    bind = ["mount", "--bind", hosts.name, "/etc/hosts"]
    mounted = subprocess.run(bind, capture_output=True, text=True)
    if mounted.returncode != 0:  # /etc/hosts may be a bind mount whose source is gone: ours is private, drop it
        subprocess.run(["umount", "/etc/hosts"], capture_output=True)
        mounted = subprocess.run(bind, capture_output=True, text=True)
    os.unlink(hosts.name)  # the bind mount keeps the inode
    if mounted.returncode != 0:
        return "loopback", f"loopback addresses inside a private namespace (mount failed: {mounted.stderr.strip()})"
    note = (
        f"private network namespace (unshare --net --mount): only lo exists, nothing can leave; "
        f"{PARTNER_NAME} is {partner} (private /etc/hosts), the misconfigured target is {target}"
    )
    return "namespace", note


# -- the servers -------------------------------------------------------------------------


class _Server:
    """Counts the TCP connections it accepts; ``http`` answers each with 200. Accepting raises no
    audit event, so it keeps working under the demo's strict guard."""

    def __init__(self, host: str, port: int, http: bool) -> None:
        self.host, self.http, self.accepted = host, http, 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            with conn:
                if self.http:
                    conn.settimeout(2)
                    try:
                        conn.recv(65536)
                        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                    except OSError:
                        pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class _SimClock:
    """The breaker's clock: simulated seconds, so a minute of retries takes milliseconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- the replay --------------------------------------------------------------------------


def _say(text: str = "", indent: int = 0) -> None:
    pad = " " * indent
    wrapped = textwrap.fill(text, 100, initial_indent=pad, subsequent_indent=pad + "  ", break_on_hyphens=False)
    print(wrapped if text else "", flush=True)


class _AlertPrinter(logging.Handler):
    """Collects the sockguard logger's alert records, shown after the attempt that raised them (the
    per-attempt block warnings are summarised by the timeline instead)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "sockguard", None)
        if isinstance(event, dict) and event.get("event") == "alert":
            self.pending.append(f"[sockguard {record.levelname}] {record.getMessage()}")


def _outcome(call: Any) -> tuple[str, Any]:
    """(label, detail) for one attempt of an app call."""
    from sockguard.errors import EgressBlocked

    try:
        return "200", call()
    except urllib.error.URLError as exc:
        error = exc.reason
    except OSError as exc:
        error = exc
    if isinstance(error, EgressBlocked):
        return error.reason, error
    if isinstance(error, ConnectionRefusedError):
        return "refused", error
    return type(error).__name__, error


_LABELS = {
    "200": "200 OK",
    "refused": "connection refused (reached the kernel)",
    "breaker-open": "breaker open: failed fast, nothing sent",
}


class _Timeline:
    """Prints runs of identical outcomes as one line ('t=50-65 s  4x breaker open ...'), and the
    alerts after the attempt that raised them."""

    def __init__(self, printer: _AlertPrinter) -> None:
        self.printer = printer
        self.label: str | None = None
        self.start = self.end = 0.0
        self.count = 0

    def add(self, label: str, t: float) -> None:
        if label != self.label:
            self.flush()
            self.label, self.start, self.count = label, t, 0
        self.end, self.count = t, self.count + 1
        if self.printer.pending:
            self.flush()
            for message in self.printer.pending:
                _say(message, 3)
            self.printer.pending.clear()

    def flush(self) -> None:
        if self.label is not None:
            when = f"t={self.start:.0f} s" if self.start == self.end else f"t={self.start:.0f}-{self.end:.0f} s"
            text = _LABELS.get(self.label, f"blocked ({self.label}), nothing sent")
            _say(f"{when:<13} {self.count:>2}x {text}", 3)
        self.label = None


def run(fast: bool, mode: str, note: str) -> int:
    from sockguard import alerts as alert_callbacks
    from sockguard import guard
    from sockguard.breaker_settings import DEFAULTS as BREAKER_DEFAULTS
    from sockguard.config import Settings

    partner_ip, target_ip = ADDRESSES[mode]
    workdir = tempfile.mkdtemp(prefix="sockguard-demo-")
    partner = _Server(partner_ip, 8080 if mode == "namespace" else 0, http=True)
    trap = _Server(target_ip, partner.port, http=True)  # the misconfigured target: counts what reaches it
    port = partner.port
    partner_host = PARTNER_NAME if mode == "namespace" else partner_ip
    rule = f"{partner_host}:{port}"
    os.environ["VPN_GATE_URL"] = f"http://{target_ip}:{port}/health"
    os.environ["PARTNER_API_URL"] = f"http://{partner_host}:{port}/v1/status"
    app = _load_app(workdir)

    log_path = os.path.join(workdir, "decisions.jsonl")
    # The "remote" hosts sit on this machine (loopback, or lo in the namespace), which the breaker leaves
    # alone by default: it is told to watch them as the remote hosts they stand in for.
    settings = Settings(allow=[rule], allow_loopback=False, log=log_path, breaker={"loopback": True})
    state = guard.state_from_settings(settings)
    clock = _SimClock()
    assert state.breaker is not None  # on by default
    state.breaker.clock = clock
    alerts: list[dict[str, Any]] = []
    alert_callbacks.on_alert(alerts.append)
    logger = logging.getLogger("sockguard")
    printer = _AlertPrinter()
    logger.addHandler(printer)
    old_level, old_propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    kernel = _KERNEL  # connect() calls that passed the guard, i.e. reached the kernel
    kernel.clear()

    rounds = 12 if fast else 24
    b = BREAKER_DEFAULTS
    print("sockguard demo: offline replay of the health-check incident")
    _say(f"isolation: {note}")
    _say(
        f"policy: allow {rule!r}, nothing else (raw IPs blocked); breaker defaults: {b['threshold']} failed or "
        f"blocked attempts in {b['window']:g} s trip it, fail fast for {b['cooldown']:g} s doubling to "
        f"{b['max_cooldown']:g} s; simulated clock"
    )
    _say(f"the app under the guard: {app.__file__}")
    try:
        with guard.applied(state):
            _count_kernel_connects()
            print("\n1. An allowlisted call")
            label, _ = _outcome(app.partner_status)
            allowlisted_ok = label == "200"
            _say(f"GET {os.environ['PARTNER_API_URL']} -> {_LABELS.get(label, label)}", 3)

            print(f"\n2. The health check, VPN_GATE_URL={os.environ['VPN_GATE_URL']}, retried every 5 s")
            timeline = _Timeline(printer)
            for i in range(rounds):
                label, detail = _outcome(app.vpn_gate_check)
                if i == 0:
                    _say(f"first attempt: {detail}", 3)
                timeline.add(label, clock.now)
                clock.now += INTERVAL
            timeline.flush()
            target_alerts = [a for a in alerts if a.get("address") == target_ip and a["state"] == "firing"]

            print("\n3. The partner goes down; its client keeps polling every 5 s (the breaker)")
            partner.close()
            kernel_before = kernel.get((partner_ip, port), 0)
            clock.now += 60.0
            start = clock.now
            down_rounds = 14 if fast else 30
            attempts = 0
            recovered = False
            timeline = _Timeline(printer)
            for i in range(down_rounds + 80):
                if i == down_rounds:
                    timeline.flush()
                    partner = _Server(partner_ip, port, http=True)
                    _say(f"t={clock.now - start:.0f} s: the partner is back up", 3)
                label, _ = _outcome(app.partner_status)
                attempts += 1
                timeline.add(label, clock.now - start)
                if label == "200":
                    recovered = True
                    break
                clock.now += INTERVAL
            timeline.flush()
            outage_kernel = kernel.get((partner_ip, port), 0) - kernel_before
    finally:
        logger.removeHandler(printer)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
        alert_callbacks.remove_alert_callback(alerts.append)
        _COUNTING["on"] = False
        partner.close()
        trap.close()

    decisions, alert_lines, sample = _read_log(log_path)
    shutil.rmtree(workdir, ignore_errors=True)
    reached = trap.accepted
    print(f"\nSummary ({mode} mode)")
    rows = [
        ("allowlisted call", "200 OK" if allowlisted_ok else "FAILED"),
        ("misconfigured health check attempts", rounds),
        ("connections reached by the misconfigured target", reached),
        ("alerts for the misconfigured target", len(target_alerts)),
        ("partner outage: attempts while polling", attempts),
        ("partner outage: attempts that reached the kernel", outage_kernel),
        ("breaker closed when the partner came back", "yes" if recovered else "NO"),
        ("decision log", f"{decisions} decision events, {alert_lines} alert events"),
    ]
    for name, value in rows:
        print(f"  {name + ':':<52}{value}")
    if sample:
        _say(f"an alert event: {sample}", 2)
    ok = allowlisted_ok and reached == 0 and len(target_alerts) == 1 and recovered
    ok = ok and 0 < outage_kernel < attempts
    if not ok:
        print("UNEXPECTED: the replay did not go as described above", file=sys.stderr)
    return 0 if ok else 1


def _load_app(workdir: str) -> Any:
    path = os.path.join(workdir, "demo_app.py")
    with open(path, "w") as f:
        f.write(APP_SOURCE)
    spec = importlib.util.spec_from_file_location("demo_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_COUNTING = {"on": False, "hooked": False}
_KERNEL: dict[Any, int] = {}


def _kernel_hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _COUNTING["on"] and isinstance(args[1], tuple):
        key = (args[1][0], args[1][1])
        _KERNEL[key] = _KERNEL.get(key, 0) + 1


def _count_kernel_connects() -> None:
    """An audit hook added after sockguard's only sees connects the guard let through: hooks run in
    order and the first to raise stops the call before the syscall."""
    _COUNTING["on"] = True
    if not _COUNTING["hooked"]:
        _COUNTING["hooked"] = True
        sys.addaudithook(_kernel_hook)


def _read_log(path: str) -> tuple[int, int, str]:
    decisions = alerts = 0
    sample = ""
    try:
        with open(path) as f:
            for line in f:
                event = json.loads(line)
                if event.get("event") == "alert":
                    alerts += 1
                    if not sample:
                        keep = ("event", "reason", "state", "address", "port", "caller", "count", "settings")
                        sample = json.dumps({k: event.get(k) for k in keep})
                else:
                    decisions += 1
    except OSError:
        pass
    return decisions, alerts, sample
