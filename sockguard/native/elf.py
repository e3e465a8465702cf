"""Which programs a preload library cannot reach (the same test the library makes when a guarded process
execs one): statically linked ELF files (no PT_INTERP), set-user-ID/set-group-ID files and files with
capabilities (the dynamic loader drops LD_PRELOAD for them). ``#!`` scripts are judged by their interpreter."""

from __future__ import annotations

import os
import shutil
import stat
import struct

PT_INTERP = 3


def resolve_program(program: str) -> str | None:
    """The file ``execvp`` would run for ``program``."""
    if os.sep in program:
        return program if os.path.exists(program) else None
    return shutil.which(program)


def unguardable(path: str, depth: int = 2) -> str | None:
    """Why a preload library cannot guard the program at ``path``, or None (also for what cannot be read)."""
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            head = f.read(64)
            if head.startswith(b"#!") and depth > 0:
                words = head[2:].split(b"\n", 1)[0].split()
                return unguardable(os.fsdecode(words[0]), depth - 1) if words else None
            if info.st_mode & (stat.S_ISUID | stat.S_ISGID):
                return "set-user-ID or set-group-ID: the loader drops LD_PRELOAD for it"
            if _has_capabilities(f.fileno()):
                return "has file capabilities: the loader drops LD_PRELOAD for it"
            if len(head) < 64 or not head.startswith(b"\x7fELF"):
                return None
            if not _has_interpreter(f, head):
                return "statically linked: no preload library can reach its connections or DNS"
    except OSError:
        return None
    return None


def _has_capabilities(fd: int) -> bool:
    try:
        return bool(os.getxattr(fd, "security.capability"))
    except OSError:
        return False


def _has_interpreter(f: object, head: bytes) -> bool:
    endian = "<" if head[5] == 1 else ">"
    if head[4] == 2:  # ELFCLASS64
        phoff, phentsize, phnum = struct.unpack_from(endian + "Q14xHH", head, 32)
    else:
        phoff, phentsize, phnum = struct.unpack_from(endian + "I10xHH", head, 28)
    for i in range(min(phnum, 256)):
        f.seek(phoff + i * phentsize)  # type: ignore[attr-defined]
        data = f.read(4)  # type: ignore[attr-defined]
        if len(data) == 4 and struct.unpack(endian + "I", data)[0] == PT_INTERP:
            return True
    return False
