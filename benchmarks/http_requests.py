"""Request events (sockguard/http/): what the HTTP hooks add per request on a kept-alive connection.

The request runs through the real client code, but its connection is canned, so the network's jitter (tens of
µs per loopback round trip on a shared VM) does not bury a 1 µs difference:

* ``http.client``: ``HTTPConnection.request`` + ``getresponse`` + ``read`` on a connection whose socket is an
  in-memory object answering ``200 OK`` (the path urllib, xmlrpc and urllib3/requests take; the peer address it
  reports is allowed by an IP rule, so the event carries the address and the rule);
* ``httpcore``: ``ConnectionPool.request`` (httpx's transport) over httpcore's own ``MockBackend``.

Variants: ``bare`` (unguarded), ``guard`` (no sink wants request events: the logger at its default WARNING, no
log file -- the hooks decide the Host header and return), ``guard-log`` (the JSON-lines log on: every request is
one event, caller found, one line written). The request target carries a query string, dropped from the event.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from benchmarks import variants
from benchmarks.harness import Context, Row, Stats, Workers, interleave, paired, verdict
from benchmarks.worker import Bench, Elapsed, elapsed, stamp

US = 1000.0
PEER = ("198.51.100.10", 80)  # what the canned socket says it is connected to (never used for traffic)
HOST = "api.bench.test"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class _Reader(io.BytesIO):
    def close(self) -> None:  # every response's makefile() is this one stream: closing one must not end it
        pass


class _CannedSocket:
    """Enough of a connected socket for http.client: sends go nowhere, every response is ``RESPONSE``."""

    def __init__(self) -> None:
        self.reader = _Reader()

    def refill(self, n: int) -> None:
        self.reader = _Reader(RESPONSE * n)

    def sendall(self, data: Any) -> None:
        pass

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BytesIO:
        return self.reader

    def getpeername(self) -> tuple[str, int]:
        return PEER

    def settimeout(self, timeout: Any) -> None:
        pass

    def close(self) -> None:
        pass


def setup(variant: str, *, log: str, kind: str) -> Bench:
    variants.apply(variant, [PEER[0], HOST], log=log)
    if kind == "http.client":
        import http.client

        conn = http.client.HTTPConnection(HOST, 80)
        sock = _CannedSocket()
        conn.sock = sock  # type: ignore[assignment]

        def run(n: int) -> Elapsed:
            sock.refill(n)
            request, getresponse = conn.request, conn.getresponse
            start = stamp()
            for _ in range(n):
                request("GET", "/v1/orders?page=2")
                response = getresponse()
                if response.read() != b"ok":
                    raise RuntimeError("bad response")
            return elapsed(start)

    elif kind == "httpcore":
        import httpcore

        def run(n: int) -> Elapsed:
            backend = httpcore.MockBackend([RESPONSE] * n)
            with httpcore.ConnectionPool(network_backend=backend) as pool:
                request = pool.request
                url = f"http://{HOST}/v1/orders?page=2"
                start = stamp()
                for _ in range(n):
                    if request("GET", url).content != b"ok":
                        raise RuntimeError("bad response")
                return elapsed(start)

    else:
        raise ValueError(f"unknown kind {kind!r}")

    def info() -> dict[str, Any]:
        if variant != "guard-log":
            return {}
        lines = requests = 0
        with open(log, "rb") as f:
            for line in f:
                lines += 1
                event = json.loads(line)
                if event.get("event") == "request" and event.get("status") == 200 and "?" not in event["path"]:
                    requests += 1
        return {"lines": lines, "request_events": requests}

    return Bench({kind: run}, info)


def run(ctx: Context) -> list[Row]:
    rows = []
    n, rounds = ctx.pick((2000, 30), (500, 5))
    for kind in ("http.client", "httpcore"):
        names = ("bare", "guard", "guard-log")
        params = {v: {"log": os.path.join(ctx.tmp, f"requests-{kind}-{v}.jsonl"), "kind": kind} for v in names}
        with Workers("http_requests", params) as workers:
            samples = interleave(workers, kind, n=n, rounds=rounds)
            written = workers["guard-log"].call(op="info")
        expected = n * (rounds + 2)  # every batch, warm-up included
        for variant, target, limit in (("guard", "added ≤ 1 µs", 1.0), ("guard-log", "added ≤ 5 µs", 5.0)):
            added, ratio = paired(samples[variant], samples["bare"], US)
            sink = "no sink wants request events" if variant == "guard" else "JSONL log on: one event per request"
            row = Row(
                f"request/{kind}/{variant}",
                f"{kind} request on a kept-alive connection, {sink}",
                target,
                "µs",
                baseline=Stats.of(samples["bare"], US),
                guarded=Stats.of(samples[variant], US),
                added=added,
                ratio=ratio,
            )
            ok = added <= limit
            if variant == "guard-log":
                ok = ok and written["request_events"] == expected
                row.note = f"{written['request_events']:,} request events written for {expected:,} requests"
                row.extra = {"log_file": written, "expected_events": expected}
            row.verdict = verdict(ok)
            rows.append(row)
    return rows
