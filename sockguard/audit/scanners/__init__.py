"""One scanner per file format; :func:`scanner_for` picks it by the kind :mod:`sockguard.audit.walk` gave.

Every scanner takes the decoded text and yields :class:`~sockguard.audit.scanners.base.Scalar` values (and,
for compose files, :class:`~sockguard.audit.scanners.base.Ref` to the env files they name).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sockguard.audit.scanners.base import Ref, Scalar
from sockguard.audit.scanners.dotenv import scan_dotenv
from sockguard.audit.scanners.ini import scan_ini
from sockguard.audit.scanners.json import scan_json
from sockguard.audit.scanners.toml import scan_toml
from sockguard.audit.scanners.yaml import scan_yaml

TEXT_SCANNERS: dict[str, Callable[[str], Iterable[Scalar | Ref]]] = {
    "dotenv": scan_dotenv,
    "ini": scan_ini,
    "toml": scan_toml,
    "json": scan_json,
    "yaml": scan_yaml,
    "compose": scan_yaml,
    "k8s": scan_yaml,
}
