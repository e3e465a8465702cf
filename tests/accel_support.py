"""The accelerator in tests: ``scripts/test`` runs the enforcement tests twice, the second time with
``SOCKGUARD_ACCELERATOR=0`` (pure-Python floor and wrappers), and the outcomes must be the same. A test that starts
a child with a cleaned environment passes this on with :func:`accelerator_env`."""

from __future__ import annotations

import os


def accelerator_env() -> dict[str, str]:
    """``{"SOCKGUARD_ACCELERATOR": ...}`` as this test process has it (nothing when unset)."""
    value = os.environ.get("SOCKGUARD_ACCELERATOR")
    return {} if value is None else {"SOCKGUARD_ACCELERATOR": value}


def accelerated() -> bool:
    """Whether this process's guard runs with the C accelerator."""
    from sockguard.accelerator import accelerator

    return accelerator() is not None
