"""The accelerator in tests: ``scripts/test`` runs the enforcement tests twice, the second time with
``SOCKGUARD_ACCELERATOR=0`` (pure-Python floor and wrappers), and the outcomes must be the same. A test that starts
a child with a cleaned environment passes this on with :func:`accelerator_env`."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.native_support import SANITIZER_ENV, asan_runtime, c_compiler

ROOT = Path(__file__).resolve().parent.parent


def accelerator_env() -> dict[str, str]:
    """``{"SOCKGUARD_ACCELERATOR": ...}`` as this test process has it (nothing when unset)."""
    value = os.environ.get("SOCKGUARD_ACCELERATOR")
    return {} if value is None else {"SOCKGUARD_ACCELERATOR": value}


def accelerated() -> bool:
    """Whether this process's guard runs with the C accelerator."""
    from sockguard.accelerator import accelerator

    return accelerator() is not None


def build_sanitized_extension(tmp_path: Path) -> Path:
    """native/sg_accel.c built with AddressSanitizer and UndefinedBehaviorSanitizer into ``tmp_path`` (the test
    skips where no compiler with ASan is available)."""
    compiler, runtime = c_compiler(), asan_runtime()
    if compiler is None or runtime is None:
        pytest.skip("no C compiler with AddressSanitizer here")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    output = tmp_path / f"_accel{suffix}"
    command = [
        compiler,
        "-g",
        "-O1",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-fno-omit-frame-pointer",
        "-fPIC",
        "-shared",
        f"-I{sysconfig.get_paths()['include']}",
        "-o",
        str(output),
        str(ROOT / "native" / "sg_accel.c"),
    ]
    built = subprocess.run(command, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    return output


def run_sanitized(child: str, extension: Path) -> subprocess.CompletedProcess[str]:
    """``python -c child EXTENSION`` with the sanitizer runtime preloaded and the accelerator on."""
    env = {
        **os.environ,
        **SANITIZER_ENV,
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=99",  # the interpreter itself keeps memory at exit
        "LD_PRELOAD": str(asan_runtime()),
        "SOCKGUARD_ACCELERATOR": "1",
    }
    return subprocess.run([sys.executable, "-c", child, str(extension)], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


def assert_clean_under_sanitizers(child: str, tmp_path: Path) -> None:
    """Build the extension with ASan/UBSan, run ``child`` against it, and require that it printed OK with no
    sanitizer report."""
    result = run_sanitized(child, build_sanitized_extension(tmp_path))
    assert result.returncode == 0 and result.stdout.startswith("OK"), result.stdout + result.stderr[-4000:]
    assert "runtime error" not in result.stderr and "AddressSanitizer" not in result.stderr, result.stderr[-4000:]
