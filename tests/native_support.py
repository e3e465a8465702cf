"""Helpers for the native-layer tests: the built library, sanitizer builds of the C test programs, a compiled
policy file, and running a program with the library preloaded."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sockguard.native import library_path, unavailable_reason
from sockguard.native.blob import compile_policy
from sockguard.policy import Policy

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
SOURCES = {
    "sg_decide": ["tests/sg_decide.c", "sg_policy.c"],
    "sg_fuzz": ["tests/sg_fuzz.c", "sg_dns.c", "sg_policy.c"],
    "sg_unit": ["tests/sg_unit.c", "sg_dns.c", "sg_policy.c", "sg_map.c"],
    "libsockguard-asan.so": ["sg_preload.c", "sg_policy.c", "sg_dns.c", "sg_map.c"],
}
SANITIZE = ["-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99", "UBSAN_OPTIONS": "print_stacktrace=1"}


def c_compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def require_library() -> str:
    """The built preload library. Missing where a C compiler exists is a failure (the build must make it)."""
    path = library_path()
    if path is None:
        if c_compiler() is None:
            pytest.skip(f"native layer unavailable here: {unavailable_reason()}")
        pytest.fail(f"the package build did not produce the native library: {unavailable_reason()}")
    return path


def build_sanitized(name: str, directory: Path) -> Path:
    compiler = c_compiler()
    if compiler is None:
        pytest.skip("no C compiler")
    output = directory / name
    if not output.exists():
        shared = ["-fPIC", "-shared", "-fvisibility=hidden"] if name.endswith(".so") else []
        command = [
            compiler,
            *SANITIZE,
            *shared,
            "-pthread",
            "-o",
            str(output),
            *(str(NATIVE / s) for s in SOURCES[name]),
        ]
        command += ["-ldl"] if shared else []
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"
    return output


def asan_runtime() -> str | None:
    """The AddressSanitizer runtime to preload before a sanitized preload library."""
    compiler = c_compiler()
    if compiler is None:
        return None
    found = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True, text=True, check=False)
    path = os.path.realpath(found.stdout.strip()) if found.returncode == 0 else ""
    return path if os.path.isfile(path) else None


def write_policy(path: Path, *args: object, mode: str = "enforce", **kwargs: object) -> Path:
    """``Policy(*args, **kwargs)`` compiled into ``path``; ``log=...`` and ``nameservers=...`` go to the file."""
    log = kwargs.pop("log", None)
    nameservers = kwargs.pop("nameservers", ())
    path.write_bytes(compile_policy(Policy(*args, **kwargs), mode, log=log, nameservers=nameservers))  # type: ignore[arg-type]
    return path


def preloaded_env(policy: Path | None, **extra: str) -> dict[str, str]:
    """An environment that preloads the library with ``policy`` (and no Python guard)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOCKGUARD_", "LD_PRELOAD", "PYTHONPATH"))}
    env["LD_PRELOAD"] = require_library()
    if policy is not None:
        env["SOCKGUARD_NATIVE_POLICY"] = str(policy)
    env.update(extra)
    return env
