"""INI, ``.cfg`` and ``.conf`` files: configparser's syntax line by line; lines that are not
``key = value`` (an nginx or systemd file also ends in .conf) are scanned as plain text."""

from __future__ import annotations

import re
from collections.abc import Iterator

from sockguard.audit.scanners.base import Scalar, iter_lines

_INI_KEY = re.compile(r"([^=:\s][^=:]*?)[ \t]*[=:][ \t]*")


def scan_ini(text: str) -> Iterator[Scalar]:
    """configparser's syntax, line by line; lines that are not ``key = value`` (an nginx or
    systemd file also ends in .conf) are scanned as plain text."""
    section: str | None = None
    key: str | None = None
    for n, raw in enumerate(iter_lines(text), 1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0 and stripped.startswith("[") and "]" in stripped:
            section, key = stripped[1 : stripped.index("]")].strip(), None
            continue
        keys = (section,) if section else ()
        if indent and key is not None:  # continuation of a multi-line value
            yield Scalar((*keys, key), stripped, n, indent + 1)
            continue
        m = _INI_KEY.match(line, indent)
        if m is None:
            key = None
            yield Scalar(keys, stripped, n, indent + 1)
            continue
        key = m.group(1).strip()
        value = line[m.end() :].rstrip()
        if value:
            yield Scalar((*keys, key), value, n, m.end() + 1)
