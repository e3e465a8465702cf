"""Where the activation directory lives (a checkout or an installed wheel), and writing output files."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable


def sitecustomize_dir() -> str:
    """The directory to put on PYTHONPATH to guard every Python process."""
    package = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(os.path.dirname(package), "sitecustomize"), os.path.join(package, "_site")):
        if os.path.isfile(os.path.join(candidate, "sitecustomize.py")):
            return candidate
    raise FileNotFoundError("sockguard: the sitecustomize directory is missing from this installation")


def write_atomically(path: str, chunks: Iterable[str] | bytes, permissions: int | None = None) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file. A special file
    (``/dev/null``, a FIFO) is written directly. ``chunks``: text, or one ``bytes`` object (written as is).
    ``permissions``: the file's mode; by default the mode ``open(path, "w")`` would give it: an existing file
    keeps its own, a new one 0666 minus the umask (mkstemp's 0600 would hide a report or an HTML page meant for
    sharing; none of the tools' outputs holds a secret)."""
    if os.path.exists(path) and not os.path.isfile(path):
        _write(os.open(path, os.O_WRONLY), chunks)
        return
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=".sockguard-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        os.fchmod(fd, _usual_mode(path) if permissions is None else permissions)
        _write(fd, chunks)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_output(path: str | None, chunks: Iterable[str]) -> None:
    """A tool's report: to ``path`` atomically (``-o FILE``), else streamed to stdout chunk by chunk. Raises
    OSError (BrokenPipeError when stdout's reader went away: the caller decides what that means)."""
    if path:
        write_atomically(path, chunks)
        return
    import sys

    for chunk in chunks:
        sys.stdout.write(chunk)
    sys.stdout.flush()


def _write(fd: int, chunks: Iterable[str] | bytes) -> None:
    if isinstance(chunks, bytes):
        with os.fdopen(fd, "wb") as fh:
            fh.write(chunks)
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(chunks)


def _usual_mode(path: str) -> int:
    try:
        info = os.stat(path)
    except OSError:
        return 0o666 & ~_umask()
    return stat.S_IMODE(info.st_mode) if stat.S_ISREG(info.st_mode) else 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only set it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def run_directory() -> str:
    """Where ``sockguard run`` keeps what its process tree reads (the pinned configuration, the native policy): a
    directory only this user can write, ``$XDG_RUNTIME_DIR/sockguard`` or ``<tmp>/sockguard-<uid>``. A directory
    someone else owns or can write is refused (another user could swap what the tree enforces)."""
    import tempfile

    runtime = os.environ.get("XDG_RUNTIME_DIR")
    path = (
        os.path.join(runtime, "sockguard")
        if runtime
        else os.path.join(tempfile.gettempdir(), f"sockguard-{os.getuid()}")
    )
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise OSError(f"{path} is not a directory that only this user can write; refusing to keep a policy there")
    return path


def write_by_content(directory: str, prefix: str, suffix: str, data: bytes, permissions: int = 0o444) -> str:
    """Write ``data`` to ``directory/<prefix><sha256><suffix>``, named by its content: the same content reuses one
    file, and a file a running tree reads is never rewritten. Returns its path."""
    import hashlib

    path = os.path.join(directory, f"{prefix}{hashlib.sha256(data).hexdigest()[:32]}{suffix}")
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return path
    except OSError:
        pass
    write_atomically(path, data, permissions=permissions)
    return path
