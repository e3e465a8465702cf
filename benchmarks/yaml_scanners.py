"""The hand-written YAML scanner against PyYAML's ``compose()`` on real files (docs/audit.md, "Why the YAML
scanner is hand-written").

    .venv/bin/python benchmarks/yaml_scanners.py DIR [DIR ...]

For every ``*.yaml`` / ``*.yml`` under the directories: does compose() parse it (Helm templates are not YAML
until rendered), which findings each scanner leads to (the audit's classification of every destination, under
an empty policy: raw IPs, internal addresses and host names all count) and how long each takes. A finding is
(classification, key, value, line, column). Nothing is resolved or contacted.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.yaml_compose import scan_yaml_compose
from sockguard.audit.auditor import Positions
from sockguard.audit.findings import findings_for
from sockguard.audit.scanners.base import Scalar, ScanError
from sockguard.audit.scanners.yaml import scan_yaml
from sockguard.policy import Policy

POLICY = Policy([], allow_loopback=False)


def findings(scanner, text: str) -> tuple[set, float]:
    started = time.perf_counter()
    items = list(scanner(text))
    elapsed = time.perf_counter() - started
    position = Positions(text)
    found = set()
    for item in items:
        if isinstance(item, Scalar):
            for f in findings_for(POLICY, item, "f", "yaml", position):
                found.add((f.kind, f.key, f.value, f.line, f.column))
    return found, elapsed


def main(dirs: list[str]) -> int:
    stats: Counter = Counter()
    misses: list[tuple[str, tuple]] = []
    extras: list[tuple[str, tuple]] = []
    for root in dirs:
        for base, _, names in os.walk(root):
            for name in sorted(names):
                if not name.endswith((".yaml", ".yml")):
                    continue
                path = os.path.join(base, name)
                try:
                    with open(path, encoding="utf-8") as fh:
                        text = fh.read()
                except (OSError, UnicodeDecodeError):
                    continue
                stats["files"] += 1
                stats["bytes"] += len(text)
                hand, t_hand = findings(scan_yaml, text)
                stats["hand seconds"] += t_hand
                stats["hand findings"] += len(hand)
                try:
                    ref, t_ref = findings(scan_yaml_compose, text)
                except ScanError:
                    stats["not YAML for compose()"] += 1
                    stats["findings in files compose() cannot read"] += len(hand)
                    continue
                stats["compose seconds"] += t_ref
                stats["compose findings"] += len(ref)
                stats["both"] += len(hand & ref)
                misses += [(path, f) for f in sorted(ref - hand, key=str)]
                extras += [(path, f) for f in sorted(hand - ref, key=str)]
    stats["missed by the hand scanner"] = len(misses)
    stats["found only by the hand scanner"] = len(extras)
    for key, value in stats.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    for title, rows in (("missed by the hand scanner", misses), ("only by the hand scanner", extras)):
        print(f"\n{title} (first 25):")
        for path, finding in rows[:25]:
            print(f"  {path}: {finding}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
