"""Keeping the two layers on one policy inside a Python process.

When a preloaded Python process puts another policy in force at run time (``sockguard.install``,
``sockguard.guarded``, the pytest plugin), the native layer must decide with it too, or a C extension would be
held to the start-up policy while Python code is held to the new one. :func:`sync` compiles the state's policy
and hands it to the library already loaded in this process; it does nothing (and imports nothing heavy) when
the library is not the one this process calls.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_library: Any = None  # the loaded library (ctypes.CDLL), False once known to be absent


def _loaded() -> Any:
    global _library
    if _library is None:
        _library = False
        from sockguard.native import library_path

        path = library_path()
        preload = os.environ.get("LD_PRELOAD", "")
        if path and os.path.basename(path) in preload:
            import ctypes

            try:
                lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
            except OSError:
                return False
            if lib.sockguard_native_interposing():
                lib.sockguard_native_replace.argtypes = [
                    ctypes.c_char_p,
                    ctypes.c_size_t,
                    ctypes.c_char_p,
                    ctypes.c_size_t,
                ]
                _library = lib
    return _library


def interposing() -> bool:
    """Whether the preload library is loaded in this process and deciding its calls."""
    return bool(_loaded())


def sync(state: Any) -> None:
    """Put ``state``'s policy (a guard.State) in force in the native layer of this process, if it has one."""
    lib = _loaded()
    if not lib:
        return
    import ctypes

    from sockguard.native.blob import compile_policy
    from sockguard.policy import Policy

    settings = getattr(state, "settings", None)
    if state.error is not None:  # the Python layer blocks everything: so does the native one
        data = compile_policy(Policy(allow_loopback=False), "enforce")
    else:
        data = compile_policy(
            state.policy,
            state.mode,
            nameservers=getattr(settings, "resolver", None) or (),
        )
    err = ctypes.create_string_buffer(200)
    if lib.sockguard_native_replace(data, len(data), err, len(err)) != 0:
        sys.stderr.write(f"sockguard: warning: the native layer kept its previous policy: {err.value.decode()}\n")
