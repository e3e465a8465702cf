"""Where the activation directory lives (a checkout or an installed wheel), and writing output files."""

from __future__ import annotations

import os
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
    (``/dev/null``, a FIFO) is written directly. ``chunks``: text, or one ``bytes`` object (written as is);
    ``permissions``: the file's mode (else mkstemp's 0600)."""
    if os.path.exists(path) and not os.path.isfile(path):
        _write(os.open(path, os.O_WRONLY), chunks)
        return
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=".sockguard-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        _write(fd, chunks)
        if permissions is not None:
            os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write(fd: int, chunks: Iterable[str] | bytes) -> None:
    if isinstance(chunks, bytes):
        with os.fdopen(fd, "wb") as fh:
            fh.write(chunks)
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(chunks)
