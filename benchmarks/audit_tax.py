"""The tax on audited events that have nothing to do with the network: ``open()``/``close()`` and imports.

An audit hook runs for every audited event in the process. Variants: ``bare``, ``hook`` (a no-op Python hook: the
floor), ``guard`` (installed, ``socket`` imported and patched, so the post-import finder is in place as in
production). ``open``: open and close a regular file. ``import``: import modules from a directory of small
modules (bytecode cached), then unload them outside the timed part.
"""

from __future__ import annotations

import importlib
import os
import sys

from benchmarks import variants
from benchmarks.harness import Context, Row, Stats, Workers, accelerator_off, interleave, paired, verdict
from benchmarks.worker import Bench, Elapsed, elapsed, stamp

US = 1000.0
MODULES = 200  # distinct modules, imported round-robin


def _make_modules(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for i in range(MODULES):
        with open(os.path.join(directory, f"bench_mod_{i}.py"), "w") as f:
            f.write(f"VALUE = {i}\n\ndef f(x):\n    return x + VALUE\n")
    with open(os.path.join(directory, "data.txt"), "w") as f:
        f.write("x")


def setup(variant: str, *, directory: str) -> Bench:
    import socket  # noqa: F401  (the guard patches it on install, as in any networked program)

    sys.path.insert(0, directory)
    importlib.invalidate_caches()
    names = [f"bench_mod_{i}" for i in range(MODULES)]
    for name in names:  # compile once (bytecode cache), so batches measure the import machinery
        importlib.import_module(name)
        del sys.modules[name]
    path = os.path.join(directory, "data.txt")
    variants.apply(variant, ["127.0.0.1"])

    def opens(n: int) -> Elapsed:
        start = stamp()
        for _ in range(n):
            open(path).close()
        return elapsed(start)

    position = [0]

    def imports(n: int) -> Elapsed:
        batch = [names[(position[0] + i) % MODULES] for i in range(n)]
        position[0] += n
        start = stamp()
        for name in batch:
            __import__(name)
        spent = elapsed(start)
        for name in batch:
            sys.modules.pop(name, None)
        return spent

    return Bench({"open": opens, "import": imports})


def run(ctx: Context) -> list[Row]:
    names = ("bare", "hook", "guard", "guard-python")
    rows = []
    # One directory for every variant (the same files, the same directory entries), bytecode compiled by the
    # first worker's warm-up imports.
    directory = os.path.join(ctx.tmp, "modules")
    _make_modules(directory)
    copies = ctx.pick(2, 1)
    (n_open, rounds_open), (n_import, rounds_import) = ctx.pick(((500, 100), (25, 200)), ((1000, 6), (50, 4)))
    with Workers("audit_tax", {v: {"directory": directory} for v in names}, copies=copies) as workers:
        opens = interleave(workers, "open", n=n_open, rounds=rounds_open)
        imports = interleave(workers, "import", n=n_import, rounds=rounds_import)
    for key, samples, label, total in (
        ("open", opens, "open()/close() of a file", n_open * rounds_open * copies),
        ("import", imports, "import of a small module", n_import * rounds_import * copies),
    ):
        added, ratio = paired(samples["guard"], samples["bare"], US)
        hook_added, hook_ratio = paired(samples["hook"], samples["bare"], US)
        row = Row(
            f"audit-tax/{key}",
            f"tax on non-network audited events: {label} ({total:,} per variant)",
            "≤ 1% (ratio ≤ 1.01)",
            "µs",
            baseline=Stats.of(samples["bare"], US),
            guarded=Stats.of(samples["guard"], US),
            added=added,
            ratio=ratio,
            verdict=verdict(ratio <= 1.01),
            note=f"a no-op Python audit hook: {hook_ratio:.3f}x (+{hook_added:.2f} µs)",
        )
        accelerator_off(row, samples, scale=US)
        row.extra = {"noop_hook_ratio": hook_ratio, "noop_hook_added_us": hook_added}
        rows.append(row)
    return rows
