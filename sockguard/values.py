"""Parsers for configuration values that every source shares (file, environment, flags, pytest ini).

One parser per kind of value, so ``"on"`` means the same thing in ``sockguard.toml``, in
``SOCKGUARD_ALLOW_LOOPBACK``, in ``[breaker]`` and in the pytest plugin. Every function raises
:class:`~sockguard.errors.ConfigError` naming the source, the key and the value.
"""

from __future__ import annotations

from sockguard.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

#: Enforcement modes: block, log what would be blocked, or nothing at all.
MODES = ("enforce", "monitor", "off")
TRUE_WORDS = frozenset(("1", "true", "yes", "on"))
FALSE_WORDS = frozenset(("0", "false", "no", "off"))


def parse_bool(value: object, source: str, key: str) -> bool:
    """``True``/``False`` or one of the words 1/0, true/false, yes/no, on/off (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ConfigError(
        f"sockguard: {source}: {key} must be true/false (or on/off, 1/0), got {value!r}",
        source=source,
        key=key,
        value=value,
    )


def parse_mode(value: object, source: str, key: str) -> str:
    """One of :data:`MODES`, any case."""
    if isinstance(value, str) and value.strip().lower() in MODES:
        return value.strip().lower()
    raise ConfigError(
        f"sockguard: {source}: {key} must be one of {', '.join(MODES)}, got {value!r}",
        source=source,
        key=key,
        value=value,
    )


#: Levels a request event may go out at on the ``sockguard`` logger: allowed traffic stays below INFO unless asked.
LOG_LEVELS = {"debug": 10, "info": 20}


def parse_log_level(value: object, source: str, key: str) -> int:
    """``"debug"`` or ``"info"`` (any case) as a logging level number."""
    if isinstance(value, str) and value.strip().lower() in LOG_LEVELS:
        return LOG_LEVELS[value.strip().lower()]
    raise ConfigError(
        f"sockguard: {source}: {key} must be one of {', '.join(LOG_LEVELS)}, got {value!r}",
        source=source,
        key=key,
        value=value,
    )


def unknown_key(source: str, key: str, known: Iterable[str], value: object = None) -> ConfigError:
    """The error for a key nobody reads: a typo must not leave a setting silently unused."""
    return ConfigError(
        f"sockguard: {source}: unknown key {key!r} (known: {', '.join(known)})", source=source, key=key, value=value
    )
