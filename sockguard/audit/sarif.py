"""SARIF 2.1.0 output for ``sockguard audit`` (the subset GitHub code scanning reads).

One run; one reporting descriptor per classification; paths relative to ``%SRCROOT%`` (the
working directory) so alerts match across runs; ``partialFingerprints`` carries the same
line-independent fingerprint as the baseline file.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import quote

from sockguard.audit.findings import KINDS, Finding

if TYPE_CHECKING:
    from sockguard.audit.auditor import Stats

SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
FINGERPRINT_KEY = "sockguard/v1"
ENVIRONMENT = "<environment>"
_RULE_INDEX = {kind: i for i, kind in enumerate(KINDS)}

#: GitHub maps security-severity to critical (>= 9), high (>= 7), medium (>= 4), low.
_SECURITY_SEVERITY = {
    "metadata": "9.0",
    "internal-address": "8.0",
    "denied": "8.0",
    "raw-ip": "7.5",
    "proxy-variable": "7.0",
    "unlisted-host": "5.0",
    "allowlisted": "1.0",
}
_NAMES = {
    "metadata": "MetadataEndpoint",
    "internal-address": "InternalAddress",
    "raw-ip": "RawIpAddress",
    "denied": "DeniedDestination",
    "proxy-variable": "ProxyVariable",
    "unlisted-host": "UnlistedHost",
    "allowlisted": "AllowlistedDestination",
}
_HELP = {
    "metadata": "Cloud metadata endpoints hand out credentials; code that names them is a classic SSRF target. "
    "sockguard blocks them unless an exact rule allows them.",
    "internal-address": "An internal address written as an IP literal reaches private infrastructure; sockguard "
    "blocks it unless an IP/CIDR rule covers it.",
    "raw-ip": "A raw public IP bypasses name-based review and the allowlist; use a DNS name that is allowlisted.",
    "denied": "The destination matches a deny rule of the sockguard policy, so connections to it will fail.",
    "proxy-variable": "HTTP(S)_PROXY / ALL_PROXY route traffic through a proxy: the guard then sees only the proxy "
    "and cannot check the real destinations.",
    "unlisted-host": "The host is not in the sockguard allowlist: connections to it will be blocked.",
    "allowlisted": "The destination is allowed by a rule; listed for review.",
}


def rules() -> list[dict]:
    return [
        {
            "id": kind,
            "name": _NAMES[kind],
            "shortDescription": {"text": description},
            "fullDescription": {"text": _HELP[kind]},
            "help": {"text": _HELP[kind]},
            "defaultConfiguration": {"level": severity},
            "properties": {
                "tags": ["security", "egress"],
                "precision": "high" if kind != "unlisted-host" else "medium",
                "security-severity": _SECURITY_SEVERITY[kind],
            },
        }
        for kind, (severity, description) in KINDS.items()
    ]


def _location(finding: Finding, root: str) -> dict:
    if finding.path == ENVIRONMENT:
        return {
            "logicalLocations": [
                {"name": finding.key or "?", "kind": "variable", "fullyQualifiedName": f"environment.{finding.key}"}
            ]
        }
    absolute = os.path.abspath(os.path.join(root, finding.path))
    rel = os.path.relpath(absolute, root)
    if rel.startswith(os.pardir):
        artifact = {"uri": pathlib.Path(absolute).as_uri()}
    else:
        artifact = {"uri": quote(pathlib.Path(rel).as_posix()), "uriBaseId": "%SRCROOT%"}
    region = {"startLine": max(finding.line, 1), "startColumn": max(finding.column, 1)}
    return {"physicalLocation": {"artifactLocation": artifact, "region": region}}


def result(finding: Finding, root: str) -> dict:
    """One SARIF result. Paths are already valid Unicode (undecodable bytes escaped), so they quote safely."""
    f = finding
    return {
        "ruleId": f.kind,
        "ruleIndex": _RULE_INDEX[f.kind],
        "level": f.severity,
        "message": {"text": f"{f.key + ': ' if f.key else ''}{f.value} — {f.message}"},
        "locations": [_location(f, root)],
        "partialFingerprints": {FINGERPRINT_KEY: f.fingerprint},
        "properties": {
            "value": f.value,
            "key": f.key,
            "host": f.host,
            "port": f.port,
            "reason": f.reason,
            "policyRule": f.rule,
            "detail": f.detail,
            "scanner": f.scanner,
        },
    }


def sarif_chunks(findings: Iterable[Finding], *, version: str, root: str, stats: Stats) -> Iterator[str]:
    """The SARIF log, streamed: one result per line, so memory does not grow with the findings. The files
    that were not scanned come last (``toolExecutionNotifications``), once the scan has finished."""
    head = {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "sockguard",
                        "fullName": "sockguard audit",
                        "version": version,
                        "semanticVersion": version,
                        "rules": rules(),
                    }
                },
                "originalUriBaseIds": {"%SRCROOT%": {"uri": _root_uri(root)}},
                "columnKind": "unicodeCodePoints",
            }
        ],
    }
    text = json.dumps(head, indent=1, ensure_ascii=False)
    cut = text.rindex("}", 0, text.rindex("]"))  # the end of the run object
    yield text[:cut].rstrip() + ',\n  "results": ['
    for i, finding in enumerate(findings):
        yield ("," if i else "") + "\n   " + json.dumps(result(finding, root), ensure_ascii=False)
    notifications = [
        {"level": "warning", "message": {"text": f"{path}: {error}"}, "descriptor": {"id": "not-scanned"}}
        for path, error in stats.problems
    ]
    unlisted = stats.problem_count - len(stats.problems)
    if unlisted:
        notifications.append(
            {
                "level": "warning",
                "message": {"text": f"{unlisted} more file(s) or value(s) not scanned (not listed)"},
                "descriptor": {"id": "not-scanned"},
            }
        )
    invocation = {"executionSuccessful": True, "toolExecutionNotifications": notifications}
    yield '\n  ],\n  "invocations": [' + json.dumps(invocation, ensure_ascii=False) + "]" + text[cut:]
    yield "\n"


def _root_uri(root: str) -> str:
    return pathlib.Path(root).as_uri().rstrip("/") + "/"  # percent-encodes the bytes of any name
