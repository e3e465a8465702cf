"""SARIF 2.1.0 output for ``sockguard audit`` (the subset GitHub code scanning reads).

One run; one reporting descriptor per classification; paths relative to ``%SRCROOT%`` (the
working directory) so alerts match across runs; ``partialFingerprints`` carries the same
line-independent fingerprint as the baseline file.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable
from urllib.parse import quote

from sockguard.audit_find import KINDS, Finding

SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
FINGERPRINT_KEY = "sockguard/v1"
ENVIRONMENT = "<environment>"

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


def to_sarif(findings: Iterable[Finding], *, version: str, root: str, problems: Iterable[tuple[str, str]] = ()) -> dict:
    """The SARIF log as a dict. ``problems``: (path, error) of files that could not be read."""
    ids = list(KINDS)
    results = []
    for f in findings:
        result = {
            "ruleId": f.kind,
            "ruleIndex": ids.index(f.kind),
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
        results.append(result)
    notifications = [
        {"level": "warning", "message": {"text": f"{path}: {error}"}, "descriptor": {"id": "unreadable-file"}}
        for path, error in problems
    ]
    return {
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
                "originalUriBaseIds": {"%SRCROOT%": {"uri": pathlib.Path(root).as_uri().rstrip("/") + "/"}},
                "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": notifications}],
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }
