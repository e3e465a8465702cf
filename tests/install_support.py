"""A regular (non-editable, byte-compiled) install of this checkout, for measuring what a guarded process loads.

An editable install adds an import finder to every process, which loads ``re``, ``contextlib`` and ``__future__``
into plain and guarded processes alike: a module-list check or a start-up benchmark run there would not see the
guard bring them in. So the files pip installs (the ``sockguard`` package, and the sitecustomize as
``sockguard/_site``: see pyproject.toml) are copied into a scratch venv's site-packages and byte-compiled, as pip
does. Used by tests/test_activation.py and benchmarks/startup.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def regular_install(directory: str) -> tuple[str, str]:
    """``(python, sitecustomize directory)`` of a venv made in ``directory`` with this checkout installed. Run it
    without ``PYTHONPYCACHEPREFIX`` (the benchmarks set one): its bytecode is in ``__pycache__``, as pip leaves it."""
    venv = os.path.join(directory, "regular-install")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    package = os.path.join(purelib, "sockguard")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.c", "*.o")
    shutil.copytree(os.path.join(ROOT, "sockguard"), package, ignore=skip)
    shutil.copytree(os.path.join(ROOT, "sitecustomize"), os.path.join(package, "_site"), ignore=skip)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}  # __pycache__ beside the sources
    subprocess.run([python, "-m", "compileall", "-q", package], env=env, check=True, stdout=subprocess.DEVNULL)
    return python, os.path.join(package, "_site")


def run_tree_environment(python: str, cwd: str, env: dict[str, str]) -> dict[str, str]:
    """The environment ``sockguard run --allow 127.0.0.1`` gives the processes of its tree (read from a child)."""
    code = "import os, json; print(json.dumps(dict(os.environ)))"
    out = subprocess.run(
        [python, "-m", "sockguard", "run", "--allow", "127.0.0.1", "--", python, "-c", code],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, str] = json.loads(out.stdout)
    assert found.get("SOCKGUARD_PINNED") and found.get("PYTHONPATH"), "sockguard run set no pinned configuration"
    return found
