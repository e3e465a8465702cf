"""The ``[breaker]`` table and ``SOCKGUARD_BREAKER*`` variables: the retry-storm breaker's settings.

Parsed here, apart from the breaker itself, so that reading a configuration never loads the breaker
(and the breaker never imports the configuration). docs/breaker.md explains each default.
"""

from __future__ import annotations

import math

from sockguard.errors import ConfigError
from sockguard.values import parse_bool, unknown_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

#: Defaults chosen so that a healthy service never trips them (docs/breaker.md explains each number).
DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "threshold": 10,  # consecutive failed/blocked attempts to one address:port ...
    "window": 300.0,  # ... within this many seconds trip the breaker (0 threshold = never)
    "cooldown": 5.0,  # first fail-fast period; doubles after each failed probe ...
    "max_cooldown": 300.0,  # ... up to this
    "fanout_addresses": 100,  # distinct destinations within fanout_window (0 = off)
    "fanout_ports": 50,  # distinct ports on one address within fanout_window (0 = off)
    "fanout_window": 60.0,
    "fanout_action": "alert",  # or "block": refuse new destinations for fanout_cooldown
    "fanout_cooldown": 300.0,
    "rate": 0.0,  # new connections per second per address:port (0 = no limit)
    "burst": 10,  # token bucket size for rate
    "loopback": False,  # also watch loopback and this host's own addresses (they cannot get the host reported)
}
_KINDS = {
    "enabled": "bool",
    "threshold": "count",
    "window": "seconds",
    "cooldown": "seconds",
    "max_cooldown": "seconds",
    "fanout_addresses": "count",
    "fanout_ports": "count",
    "fanout_window": "seconds",
    "fanout_action": "action",
    "fanout_cooldown": "seconds",
    "rate": "rate",
    "burst": "positive",
    "loopback": "bool",
}
_WHAT = {
    "count": "a whole number >= 0 (0 turns the check off)",
    "positive": "a whole number >= 1",
    "seconds": "a number of seconds > 0",
    "rate": "a number >= 0 (connections per second; 0 = no limit)",
    "action": '"alert" or "block"',
}
ENV_PREFIX = "SOCKGUARD_BREAKER"


def _value(kind: str, value: Any, source: str, name: str) -> Any:
    """One setting, converted and checked; strings are accepted (environment)."""
    if kind == "bool":
        return parse_bool(value, source, name)
    text = value.strip().lower() if isinstance(value, str) else None
    result: Any = None
    if kind == "action":
        if text in ("alert", "block"):
            result = text
    elif kind in ("count", "positive"):
        if isinstance(value, int) and not isinstance(value, bool):
            result = value
        elif text is not None and text.isdigit():
            result = int(text)
        if result is not None and result < (1 if kind == "positive" else 0):
            result = None
    else:  # seconds, rate
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif text:
            try:
                number = float(text)
            except ValueError:
                number = None
        if number is not None and math.isfinite(number) and (number > 0 or (kind == "rate" and number == 0)):
            result = number
    if result is None:
        raise ConfigError(
            f"sockguard: {source}: {name} must be {_WHAT[kind]}, got {value!r}", source=source, key=name, value=value
        )
    return result


def parse_table(table: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The ``[breaker]`` table, checked key by key. Raises ConfigError."""
    settings = {}
    for key, value in table.items():
        if key not in _KINDS:
            raise unknown_key(source, f"breaker.{key}", _KINDS, value)
        settings[key] = _value(_KINDS[key], value, source, f"breaker.{key}")
    return settings


def parse_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``SOCKGUARD_BREAKER`` (on/off) and ``SOCKGUARD_BREAKER_<KEY>``. A misspelt variable is an error,
    not silently ignored."""
    settings = {}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or not value.strip():
            continue
        key = "enabled" if var == ENV_PREFIX else var[len(ENV_PREFIX) + 1 :].lower()
        if var != ENV_PREFIX and (not var.startswith(ENV_PREFIX + "_") or key not in _KINDS or key == "enabled"):
            known = ", ".join(f"{ENV_PREFIX}_{k.upper()}" for k in _KINDS if k != "enabled")
            raise ConfigError(
                f"sockguard: environment: unknown variable {var} (known: {ENV_PREFIX}, {known})",
                source="environment",
                key=var,
                value=value,
            )
        settings[key] = _value(_KINDS[key], value, "environment", var)
    return settings


def resolve(table: Mapping[str, Any], source: str = "[breaker]") -> dict[str, Any]:
    """All settings (defaults filled in), checked together."""
    settings = {**DEFAULTS, **parse_table(table, source)}
    if settings["max_cooldown"] < settings["cooldown"]:
        raise ConfigError(
            f"sockguard: {source}: breaker.max_cooldown ({settings['max_cooldown']:g}) must be at least "
            f"breaker.cooldown ({settings['cooldown']:g})",
            source=source,
            key="breaker.max_cooldown",
            value=settings["max_cooldown"],
        )
    return settings
