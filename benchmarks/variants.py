"""Worker side: put one variant in force in this process.

``bare``           nothing: the unguarded baseline.
``hook``           a Python audit hook that returns at once: the floor any audit-hook guard pays.
``pytest-socket``  pytest-socket's ``socket_allow_hosts`` (its functions called directly, no pytest run).
``guard``          ``sockguard.install(...)`` as shipped (circuit breaker on, no decision log).
``guard-log``      the same with the JSON-lines decision log enabled.
``guard-nobreaker`` the guard with the circuit breaker off: what the breaker's check costs per connect.
``guard-quiet``    breaker off and the ``sockguard`` logger silenced: the decision alone (blocked connects).
``<guard variant>-python``  the same with ``SOCKGUARD_ACCELERATOR=0``: the pure-Python floor and wrappers (the
                   "accelerator off" column; issue 16).
"""

from __future__ import annotations

import os
import sys
from typing import Any

BASE_VARIANTS = ("bare", "hook", "pytest-socket", "guard", "guard-log", "guard-nobreaker", "guard-quiet")
VARIANTS = BASE_VARIANTS + tuple(f"{v}-python" for v in BASE_VARIANTS if v.startswith("guard"))


def _noop_hook(event: str, args: tuple[Any, ...]) -> None:
    pass


def apply(variant: str, allow: list[str], *, pytest_socket_allow: list[str] | None = None, **guard: Any) -> Any:
    """Put ``variant`` in force; returns the guard's State for guard variants, else None."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (one of {', '.join(VARIANTS)})")
    if variant.endswith("-python"):  # before sockguard is imported: the accelerator is decided once per process
        os.environ["SOCKGUARD_ACCELERATOR"] = "0"
        variant = variant.removesuffix("-python")
    if variant == "hook":
        sys.addaudithook(_noop_hook)
    elif variant == "pytest-socket":
        import pytest_socket

        pytest_socket.socket_allow_hosts(list(pytest_socket_allow or allow))
    elif variant.startswith("guard"):
        import sockguard
        from sockguard import guard as guard_module

        if variant == "guard-log" and not guard.get("log"):
            raise ValueError("guard-log needs log=PATH")
        options = {"allow_loopback": False, **guard}
        if variant != "guard-log":
            options.pop("log", None)
        if variant in ("guard-nobreaker", "guard-quiet"):
            from sockguard.config import Settings

            settings = Settings(allow=list(allow), breaker={"enabled": False}, **options)
            guard_module.install(guard_module.state_from_settings(settings))
            if variant == "guard-quiet":
                import logging

                logging.getLogger("sockguard").setLevel(logging.CRITICAL)
        else:
            sockguard.install(allow=allow, from_environment=False, **options)
        return guard_module.current()
    return None
