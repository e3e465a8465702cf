"""What the user sees of the records: each test's report, the session's summary and the JSON report.

A test's report gets a "sockguard" section with its blocked attempts; a test that *passed* although the code under
test swallowed a block fails (or warns, ``--sockguard-swallowed=warn`` and pytest-socket's options alone), because
it passed without exercising what it meant to. The summary and the JSON file group every record by destination,
with the rule that would allow it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
from typing import Any

import pytest

from sockguard.pytest_plugin.records import Blocked, SockguardWarning, _group
from sockguard.pytest_plugin.scopes import Rules


def annotate(
    report: Any, records: list[Blocked], swallowed: str, item: pytest.Item | None, python_files: list[str]
) -> None:
    """Add the blocked attempts to the report; fail a passing test when the code under test swallowed a
    block. A block the test caught with ``pytest.raises`` (even wrapped in a client's own exception), one
    inside ``sockguard.expect_blocked()``, and an attempt made directly by test code (a probe in
    conftest.py) are the test's own business (``python_files``: the ini option that names test files)."""
    text = "\n".join(r.describe() for r in records)
    failing = [
        r
        for r in records
        if r.decision == "block" and not r.expected and r.count > r.checked and not _by_test_code(r, item, python_files)
    ]
    label = report.nodeid or "the session"
    if report.passed and failing and not hasattr(report, "wasxfail"):
        subject = "collection" if report.when == "collect" else "the test"
        head = (
            f"sockguard blocked {len(failing)} attempt(s) during {report.when} of {label}, and the code under "
            f"test swallowed the exception: {subject} passed without seeing it."
        )
        if swallowed == "fail":
            report.outcome = "failed"
            report.longrepr = (
                f"{head}\n{text}\nIf the test means to exercise a blocked path, wrap it in "
                "`with sockguard.expect_blocked():` (the sockguard fixture) or run with --sockguard-swallowed=warn."
            )
            return
        if item is not None and not all(r.compat for r in failing):  # (those warned as pytest-socket does)
            try:
                item.warn(SockguardWarning(f"{head}\n{text}"))
            except Warning:  # warnings are errors in this run
                report.outcome = "failed"
                report.longrepr = f"{head}\n{text}"
                return
    report.sections.append(("sockguard", text))


def _by_test_code(record: Blocked, item: pytest.Item | None, python_files: list[str]) -> bool:
    """Whether the blocked call was made by the test module, a conftest.py or another test file (or by a
    child process: its block shows in its exit status and output, like any other failure of it)."""
    if record.child:
        return True
    module = (record.caller or "").partition(":")[0]
    if item is None or not module:
        return False
    if module == getattr(getattr(item, "module", None), "__name__", None):
        return True
    path = getattr(sys.modules.get(module), "__file__", None) or ""
    name = os.path.basename(path)
    return name == "conftest.py" or any(fnmatch.fnmatch(name, p) for p in python_files)


def terminal_summary(tr: Any, records: list[Blocked], report_path: str | None) -> None:
    """The session's summary: every blocked destination, how often, the rule that would allow it, and where."""
    groups = _group(records)
    if not groups:
        return
    tr.write_sep("=", "sockguard: blocked destinations")
    for group in groups:
        first = group[0]
        attempts = sum(r.count for r in group)
        head = "WOULD BLOCK" if first.decision == "would-block" else "BLOCKED"
        tr.write_line(f"{head} {first.action} ({first.explanation}); {attempts} attempt(s)")
        tr.write_line(f"    {first.advice()}")
        for record in group[:20]:
            who = record.nodeid or "(session)"
            extra = f" [child process {record.pid}]" if record.child else ""
            extra += " [expected]" if record.expected else ""
            tr.write_line(f"    - {who} ({record.where}) from {record.caller or 'unknown code'}{extra}")
        if len(group) > 20:
            tr.write_line(f"    ... and {len(group) - 20} more")
    if report_path:
        tr.write_line(f"sockguard: JSON report written to {report_path}")


def write_report(path: str, session_rules: Rules | None, records: list[Blocked]) -> None:
    """The JSON report (``--sockguard-report``): the same groups, each with its records."""
    data = {
        "sockguard_pytest_report": 1,
        "session": session_rules.describe() if session_rules else None,
        "attempts": sum(r.count for r in records),
        "destinations": [
            {
                "destination": group[0].destination,
                "operation": group[0].operation,
                "host": group[0].host,
                "port": group[0].port,
                "decision": group[0].decision,
                "reason": group[0].reason,
                "explanation": group[0].explanation,
                "suggestion": group[0].suggestion,
                "attempts": sum(r.count for r in group),
                "tests": [r.to_dict() for r in group],
            }
            for group in _group(records)
        ],
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
