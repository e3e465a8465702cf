"""The package build compiles the preload library into a regular wheel (platform-tagged, no libpython), and an
install without a C compiler still succeeds and says why the native layer is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.native_support import ROOT, c_compiler


def build_wheel(tmp_path: Path, **env: str) -> Path:
    """A wheel built from a copy of the sources as a clean clone has them: a build/ directory left in the checkout
    by an earlier layout (setuptools reuses it) must not leak stale modules into the wheel."""
    out = tmp_path / "dist"
    source = tmp_path / "source"
    junk = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "artifacts", "__pycache__", "*.so")
    shutil.copytree(ROOT, source, ignore=junk)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=300, check=False,
    )  # fmt: skip
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"cannot build a wheel offline here: {result.stderr.strip()[-300:]}")
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = out.glob("sockguard-*.whl")
    return wheel


def test_a_regular_wheel_carries_the_library(tmp_path: Path) -> None:
    if c_compiler() is None:
        pytest.skip("no C compiler")
    wheel = build_wheel(tmp_path)
    assert "-none-any" not in wheel.name  # a shared object inside: tagged for this platform
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "sockguard/native/libsockguard.so" in names
        assert any(n.startswith("sockguard/_accel.") and n.endswith(".so") for n in names)  # the C accelerator
        assert not any(n.endswith(".unavailable") for n in names)
        library = tmp_path / "libsockguard.so"
        library.write_bytes(z.read("sockguard/native/libsockguard.so"))
    needed = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=False).stdout
    if needed:
        assert "libpython" not in needed
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=False)
    if symbols.returncode == 0:
        exported = {line.split()[-1] for line in symbols.stdout.splitlines()}
        assert {"connect", "getaddrinfo", "res_query", "__res_query", "dlsym", "syscall", "execve"} <= exported
        assert not any(name.startswith("sg_") for name in exported)  # internals stay hidden


def test_without_a_compiler_the_install_succeeds_and_says_why(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, CC="/nonexistent/cc")
    with zipfile.ZipFile(wheel) as z:
        assert "sockguard/native/libsockguard.so" not in z.namelist()
        assert not any(n.startswith("sockguard/_accel.") and n.endswith(".so") for n in z.namelist())
        note = z.read("sockguard/native/libsockguard.so.unavailable").decode()
        accel_note = z.read("sockguard/_accel.unavailable").decode()
    assert "no C compiler: '/nonexistent/cc' not found" in note
    assert "sockguard._accel not built" in accel_note and "/nonexistent/cc" in accel_note
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    status = subprocess.run(
        [sys.executable, "-m", "sockguard", "status"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert "native layer unavailable: no C compiler: '/nonexistent/cc' not found" in status.stdout
    # -S: no editable-install finder (this checkout's, with its built accelerator) in front of the wheel's package.
    accelerator = subprocess.run(
        [sys.executable, "-S", "-c", "from sockguard.accelerator import status; print(status())"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert accelerator.stdout.startswith("not available: sockguard._accel not built"), accelerator
    # Without the accelerator the Python floor enforces the same: a blocked connect is refused.
    blocked = subprocess.run(
        [sys.executable, "-S", "-c", "import socket, sockguard; sockguard.install(allow=['127.0.0.1:1'], "
         "from_environment=False, allow_loopback=False)\ntry:\n socket.socket().connect(('127.0.0.2', 9))\n"
         "except sockguard.EgressBlocked:\n print('blocked')"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert blocked.stdout.strip() == "blocked", blocked.stderr
    path = subprocess.run(
        [sys.executable, "-m", "sockguard", "native", "path"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert path.returncode == 1 and "native layer unavailable" in path.stderr
