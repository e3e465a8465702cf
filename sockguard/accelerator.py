"""Whether this process uses the C accelerator (``sockguard._accel``, built from native/sg_accel.c; issue 16).

The accelerator is optional: the package installs without it when it cannot be built (``_accel.unavailable`` says
why), and ``SOCKGUARD_ACCELERATOR=0`` (or false/no/off) turns it off. Either way the pure-Python floor and wrappers
decide exactly the same; only the cost differs. Decided once per process, at the first call (the audit hook is
installed then): changing the variable later changes nothing here, and a child decides for itself. Imports only
``os`` (and no ``__future__``: annotations are strings): this runs on the start-up path.
"""

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_OFF_VALUES = ("0", "false", "no", "off")
_decided: "list[Any]" = []  # [module or None, why it is off]


def accelerator() -> "Any":
    """The ``sockguard._accel`` module, or None when it is off or was not built."""
    if not _decided:
        setting = os.environ.get("SOCKGUARD_ACCELERATOR", "").strip().lower()
        module: Any = None
        if setting in _OFF_VALUES:
            why = f"off (SOCKGUARD_ACCELERATOR={setting})"
        else:
            try:
                from sockguard import _accel
            except ImportError as exc:
                why = f"not available: {_unavailable() or exc}"
            else:
                module, why = _accel, "on"
        _decided[:] = [module, why]
    return _decided[0]


def status() -> str:
    """``on``, or why the accelerator is off (``sockguard status``)."""
    accelerator()
    return str(_decided[1])


def _unavailable() -> "str | None":
    """What the build left in ``_accel.unavailable`` when it could not build the extension."""
    try:
        with open(os.path.join(os.path.dirname(__file__), "_accel.unavailable"), encoding="utf-8") as f:
            return f.read().strip()[:500] or None
    except OSError:
        return None
