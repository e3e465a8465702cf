"""Decision time against policy size: 10, 1,000 and 100,000 rules (a third each names, wildcards, CIDRs).

Measured on ``sockguard.guard.State`` directly, no sockets: ``uncached`` is what the guard computes on a cache miss
(``State._lookup`` for names, ``State._address`` for addresses, which includes parsing the host), ``cached`` the
per-policy cache hit the hot path normally takes. Each batch cycles through the probes of
:func:`benchmarks.rulesets.probes` plus an address the guard saw resolved from an allowed name.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.harness import Context, Row, Stats, Workers, interleave, verdict
from benchmarks.rulesets import generated, probes
from benchmarks.worker import Bench, Elapsed, elapsed, rss_kib, stamp

US = 1000.0
SIZES = (10, 1_000, 100_000)
NAMED_ADDRESS = "198.51.100.201"  # only ever a string here: remembered as an answer for an allowed name


def setup(variant: str, *, count: int) -> Bench:
    from sockguard import addrmap, guard
    from sockguard.config import Settings

    rules = generated(count)
    rss_before = rss_kib()
    start = time.perf_counter()
    settings = Settings(allow=rules, allow_loopback=False, breaker={"enabled": False})
    state = guard.state_from_settings(settings)
    build = time.perf_counter() - start
    rss_after = rss_kib()
    questions = probes(count)
    exact_name = questions["name: exact rule"][0]
    addrmap.remember(NAMED_ADDRESS, exact_name)
    names = [(h, p) for h, p in questions.values() if not h[0].isdigit()]
    addresses = [(h, p) for h, p in questions.values() if h[0].isdigit()] + [(NAMED_ADDRESS, 443)]
    mixed = [(state._lookup, h, p) for h, p in names] + [(state._address, h, p) for h, p in addresses]
    mixed_cached = [(state.lookup, h, p) for h, p in names] + [(state.address, h, p) for h, p in addresses]
    expected = {f"{fn.__name__} {h}:{p}": str(fn(h, p)) for fn, h, p in mixed}

    def cycle(calls: list[tuple[Any, str, int]]) -> Any:
        def run(n: int) -> Elapsed:
            rounds = max(1, n // len(calls))
            start = stamp()
            for _ in range(rounds):
                for fn, host, port in calls:
                    fn(host, port)
            wall, cpu = elapsed(start)
            return wall * n // (rounds * len(calls)), cpu * n // (rounds * len(calls))

        return run

    setup_info = {
        "rules": count,
        "build_s": round(build, 3),
        "policy_rss_mib": round((rss_after - rss_before) / 1024, 1),
        "decisions": expected,
    }
    return Bench({"uncached": cycle(mixed), "cached": cycle(mixed_cached)}, setup_info=setup_info)


def run(ctx: Context) -> list[Row]:
    variants = {f"{n}": {"count": n} for n in SIZES}
    with Workers("decisions", {k: v for k, v in variants.items()}) as workers:
        samples = {
            kind: interleave(workers, kind, n=ctx.pick(12000, 3000), rounds=ctx.pick(30, 5))
            for kind in ("uncached", "cached")
        }
        info = {name: w.setup_info for name, w in workers.items()}
    small, large = str(SIZES[0]), str(SIZES[-1])
    rows = []
    for kind in ("uncached", "cached"):
        per = samples[kind]
        ratios = sorted(b / a for a, b in zip(per[small], per[large], strict=True))
        ratio = ratios[len(ratios) // 2]
        row = Row(
            f"rules/{kind}",
            f"decision time, {kind}: 10 → 100,000 rules (names, wildcards, CIDRs)",
            "100k ≤ 1.05x 10-rule time",
            "µs",
            baseline=Stats.of(per[small], US),
            guarded=Stats.of(per[large], US),
            added=None,
            ratio=ratio,
        )
        middle = Stats.of(per[str(SIZES[1])], US)
        row.note = f"1,000 rules: {middle.median:.2f} µs; baseline column = 10 rules, guarded column = 100,000"
        row.extra = {"per_size": {k: Stats.of(v, US).__dict__ for k, v in per.items()}}
        row.verdict = verdict(ratio <= 1.05)
        if kind == "uncached":
            row.extra["policy"] = {k: {x: v[x] for x in ("build_s", "policy_rss_mib")} for k, v in info.items()}
        rows.append(row)
    built = info[large]
    rows.append(
        Row(
            "rules/build",
            "compiling a 100,000-rule policy (one-off, at the first socket event)",
            "info",
            "s",
            guarded=Stats(built["build_s"], built["build_s"], built["build_s"], 1),
            note=f"RSS of the compiled policy: {built['policy_rss_mib']} MiB",
        )
    )
    return rows
