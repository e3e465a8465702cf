"""sockguard benchmark suite: ``python -m benchmarks`` (see docs/performance.md).

Kept empty on purpose: the unguarded worker processes import this package, and it must add nothing to them.
"""
