"""Baselines: accept today's findings, fail only on new ones.

A baseline file is untrusted input like any other: anything that is not a baseline (not JSON, nested
100,000 deep, wrong version, an entry without a fingerprint) is a clear error naming the file, never a
traceback. Fingerprints hash classification, path, key and value, not the position, so moved lines keep
matching; ``count`` accepts that many occurrences and reports the next one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator

from sockguard.audit.auditor import AuditError
from sockguard.audit.findings import Finding

BASELINE_VERSION = 1


def load_baseline(path: str) -> Counter[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise AuditError(f"baseline {path} does not exist (create it with --write-baseline {path})") from None
    except OSError as exc:
        raise AuditError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except RecursionError:
        raise AuditError(f"baseline {path} is not a baseline: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise AuditError(f"baseline {path} is not valid JSON: {exc}") from None
    if (
        not isinstance(data, dict)
        or data.get("version") != BASELINE_VERSION
        or not isinstance(data.get("findings"), list)
    ):
        raise AuditError(f"baseline {path}: expected {{'version': {BASELINE_VERSION}, 'findings': [...]}}")
    counts: Counter[str] = Counter()
    for i, entry in enumerate(data["findings"]):
        fp = entry.get("fingerprint") if isinstance(entry, dict) else None
        count = entry.get("count", 1) if isinstance(entry, dict) else None
        if not isinstance(fp, str) or type(count) is not int or count < 1:
            raise AuditError(f"baseline {path}: entry {i} needs a 'fingerprint' string and a positive 'count'")
        counts[fp] += count
    return counts


class BaselineWriter:
    """Collects findings for ``--write-baseline``: one entry per fingerprint, however many occurrences."""

    def __init__(self) -> None:
        self.entries: dict[str, dict] = {}
        self.total = 0

    def add(self, finding: Finding) -> None:
        self.total += 1
        entry = self.entries.get(finding.fingerprint)
        if entry is None:
            self.entries[finding.fingerprint] = {
                "fingerprint": finding.fingerprint,
                "classification": finding.kind,
                "path": finding.path,
                "key": finding.key,
                "value": finding.value,
                "count": 1,
            }
        else:
            entry["count"] += 1

    def chunks(self) -> Iterator[str]:
        yield f'{{"version": {BASELINE_VERSION}, "tool": "sockguard audit", "findings": ['
        for i, entry in enumerate(self.entries.values()):
            yield ("," if i else "") + "\n  " + json.dumps(entry, ensure_ascii=False)
        yield "\n]}\n"


class Suppressor:
    """Drops as many occurrences of each fingerprint as the baseline accepted, as findings stream by."""

    def __init__(self, counts: Counter[str]) -> None:
        self.remaining = Counter(counts)
        self.suppressed = 0

    def filter(self, findings: Iterable[Finding]) -> Iterator[Finding]:
        remaining = self.remaining
        for f in findings:
            if remaining[f.fingerprint] > 0:
                remaining[f.fingerprint] -= 1
                self.suppressed += 1
            else:
                yield f
