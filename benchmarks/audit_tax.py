"""The tax on audited events that have nothing to do with the network: ``open()``/``close()`` and imports.

An audit hook runs for every audited event in the process. Variants: ``bare``, ``hook`` (a no-op Python hook: the
floor), ``guard`` (installed, ``socket`` imported and patched, so the post-import finder is in place as in
production). ``open``: open and close a regular file. ``import``: import modules from a directory of small
modules (bytecode cached), then unload them outside the timed part.

Wall-clock ratios of 1% drown in this machine's noise, so the scenario also counts the instructions each variant
executes per operation (valgrind's callgrind, when installed: the same figure on a busy machine and a quiet one),
with one more variant, ``noop-c``: a C audit hook that returns at once (benchmarks/noop_audit_hook.c, built here).
CPython builds every event's argument tuple for any installed hook, so that variant is the floor of any audit-hook
guard. ``python -m benchmarks.audit_tax VARIANT OP N DIRECTORY [EXTDIR]`` is one counted run.
"""

from __future__ import annotations

import gc
import importlib
import os
import py_compile
import sys

from benchmarks import callgrind, variants
from benchmarks.harness import Context, Row, Stats, Workers, accelerator_off, interleave, paired, verdict
from benchmarks.worker import Bench, Elapsed, elapsed, stamp

US = 1000.0
MODULES = 200  # distinct modules, imported round-robin


def _make_modules(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for i in range(MODULES):
        with open(os.path.join(directory, f"bench_mod_{i}.py"), "w") as f:
            f.write(f"VALUE = {i}\n\ndef f(x):\n    return x + VALUE\n")
        # Written here, not by the workers' imports: under PYTHONDONTWRITEBYTECODE (or a read-only directory) an
        # import writes nothing, and every import would compile its source, timing the compiler, not the import.
        py_compile.compile(os.path.join(directory, f"bench_mod_{i}.py"), doraise=True)
    with open(os.path.join(directory, "data.txt"), "w") as f:
        f.write("x")


def setup(variant: str, *, directory: str) -> Bench:
    import socket  # noqa: F401  (the guard patches it on install, as in any networked program)

    sys.path.insert(0, directory)
    importlib.invalidate_caches()
    names = [f"bench_mod_{i}" for i in range(MODULES)]
    for name in names:  # warm the directory caches; the bytecode is there already (_make_modules)
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
    rows.extend(_instruction_rows(ctx, directory))
    return rows


# --- instruction counts (load-independent) -------------------------------------------------------------------

COUNTED = ("bare", "noop-c", "hook", "guard", "guard-python")


def _instruction_rows(ctx: Context, directory: str) -> list[Row]:
    if callgrind.valgrind() is None:
        return [Row("audit-tax/instructions", "instructions per operation (valgrind)", "≤ 1.01", "instr",
                    verdict="skipped", note="valgrind is not installed")]  # fmt: skip
    extdir = callgrind.build(ctx.tmp, "noop_audit_hook") or ""
    rows = []
    for op, label, n in (("open", "open()/close() of a file", ctx.pick(20000, 5000)),
                         ("import", "import of a small module", ctx.pick(2000, 500))):  # fmt: skip
        counted = [v for v in COUNTED if v != "noop-c" or extdir]
        counts = callgrind.per_op("audit_tax", lambda v, k, op=op: (v, op, str(k), directory, extdir), counted, 0, n)
        bare, guarded = counts.get("bare"), counts.get("guard")
        if bare is None or guarded is None:
            rows.append(Row(f"audit-tax/instructions-{op}", f"{label}: instructions (valgrind)", "≤ 1.01", "instr",
                            verdict="skipped", note="a counted run failed"))  # fmt: skip
            continue

        row = Row(
            f"audit-tax/instructions-{op}",
            f"{label}: instructions per operation (valgrind; load-independent)",
            "≤ 1% (ratio ≤ 1.01)",
            "instr",
            baseline=Stats(bare, bare, bare, 1),
            guarded=Stats(guarded, guarded, guarded, 1),
            added=guarded - bare,
            ratio=guarded / bare,
            verdict=verdict(guarded / bare <= 1.01),
            note=f"floor, a no-op C audit hook: {_relative(counts, 'noop-c')}; a no-op Python hook: "
            f"{_relative(counts, 'hook')}",
        )
        python = counts.get("guard-python")
        if python is not None:
            row.accel_off, row.accel_off_ratio = python - bare, python / bare
        row.extra = {f"{v}_instructions": c for v, c in counts.items()}
        rows.append(row)
    return rows


def _relative(counts: dict[str, float | None], variant: str) -> str:
    value, bare = counts.get(variant), counts["bare"]
    if value is None or bare is None:
        return "n/a"
    return f"{value / bare:.4f}x (+{value - bare:,.0f})"


def _counted_run(variant: str, op: str, n: int, directory: str, extdir: str) -> None:
    """One run for callgrind: the set-up of ``variant`` and a warm-up, then ``n`` operations (none: the set-up
    alone)."""
    if variant == "noop-c":
        sys.path.insert(0, extdir)
        hook = importlib.import_module("noop_audit_hook")
        hook.install()
        variant = "bare"
    work = setup(variant, directory=directory).workloads[op]
    # Warm-up, counted in every run so the difference cancels it: the first open() loads the locale's codec, and
    # whatever else a first call loads would otherwise be spread over the operations of one run only.
    work(MODULES)
    # The set-up's objects out of the collector's reach: a full collection walks the whole heap (larger with the
    # guard loaded), and whether one lands among n operations would swing a short run by thousands per operation.
    gc.collect()
    gc.freeze()
    done = 0
    while done < n:  # imports in batches of MODULES: each batch imports modules the previous one unloaded
        step = min(MODULES, n - done)
        work(step)
        done += step


if __name__ == "__main__":
    _counted_run(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else "")
