"""Memory: RSS added by activation, and the address-to-name map after a million distinct lookups.

Activation: the same small program (``import socket`` and one UDP connect to loopback, which sends nothing) runs
plain and with the sitecustomize plus a 20-rule config, alternating, on a regular install (benchmarks/startup.py);
VmRSS is read at its end.

Address map: in a guarded worker, a million ``socket.getaddrinfo`` calls for distinct allowed names go through
the guard's wrapper and audit handler, with the C resolver stubbed to answer each with a distinct address
(strings from 2001:db8::/32, never connected to), and each answer's connect decision is taken too. VmRSS and the
sizes of the guard's maps are sampled along the way: bounded means they stop growing.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks import variants
from benchmarks.harness import Context, Row, Stats, Workers, clean_env, verdict
from benchmarks.startup import _config, regular_install
from benchmarks.worker import Bench, rss_kib

PROGRAM = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.connect(('127.0.0.1', 9))\n"
    "s.close()\n"
    "for line in open('/proc/self/status'):\n"
    "    if line.startswith('VmRSS:'):\n"
    "        print(line.split()[1])\n"
)


class _Stub:
    """``_socket`` stand-in for ``socket.getaddrinfo``: the audit event, then a distinct answer per name."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def getaddrinfo(self, host: str, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0):
        sys.audit("socket.getaddrinfo", host, port, family, type, proto)
        i = int(host[1 : host.index(".")])
        address = f"2001:db8:{(i >> 32) & 0xFFFF:x}:{(i >> 16) & 0xFFFF:x}:{i & 0xFFFF:x}::1"
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def setup(variant: str) -> Bench:
    from sockguard import addrmap

    state = variants.apply(variant, ["*.bench.test"])
    getaddrinfo = socket.getaddrinfo

    def info(total: int, checkpoints: list[int]) -> dict[str, Any]:
        samples = []
        original = socket._socket  # type: ignore[attr-defined,assignment]
        socket._socket = _Stub(original)  # type: ignore[attr-defined,assignment]
        before = rss_kib()
        start = time.perf_counter()
        try:
            done = 0
            for checkpoint in sorted(checkpoints):
                for i in range(done, checkpoint):
                    answer = getaddrinfo(f"h{i}.bench.test", 443, socket.AF_INET6, socket.SOCK_STREAM)
                    state.address(answer[0][4][0], 443)
                done = checkpoint
                samples.append(
                    {
                        "lookups": checkpoint,
                        "rss_added_kib": rss_kib() - before,
                        "address_map": addrmap.size(),
                        "name_cache": len(state.names),
                        "answer_cache": len(state.answers),
                        "address_cache": len(state.addrs),
                    }
                )
        finally:
            socket._socket = original  # type: ignore[attr-defined,assignment]
        return {"samples": samples, "seconds": time.perf_counter() - start, "map_bound": addrmap.MAX_ADDRESSES}

    return Bench({}, info)


def _activation(ctx: Context, rounds: int) -> dict[str, list[float]]:
    python, site = regular_install(ctx)  # (an editable install's finder would add its own modules to both)
    bare = {k: v for k, v in clean_env().items() if k not in ("PYTHONPATH", "PYTHONPYCACHEPREFIX")}
    envs = {"bare": bare, "guard": {**bare, "PYTHONPATH": site, "SOCKGUARD_CONFIG": _config(ctx)}}
    samples: dict[str, list[float]] = {"bare": [], "guard": []}
    for _ in range(rounds):
        for name, env in envs.items():
            out = subprocess.run(
                [python, "-c", PROGRAM], env=env, cwd=ctx.tmp, capture_output=True, text=True, check=True
            )
            samples[name].append(int(out.stdout.split()[-1]) / 1024)
    return samples


def run(ctx: Context) -> list[Row]:
    activation = _activation(ctx, ctx.pick(7, 3))
    added = statistics.median(activation["guard"]) - statistics.median(activation["bare"])
    rows = [
        Row(
            "memory/activation",
            "RSS added by activation (sitecustomize + 20-rule config, socket imported, one connect)",
            "≤ 5 MB added",
            "MiB",
            baseline=Stats.of(activation["bare"]),
            guarded=Stats.of(activation["guard"]),
            added=added,
            ratio=statistics.median(activation["guard"]) / statistics.median(activation["bare"]),
            verdict=verdict(added <= 5.0),
        )
    ]
    total = ctx.pick(1_000_000, 200_000)  # past the map's 65,536-entry cap by half-way either way
    checkpoints = sorted({total // 10, total // 4, total // 2, total})
    with Workers("memory", {"guard": {}}) as workers:
        result = workers["guard"].call(op="info", args={"total": total, "checkpoints": checkpoints})
    last = result["samples"][-1]
    half = result["samples"][-2]
    bounded = last["address_map"] <= result["map_bound"] and last["rss_added_kib"] - half["rss_added_kib"] < 1024
    row = Row(
        "memory/address-map",
        f"address map and decision caches after {total:,} distinct lookups (names → addresses)",
        "map bounded",
        "MiB",
        guarded=Stats(last["rss_added_kib"] / 1024, last["rss_added_kib"] / 1024, last["rss_added_kib"] / 1024, 1),
        added=last["rss_added_kib"] / 1024,
        verdict=verdict(bounded),
        note=(
            f"map {last['address_map']:,} entries (bound {result['map_bound']:,}); caches: names "
            f"{last['name_cache']:,}, answers {last['answer_cache']:,}, addresses {last['address_cache']:,}; "
            f"RSS at half-way +{half['rss_added_kib'] / 1024:.1f} MiB: flat once the maps reach their caps; "
            f"{result['seconds']:.1f} s"
        ),
    )
    row.extra = result
    rows.append(row)
    return rows
