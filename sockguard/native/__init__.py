"""The preload library's Python side (docs/native.md): where the library is, why it is missing, compiling
the policy for it (:mod:`sockguard.native.blob`), and telling which programs it cannot reach
(:mod:`sockguard.native.elf`)."""

from __future__ import annotations

import os

LIBRARY_NAME = "libsockguard.so"
POLICY_VARIABLE = "SOCKGUARD_NATIVE_POLICY"


def library_path() -> str | None:
    """The built preload library, or None when it was not built (see :func:`unavailable_reason`)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY_NAME)
    return path if os.path.isfile(path) else None


def unavailable_reason() -> str | None:
    """Why the library is missing (the build's note), or None when it is there."""
    if library_path() is not None:
        return None
    note = os.path.join(os.path.dirname(os.path.abspath(__file__)), LIBRARY_NAME + ".unavailable")
    try:
        with open(note, encoding="utf-8") as f:
            return f.read().strip() or "the build left no reason"
    except OSError:
        return "not built (this installation did not run the package build: reinstall with pip)"
