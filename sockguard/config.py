"""Settings from TOML and the environment.

Sources, first found wins for the file: ``SOCKGUARD_CONFIG``, else
``sockguard.toml`` in the working directory, else ``[tool.sockguard]`` in
``pyproject.toml`` there. Environment variables extend the lists and override
the scalars. Every problem raises ConfigError naming the source, key and value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from sockguard.errors import ConfigError
from sockguard.rules import RuleError, parse_rule, split_rules

MODES = ("enforce", "monitor", "off")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

#: Keys a config file may hold at top level; tables own their own validation.
KNOWN_KEYS = {"mode", "allow", "deny", "allow_loopback", "allow_unix", "log", "resolver", "breaker", "pytest"}


class Settings:
    """Everything configurable, after the file and the environment are merged. A plain class, not a
    dataclass: ``dataclasses`` (with ``inspect``) would add ~10 ms to every process's first socket use."""

    def __init__(
        self,
        *,
        mode: str = "enforce",
        allow: list[str] | None = None,
        deny: list[str] | None = None,
        allow_loopback: bool = True,
        allow_unix: bool = True,
        log: str | None = None,
        resolver: list[str] | None = None,
        resolver_options: dict[str, Any] | None = None,
        breaker: dict[str, Any] | None = None,
        source: str = "defaults",
    ) -> None:
        self.mode = mode
        self.allow = list(allow or ())
        self.deny = list(deny or ())
        self.allow_loopback = allow_loopback
        self.allow_unix = allow_unix
        self.log = log
        self.resolver = resolver  # None = the system resolver; else canonical "ADDR:PORT" nameservers
        self.resolver_options = dict(resolver_options or {})  # timeout, attempts... (sockguard/resolver.py)
        self.breaker = dict(breaker or {})
        self.source = source  # where the file part came from, for messages

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    def build_policy(self):  # -> Policy, imported lazily to keep this module light
        from sockguard.policy import Policy

        return Policy(self.allow, self.deny, allow_loopback=self.allow_loopback, allow_unix=self.allow_unix)

    def to_env(self) -> dict[str, str]:
        """The same settings as environment variables, for child processes."""
        env = {
            "SOCKGUARD_MODE": self.mode,
            "SOCKGUARD_ALLOW": ",".join(self.allow),
            "SOCKGUARD_DENY": ",".join(self.deny),
            "SOCKGUARD_ALLOW_LOOPBACK": "1" if self.allow_loopback else "0",
            "SOCKGUARD_ALLOW_UNIX": "1" if self.allow_unix else "0",
        }
        if self.log:
            env["SOCKGUARD_LOG"] = self.log
        if self.resolver:
            env["SOCKGUARD_RESOLVER"] = ",".join(self.resolver)
            env.update({f"SOCKGUARD_RESOLVER_{k.upper()}": str(v) for k, v in self.resolver_options.items()})
        for key, value in self.breaker.items():
            var = "SOCKGUARD_BREAKER" if key == "enabled" else f"SOCKGUARD_BREAKER_{key.upper()}"
            env[var] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env


def _read_toml(path: str) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"sockguard: config file {path} does not exist", source=path) from None
    except OSError as exc:
        raise ConfigError(f"sockguard: cannot read config file {path}: {exc}", source=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sockguard: {path} is not valid TOML: {exc}", source=path) from None


def find_config_file(environ: Mapping[str, str], cwd: str) -> tuple[str, dict[str, Any]] | None:
    """(source description, table) of the config file in force, if any."""
    explicit = environ.get("SOCKGUARD_CONFIG")
    if explicit:
        data = _read_toml(explicit)
        if os.path.basename(explicit) == "pyproject.toml":
            return f"{explicit} [tool.sockguard]", _tool_table(data, explicit)
        return explicit, data
    local = os.path.join(cwd, "sockguard.toml")
    if os.path.exists(local):
        return local, _read_toml(local)
    pyproject = os.path.join(cwd, "pyproject.toml")
    if os.path.exists(pyproject):
        with open(pyproject, "rb") as fh:
            if b"sockguard" not in fh.read():  # skip the TOML parse for unrelated projects
                return None
        table = _tool_table(_read_toml(pyproject), pyproject)
        if table:
            return f"{pyproject} [tool.sockguard]", table
    return None


def _tool_table(data: dict[str, Any], path: str) -> dict[str, Any]:
    table = data.get("tool", {}).get("sockguard", {})
    if not isinstance(table, dict):
        raise ConfigError(f"sockguard: {path}: [tool.sockguard] must be a table", source=path)
    return table


def config_path(source: str) -> str | None:
    """The file behind a settings source description, if any."""
    path = source.removesuffix(" [tool.sockguard]")
    return path if path != "defaults" else None


def _bool(value: object, source: str, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(
        f"sockguard: {source}: {key} must be true/false (or 1/0), got {value!r}", source=source, key=key, value=value
    )


def _rules(value: object, source: str, key: str) -> list[str]:
    if isinstance(value, str):
        items = split_rules(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value if v.strip()]
    else:
        raise ConfigError(
            f"sockguard: {source}: {key} must be a list of rule strings, got {value!r}",
            source=source,
            key=key,
            value=value,
        )
    for item in items:
        try:
            parse_rule(item)
        except RuleError as exc:
            raise ConfigError(f"sockguard: {source}: {key}: {exc}", source=source, key=key, value=item) from None
    return items


def _mode(value: object, source: str, key: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in MODES:
        raise ConfigError(
            f"sockguard: {source}: {key} must be one of {', '.join(MODES)}, got {value!r}",
            source=source,
            key=key,
            value=value,
        )
    return value.strip().lower()


def _resolver(value: object, source: str, key: str) -> list[str] | None:
    from sockguard.resolver import normalize_servers

    return normalize_servers(value, source, key)


def unknown_key(source: str, key: str, known: Iterable[str], value: object = None) -> ConfigError:
    """The error for a key nobody reads: a typo must not leave a setting silently unused."""
    return ConfigError(
        f"sockguard: {source}: unknown key {key!r} (known: {', '.join(known)})", source=source, key=key, value=value
    )


def apply_table(settings: Settings, table: Mapping[str, Any], source: str) -> None:
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise unknown_key(source, unknown[0], sorted(KNOWN_KEYS))
    if "mode" in table:
        settings.mode = _mode(table["mode"], source, "mode")
    if "allow" in table:
        settings.allow = _rules(table["allow"], source, "allow")
    if "deny" in table:
        settings.deny = _rules(table["deny"], source, "deny")
    for key in ("allow_loopback", "allow_unix"):
        if key in table:
            setattr(settings, key, _bool(table[key], source, key))
    if "log" in table:
        if not isinstance(table["log"], str):
            raise ConfigError(f"sockguard: {source}: log must be a file path string", source=source, key="log")
        log = table["log"] or None
        base = config_path(source)
        if log and base and not os.path.isabs(log):
            log = os.path.join(os.path.dirname(os.path.abspath(base)), log)
        settings.log = log
    if "resolver" in table:
        if isinstance(table["resolver"], dict):  # [resolver] servers = [...], timeout = ..., attempts = ...
            from sockguard.resolver import parse_table as resolver_table

            settings.resolver, settings.resolver_options = resolver_table(table["resolver"], source)
        else:
            settings.resolver = _resolver(table["resolver"], source, "resolver")
    if "breaker" in table:
        if not isinstance(table["breaker"], dict):
            raise ConfigError(f"sockguard: {source}: [breaker] must be a table", source=source, key="breaker")
        from sockguard.breaker import parse_table

        settings.breaker = parse_table(table["breaker"], source)


def apply_env(settings: Settings, environ: Mapping[str, str]) -> None:
    get = environ.get
    if get("SOCKGUARD_MODE"):
        settings.mode = _mode(get("SOCKGUARD_MODE"), "environment", "SOCKGUARD_MODE")
    if get("SOCKGUARD_ALLOW"):
        settings.allow = settings.allow + _rules(get("SOCKGUARD_ALLOW"), "environment", "SOCKGUARD_ALLOW")
    if get("SOCKGUARD_DENY"):
        settings.deny = settings.deny + _rules(get("SOCKGUARD_DENY"), "environment", "SOCKGUARD_DENY")
    for key, var in (("allow_loopback", "SOCKGUARD_ALLOW_LOOPBACK"), ("allow_unix", "SOCKGUARD_ALLOW_UNIX")):
        if get(var):
            setattr(settings, key, _bool(get(var), "environment", var))
    if var_log := get("SOCKGUARD_LOG"):
        settings.log = var_log
    if get("SOCKGUARD_RESOLVER"):
        settings.resolver = _resolver(get("SOCKGUARD_RESOLVER"), "environment", "SOCKGUARD_RESOLVER")
    if any(var.startswith("SOCKGUARD_RESOLVER_") for var in environ):
        from sockguard.resolver import parse_env as resolver_env

        settings.resolver_options = {**settings.resolver_options, **resolver_env(environ)}
    if any(var.startswith("SOCKGUARD_BREAKER") for var in environ):  # SOCKGUARD_BREAKER=off, SOCKGUARD_BREAKER_<KEY>
        from sockguard.breaker import parse_env

        settings.breaker = {**settings.breaker, **parse_env(environ)}


def with_flags(
    environ: Mapping[str, str], *, config: str | None = None, allow: Iterable[str] = (), deny: Iterable[str] = ()
) -> dict[str, str]:
    """``environ`` plus the command line's ``--config``/``--allow``/``--deny``, as the SOCKGUARD_* variables
    they stand for (so the flags and the environment follow one precedence everywhere)."""
    env = dict(environ)
    if config:
        env["SOCKGUARD_CONFIG"] = os.path.abspath(config)
    for values, var in ((list(allow), "SOCKGUARD_ALLOW"), (list(deny), "SOCKGUARD_DENY")):
        if values:
            env[var] = ",".join(filter(None, [env.get(var, ""), *values]))
    return env


def load_settings(environ: Mapping[str, str] | None = None, cwd: str | None = None) -> Settings:
    """Settings in force for this process. Raises ConfigError."""
    environ = os.environ if environ is None else environ
    settings = Settings()
    found = find_config_file(environ, cwd or os.getcwd())
    if found is not None:
        source, table = found
        settings.source = source
        apply_table(settings, table, source)
    apply_env(settings, environ)
    return settings
