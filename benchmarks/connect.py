"""Connect scenarios: allowed by an IP rule, by a CIDR rule, through a name the guard resolved; blocked.

Two measurements per allowed scenario:

* ``udp``: ``connect()`` of an existing UDP socket to a loopback receiver, repeated. It passes the same checks as a
  TCP connect (wrapper, audit hook, cached decision, breaker) around a ~1 µs syscall that sends nothing, so the
  guard's added cost stands out of the noise. This is the "added per connect" figure.
* ``tcp``: ``socket()`` + ``connect()`` + ``close()`` to a loopback listener, the real thing. On a shared VM a
  loopback TCP connect costs tens of µs and jitters by several, so this row gives the ratio.

Blocked: the same calls to a second loopback address that no rule allows; the listener and the UDP receiver there
count what arrives (zero for the guard, proving nothing was sent).
"""

from __future__ import annotations

import socket
from typing import Any

from benchmarks import variants
from benchmarks.harness import Context, Row, Stats, Workers, accelerator_off, interleave, paired, verdict
from benchmarks.rulesets import FILLER
from benchmarks.worker import Bench, Elapsed, elapsed, stamp

US = 1000.0  # ns per µs


def _servers(host: str) -> tuple[socket.socket, socket.socket]:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind((host, 0))
    tcp.listen(4096)
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, 0))
    udp.setblocking(False)
    return tcp, udp


def _drain(tcp: socket.socket, udp: socket.socket) -> tuple[int, int]:
    accepted = received = 0
    while True:
        try:
            conn, _ = tcp.accept()
        except BlockingIOError:
            break
        conn.close()
        accepted += 1
    while True:
        try:
            udp.recv(64)
        except BlockingIOError:
            break
        received += 1
    return accepted, received


def setup(variant: str, *, rule: str, host: str, name: str | None = None, blocked_host: str | None = None) -> Bench:
    tcp, udp = _servers(host)
    blocked = _servers(blocked_host) if blocked_host else None
    counts = {"accepted": 0, "received": 0, "blocked_accepted": 0, "blocked_received": 0, "errors": 0}
    variants.apply(variant, [rule, *FILLER], pytest_socket_allow=[rule])
    if name is not None and variant.startswith("guard"):
        socket.getaddrinfo(name, None)  # through the guard: it now knows which name the address came from
    tcp_addr, udp_addr = tcp.getsockname(), udp.getsockname()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    new_socket = socket.socket

    def drain() -> None:
        accepted, received = _drain(tcp, udp)
        counts["accepted"] += accepted
        counts["received"] += received
        if blocked is not None:
            accepted, received = _drain(*blocked)
            counts["blocked_accepted"] += accepted
            counts["blocked_received"] += received

    def udp_connect(n: int) -> Elapsed:
        connect, addr = client.connect, udp_addr
        start = stamp()
        for _ in range(n):
            connect(addr)
        return elapsed(start)

    def tcp_connect(n: int) -> Elapsed:
        addr = tcp_addr
        start = stamp()
        for _ in range(n):
            s = new_socket()
            s.connect(addr)
            s.close()
        spent = elapsed(start)
        drain()
        return spent

    def tcp_by_name(n: int) -> Elapsed:
        assert name is not None
        port = tcp_addr[1]
        start = stamp()
        for _ in range(n):
            family, kind, proto, _, addr = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0]
            s = new_socket(family, kind, proto)
            s.connect(addr)
            s.close()
        spent = elapsed(start)
        drain()
        return spent

    workloads: dict[str, Any] = {"udp": udp_connect, "tcp": tcp_connect}
    if name is not None:
        workloads["tcp-by-name"] = tcp_by_name
    if blocked is not None:
        blocked_tcp, blocked_udp = blocked[0].getsockname(), blocked[1].getsockname()

        def udp_blocked(n: int) -> Elapsed:
            connect, addr = client.connect, blocked_udp
            errors = 0
            start = stamp()
            for _ in range(n):
                try:
                    connect(addr)
                except OSError:
                    errors += 1
            spent = elapsed(start)
            counts["errors"] += errors
            return spent

        def tcp_blocked(n: int) -> Elapsed:
            addr = blocked_tcp
            errors = 0
            start = stamp()
            for _ in range(n):
                s = new_socket()
                try:
                    s.connect(addr)
                except OSError:
                    errors += 1
                s.close()
            spent = elapsed(start)
            counts["errors"] += errors
            drain()
            return spent

        def sendto_blocked(n: int) -> Elapsed:
            sock = new_socket(socket.AF_INET, socket.SOCK_DGRAM)
            sendto, addr = sock.sendto, blocked_udp
            errors = 0
            start = stamp()
            for _ in range(n):
                try:
                    sendto(b"x", addr)
                except OSError:
                    errors += 1
            spent = elapsed(start)
            sock.close()
            counts["errors"] += errors
            drain()
            return spent

        workloads.update({"udp-blocked": udp_blocked, "tcp-blocked": tcp_blocked, "sendto-blocked": sendto_blocked})

    def info() -> dict[str, Any]:
        drain()
        return dict(counts)

    return Bench(workloads, info)


# -- parent side -------------------------------------------------------------------------------------------------

LAB_NAME, LAB_ADDRESS = "static.netlab.test", "198.51.100.30"  # tests/netlab.py HOSTS
SCENARIOS = {
    "connect-ip": ("loopback connect, allowed by an IP rule", "127.0.0.1", "127.0.0.1", None),
    "connect-cidr": ("loopback connect, allowed by a CIDR rule", "127.0.0.0/8", "127.0.0.1", None),
    # Inside the lab namespace: a "remote" address on lo, named in the lab's /etc/hosts (no DNS server involved).
    "connect-name": ("connect to an address of an allowed name (cache hit)", None, LAB_ADDRESS, LAB_NAME),
}


def run_allowed(ctx: Context, key: str) -> list[Row]:
    label, rule, host, name = SCENARIOS[key]
    if name is not None:
        if not ctx.netns:
            note = "needs the private network namespace (run as root); skipped"
            return [Row(key, label, "added ≤ 1 µs", "µs", verdict="skipped", note=note)]
        rule = name
    params = {"rule": rule, "host": host, "name": name}
    names = ("bare", "hook", "pytest-socket", "guard", "guard-python")
    names += ("guard-nobreaker",) if key == "connect-ip" else ()
    rows = []
    with Workers("connect", {v: params for v in names}, copies=ctx.pick(2, 1)) as workers:
        udp = interleave(workers, "udp", n=ctx.pick(3000, 1000), rounds=ctx.pick(40, 6))
        tcp = interleave(workers, "tcp", n=ctx.pick(200, 100), rounds=ctx.pick(30, 4))
        by_name = None
        if name is not None:
            pair = {k: w for k, w in workers.items() if k.partition("#")[0] in ("bare", "guard", "guard-python")}
            by_name = interleave(pair, "tcp-by-name", n=ctx.pick(100, 50), rounds=ctx.pick(20, 3))
    for workload, samples, what, judged in (
        ("udp", udp, "guard cost per connect (UDP connect, no packet)", True),
        ("tcp", tcp, "TCP socket+connect+close", False),
    ):
        target = "added ≤ 0.5 µs"
        rows.append(_row(f"{key}/{workload}", f"{label}: {what}", target, samples, judged, 0.5, pytest_socket=True))
    hook_added, _ = paired(udp["hook"], udp["bare"], US)
    rows[0].extra["noop_audit_hook_added_us"] = round(hook_added, 3)
    rows[0].note = f"a no-op Python audit hook alone adds {hook_added:.2f} µs here"
    if "guard-nobreaker" in udp:
        nobreaker, _ = paired(udp["guard-nobreaker"], udp["bare"], US)
        rows[0].extra["guard_without_breaker_added_us"] = round(nobreaker, 3)
        rows[0].note += f"; the guard with its circuit breaker off adds {nobreaker:.2f} µs"
    if by_name is not None:
        rows.append(
            _row(
                f"{key}/tcp-by-name",
                f"{label}: getaddrinfo (/etc/hosts) + TCP connect+close",
                "info",
                by_name,
                False,
                limit=None,
            )
        )
    return rows


def _row(
    key: str,
    label: str,
    target: str,
    samples: dict[str, list[float]],
    judged: bool,
    limit: float | None,
    pytest_socket: bool = False,
) -> Row:
    added, ratio = paired(samples["guard"], samples["bare"], US)
    row = Row(
        key,
        label,
        target if judged else "info",
        "µs",
        baseline=Stats.of(samples["bare"], US),
        guarded=Stats.of(samples["guard"], US),
        added=added,
        ratio=ratio,
    )
    accelerator_off(row, samples, scale=US)
    if pytest_socket and "pytest-socket" in samples:
        row.pytest_socket = paired(samples["pytest-socket"], samples["bare"], US)[0]
    if judged and limit is not None:
        row.verdict = verdict(added <= limit)
    elif not judged:
        spread = row.baseline.max - row.baseline.min if row.baseline else 0.0
        row.note = f"baseline spread {spread:.1f} µs between rounds: the UDP row isolates the guard's cost"
    return row


def run_blocked(ctx: Context) -> list[Row]:
    params = {"rule": "127.0.0.1", "host": "127.0.0.1", "blocked_host": "127.0.0.2"}
    names = ("bare", "guard", "guard-quiet", "guard-quiet-python")
    with Workers("connect", {v: params for v in names}) as workers:
        udp = interleave(workers, "udp-blocked", n=ctx.pick(2000, 500), rounds=ctx.pick(30, 4))
        tcp = interleave(workers, "tcp-blocked", n=ctx.pick(200, 100), rounds=ctx.pick(15, 3))
        send = interleave(workers, "sendto-blocked", n=ctx.pick(1000, 300), rounds=ctx.pick(10, 3))
        counts = {v: workers[v].call(op="info") for v in names}
    rows = []
    for workload, samples, what in (
        ("udp", udp, "UDP connect"),
        ("tcp", tcp, "TCP socket+connect+close"),
        ("sendto", send, "UDP sendto"),
    ):
        for variant, detail, judged in (
            ("guard-quiet", "decision + raise", workload == "udp"),
            ("guard", "as shipped: breaker on, WARNING on stderr, repeats held back", False),
        ):
            guarded = Stats.of(samples[variant], US)
            added, ratio = paired(samples[variant], samples["bare"], US)
            row = Row(
                f"blocked/{workload}/{variant}",
                f"blocked {what} ({detail})",
                "≤ 3 µs, nothing sent" if judged else "nothing sent",
                "µs",
                baseline=Stats.of(samples["bare"], US),
                guarded=guarded,
                added=added,
                ratio=ratio,
            )
            arrived = counts[variant]["blocked_accepted"] + counts[variant]["blocked_received"]
            row.extra = {"counts": counts[variant], "bare_counts": counts["bare"]}
            row.note = (
                f"guarded column = time per blocked attempt; baseline = the same call allowed. "
                f"Arrived at the blocked servers: {arrived} (bare: "
                f"{counts['bare']['blocked_accepted'] + counts['bare']['blocked_received']})"
            )
            if variant == "guard-quiet":
                accelerator_off(
                    row, {"guard-quiet-python": samples["guard-quiet-python"], "bare": samples["bare"]}, scale=US
                )
            row.verdict = verdict(arrived == 0 and (guarded.median <= 3.0 if judged else True))
            rows.append(row)
    return rows
