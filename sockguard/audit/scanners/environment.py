"""The process environment (``--env``): every variable except sockguard's own ``SOCKGUARD_*``."""

from __future__ import annotations

import os
from collections.abc import Iterator

from sockguard.audit.scanners.base import Scalar


def scan_environment(environ: dict[str, str] | os._Environ[str]) -> Iterator[Scalar]:
    for name in sorted(environ):
        if not name.startswith("SOCKGUARD_"):
            yield Scalar((name,), environ[name], 0, 0)
