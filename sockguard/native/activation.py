"""Activating the preload library for a process tree (``sockguard run``): the policy in force is compiled into
a file, and the environment that preloads the library with it is returned for the runner to export."""

from __future__ import annotations

import os
from typing import Any

from sockguard.native import POLICY_VARIABLE, library_path, unavailable_reason
from sockguard.native.blob import compile_settings
from sockguard.paths import run_directory, write_by_content


class NativeUnavailable(Exception):
    """The library is not built here; the message says why."""


def policy_directory() -> str:
    """A directory only this user can write (sockguard.paths.run_directory)."""
    return run_directory()


def write_policy(data: bytes, directory: str | None = None) -> str:
    """Write a compiled policy, named by its content (the same policy reuses one file; a file in use by a
    running tree is never rewritten), read-only. Returns its path."""
    return write_by_content(directory or policy_directory(), "policy-", ".bin", data)


def preload_value(library: str, existing: str | None) -> str:
    """LD_PRELOAD with the library first and every existing entry kept (ours once)."""
    entries = [e for e in (existing or "").replace(" ", ":").split(":") if e and e != library]
    return ":".join([library, *entries])


def native_environment(settings: Any, environ: dict[str, str]) -> dict[str, str]:
    """The variables that preload the library with ``settings``' policy for a process and its children
    (``LD_PRELOAD``, ``SOCKGUARD_NATIVE_POLICY``); {} when the mode is off. Raises NativeUnavailable when the
    library is not built, ConfigError/RuleError when the settings are broken, OSError when the policy file
    cannot be written."""
    if settings.mode == "off":
        return {}
    library = library_path()
    if library is None:
        raise NativeUnavailable(unavailable_reason() or "the native library is missing")
    if getattr(settings, "log", None):
        settings.log = os.path.abspath(settings.log)
    path = write_policy(compile_settings(settings))
    return {"LD_PRELOAD": preload_value(library, environ.get("LD_PRELOAD")), POLICY_VARIABLE: path}
