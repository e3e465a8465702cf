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


def write_atomically(path: str, chunks: Iterable[str]) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file. A special file
    (``/dev/null``, a FIFO) is written directly."""
    if os.path.exists(path) and not os.path.isfile(path):
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(chunks)
        return
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=".sockguard-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(chunks)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
