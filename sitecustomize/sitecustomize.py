"""sockguard activation: put this directory on PYTHONPATH.

Every Python process that starts with it is guarded (``python -m sockguard
pythonpath`` prints the directory). It then runs the next ``sitecustomize``
further down ``sys.path``, so it never hides one a distribution or venv ships.
"""

import os  # (loaded already: site imports it)


def _sockguard_activate() -> None:
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        from sockguard import _hook
    except ImportError:
        # A checkout or a copied directory: the package sits next to us.
        parent = os.path.dirname(here)
        if os.path.isdir(os.path.join(parent, "sockguard")):
            sys.path.append(parent)
        try:
            from sockguard import _hook
        except ImportError as exc:
            sys.stderr.write(f"sockguard: cannot import the sockguard package ({exc}); this process is NOT guarded\n")
            return
    _hook.activate()


def _is_here(entry: str, here: os.stat_result) -> bool:
    # One stat() an entry (realpath would lstat every component of every entry, in every process).
    try:
        return os.path.samestat(os.stat(entry or "."), here)
    except (OSError, ValueError):
        return False


def _chain_next_sitecustomize() -> None:
    import sys

    here = os.stat(os.path.dirname(os.path.abspath(__file__)))
    ours = sys.modules.get("sitecustomize")
    saved_path = list(sys.path)
    sys.path[:] = [p for p in sys.path if not _is_here(p, here)]
    sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # noqa: F401  (the next one, if any)
    except ImportError as exc:
        if exc.name != "sitecustomize":  # raised inside the next file: not ours to hide
            raise
    finally:
        sys.path[:] = saved_path
        if ours is not None:
            sys.modules["sitecustomize"] = ours


_sockguard_activate()
_chain_next_sitecustomize()
