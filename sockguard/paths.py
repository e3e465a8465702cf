"""Where the activation directory lives (a checkout or an installed wheel)."""

from __future__ import annotations

import os


def sitecustomize_dir() -> str:
    """The directory to put on PYTHONPATH to guard every Python process."""
    package = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(os.path.dirname(package), "sitecustomize"), os.path.join(package, "_site")):
        if os.path.isfile(os.path.join(candidate, "sitecustomize.py")):
            return candidate
    raise FileNotFoundError("sockguard: the sitecustomize directory is missing from this installation")
