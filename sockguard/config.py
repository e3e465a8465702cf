"""Settings from TOML and the environment.

Sources, first found wins for the file: ``SOCKGUARD_PINNED`` (the whole configuration, written by ``sockguard
run``), ``SOCKGUARD_CONFIG`` (``none``: no file), else ``sockguard.toml`` in the working directory, else
``[tool.sockguard]`` in ``pyproject.toml`` there. Environment variables extend the lists and override the scalars
(not under a pinned configuration). Every problem raises ConfigError naming the source, key and value.

Loading is two steps kept apart: :func:`sockguard.source.take` fixes *where* the configuration comes from (at
activation, cheaply), :func:`settings_from_source` turns that snapshot into Settings (at the first socket event).
"""

from __future__ import annotations

import errno
import os
import sys

from sockguard import breaker_settings
from sockguard.errors import ConfigError, RuleError
from sockguard.rules import Rule, compile_rules, split_rules
from sockguard.source import PINNED, Source, same_file, take
from sockguard.values import MODES, parse_bool, parse_log_level, parse_mode, unknown_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

__all__ = ["MODES", "ConfigError", "Settings", "load_settings", "with_flags"]

#: Keys a config file may hold at top level; tables own their own validation.
KNOWN_KEYS = {"mode", "allow", "deny", "allow_loopback", "allow_unix", "allow_raw", "log", "log_special", "resolver",
              "breaker", "pytest", "http_events", "http_log_level", "log_query", "allow_runtime_changes"}  # fmt: skip
#: Boolean keys and their variables.
_SWITCHES = (
    ("allow_loopback", "SOCKGUARD_ALLOW_LOOPBACK"),
    ("allow_unix", "SOCKGUARD_ALLOW_UNIX"),
    ("allow_raw", "SOCKGUARD_ALLOW_RAW"),
    ("http_events", "SOCKGUARD_HTTP_EVENTS"),
    ("log_query", "SOCKGUARD_LOG_QUERY"),
    ("log_special", "SOCKGUARD_LOG_SPECIAL"),
    ("allow_runtime_changes", "SOCKGUARD_ALLOW_RUNTIME_CHANGES"),
)
PINNED_FORMAT = 1


class Settings:
    """Everything configurable, after the file and the environment are merged. A plain class, not a
    dataclass: ``dataclasses`` (with ``inspect``) would add ~10 ms to every process's first socket use."""

    def __init__(
        self,
        *,
        mode: str = "enforce",
        allow: Iterable[str | Rule] | None = None,
        deny: Iterable[str | Rule] | None = None,
        allow_loopback: bool = True,
        allow_unix: bool = True,
        allow_raw: bool = False,
        log: str | None = None,
        log_special: bool = False,
        resolver: list[str] | None = None,
        resolver_options: dict[str, Any] | None = None,
        breaker: dict[str, Any] | None = None,
        http_events: bool | None = None,
        http_log_level: int = 10,
        log_query: bool = False,
        allow_runtime_changes: bool = False,
        source: str = "defaults",
    ) -> None:
        self.mode = mode
        #: Rules parsed once, here; the Policy and every tool use these Rule objects (``rule.text`` as written).
        self.allow: list[Rule] = _parsed(allow or (), "allow")
        self.deny: list[Rule] = _parsed(deny or (), "deny")
        self.allow_loopback = allow_loopback
        self.allow_unix = allow_unix
        self.allow_raw = allow_raw  # raw IP and packet sockets (sockguard/rawsockets.py)
        self.log = log
        #: The log may be a FIFO or a device (/dev/stdout): written without ever blocking (sockguard.logfile).
        self.log_special = log_special
        self.resolver = resolver  # None = the system resolver; else canonical "ADDR:PORT" nameservers
        self.resolver_options = dict(resolver_options or {})  # timeout, attempts... (sockguard/resolver.py)
        self.breaker = dict(breaker or {})
        #: HTTP request events (sockguard/http): None = whenever a sink wants them, False = never; the stdlib
        #: logger level they go out at (DEBUG, or INFO for the guardrails' grep-able lines); query strings kept?
        self.http_events = http_events
        self.http_log_level = http_log_level
        self.log_query = log_query
        #: sockguard.install()/uninstall()/guarded() may replace this configuration in a process it guards from
        #: start-up (sockguard.api): off by default, so application code cannot switch the operator's guard off.
        self.allow_runtime_changes = allow_runtime_changes
        self.source = source  # where the file part came from, for messages

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    def build_policy(self):  # -> Policy, imported lazily to keep this module light
        from sockguard.policy import Policy

        return Policy(
            self.allow,
            self.deny,
            allow_loopback=self.allow_loopback,
            allow_unix=self.allow_unix,
            allow_raw=self.allow_raw,
        )

    def extend(self, allow: Iterable[str | Rule] = (), deny: Iterable[str | Rule] = (), where: str = "") -> None:
        """Add rules (strings are parsed; RuleError names ``where`` they came from)."""
        self.allow = self.allow + _parsed(allow, f"{where}allow")
        self.deny = self.deny + _parsed(deny, f"{where}deny")

    def to_env(self) -> dict[str, str]:
        """The same settings as environment variables, for child processes."""
        env = {
            "SOCKGUARD_MODE": self.mode,
            "SOCKGUARD_ALLOW": ",".join(r.text for r in self.allow),
            "SOCKGUARD_DENY": ",".join(r.text for r in self.deny),
            "SOCKGUARD_ALLOW_LOOPBACK": "1" if self.allow_loopback else "0",
            "SOCKGUARD_ALLOW_UNIX": "1" if self.allow_unix else "0",
            "SOCKGUARD_ALLOW_RAW": "1" if self.allow_raw else "0",
        }
        if self.log:
            env["SOCKGUARD_LOG"] = self.log
        if self.log_special:
            env["SOCKGUARD_LOG_SPECIAL"] = "1"
        if self.resolver:
            env["SOCKGUARD_RESOLVER"] = ",".join(self.resolver)
            env.update({f"SOCKGUARD_RESOLVER_{k.upper()}": str(v) for k, v in self.resolver_options.items()})
        if self.http_events is not None:
            env["SOCKGUARD_HTTP_EVENTS"] = "1" if self.http_events else "0"
        if self.http_log_level != 10:
            env["SOCKGUARD_HTTP_LOG_LEVEL"] = "info"
        if self.log_query:
            env["SOCKGUARD_LOG_QUERY"] = "1"
        if self.allow_runtime_changes:
            env["SOCKGUARD_ALLOW_RUNTIME_CHANGES"] = "1"
        for key, value in self.breaker.items():
            var = "SOCKGUARD_BREAKER" if key == "enabled" else f"SOCKGUARD_BREAKER_{key.upper()}"
            env[var] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env

    def to_pinned(self, file: str | None) -> dict[str, Any]:
        """The whole configuration as a JSON object (``sockguard run`` pins it for its process tree); ``file`` is the
        config file it came from, if any (a child that finds another one in its directory says it ignores it)."""
        return {
            "sockguard_pinned": PINNED_FORMAT,
            "source": self.source,
            "file": file,
            "mode": self.mode,
            "allow": [rule.text for rule in self.allow],
            "deny": [rule.text for rule in self.deny],
            "allow_loopback": self.allow_loopback,
            "allow_unix": self.allow_unix,
            "allow_raw": self.allow_raw,
            "log": self.log,
            "log_special": self.log_special,
            "resolver": self.resolver,
            "resolver_options": self.resolver_options,
            "breaker": self.breaker,
            "http_events": self.http_events,
            "http_log_level": "info" if self.http_log_level == 20 else "debug",
            "log_query": self.log_query,
            "allow_runtime_changes": self.allow_runtime_changes,
        }

    @classmethod
    def from_pinned(cls, data: Any, where: str) -> Settings:
        """Settings from :meth:`to_pinned`'s object, validated again like a config file (ConfigError names
        ``where``)."""
        if not isinstance(data, dict) or data.get("sockguard_pinned") != PINNED_FORMAT:
            raise ConfigError(f"sockguard: {where} is not a configuration pinned by this sockguard", source=where)
        table = {key: data[key] for key in KNOWN_KEYS if data.get(key) is not None}
        if "resolver" in table:
            table["resolver"] = {"servers": table.pop("resolver"), **(data.get("resolver_options") or {})}
        settings = cls(source=f"pinned by sockguard run ({data.get('source', 'defaults')}; {where})")
        apply_table(settings, table, where)
        settings.log = data.get("log")  # absolute already
        return settings


def _parsed(rules: Iterable[str | Rule], where: str) -> list[Rule]:
    if isinstance(rules, (str, bytes)):
        raise RuleError(f"{where}: expected a list of rules, got the string {rules!r}")
    rules = list(rules)
    if all(isinstance(r, Rule) for r in rules):
        return rules  # type: ignore[return-value]
    return [r if isinstance(r, Rule) else compile_rules([r], where)[0] for r in rules]


#: Errors reading a file that say nothing about the file (no descriptor or memory left, interrupted): they
#: propagate as OSError, so the loader retries at the next socket event instead of failing closed for good.
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name) for name in ("EMFILE", "ENFILE", "ENOMEM", "EINTR", "EAGAIN", "ENOBUFS", "EIO")
)


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ConfigError(f"sockguard: config file {path} does not exist", source=path) from None
    except OSError as exc:
        if exc.errno in _TRANSIENT_ERRNOS:
            raise
        raise ConfigError(f"sockguard: cannot read config file {path}: {exc}", source=path) from None


def _parse_toml(path: str, data: bytes) -> dict[str, Any]:
    """The file's table. The plain TOML config files are written in is read without ``tomllib`` (importing it
    costs more than the rest of the guard's first socket use); anything else goes to tomllib (sockguard.toml_subset
    never reads a document differently: it reads it exactly as tomllib would, or declines)."""
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:  # TOML is UTF-8
        raise ConfigError(f"sockguard: {path} is not valid TOML: not UTF-8 ({exc.reason} at byte {exc.start})",
                          source=path) from None  # fmt: skip
    from sockguard import toml_subset  # (a config file's first read only)

    table = toml_subset.loads(text)
    if table is not None:
        return table
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sockguard: {path} is not valid TOML: {exc}", source=path) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(
            f"sockguard: {path} is not valid TOML for sockguard: nested too deeply", source=path
        ) from None


def _file_table(path: str, data: bytes) -> tuple[str, dict[str, Any]] | None:
    """(source description, table) of a config file's bytes: a ``pyproject.toml`` means its ``[tool.sockguard]``
    table (None when it has none)."""
    parsed = _parse_toml(path, data)
    if os.path.basename(path) != "pyproject.toml":
        return path, parsed
    table = _tool_table(parsed, path)
    return (f"{path} [tool.sockguard]", table) if table else None


def _source_file(found: Source) -> tuple[str, dict[str, Any]] | None:
    if found.path is None:
        return None
    if found.data is None:
        # The read at activation failed: the same file once more. A transient failure (no descriptor left, ...)
        # propagates as OSError, so the loader retries at the next socket event; any other is a ConfigError.
        found.data = _read_bytes(found.path)
    return _file_table(found.path, found.data)


def find_config_file(environ: Mapping[str, str], cwd: str) -> tuple[str, dict[str, Any]] | None:
    """(source description, table) of the config file in force, if any (not a pinned configuration)."""
    found = take({k: v for k, v in environ.items() if k != PINNED}, cwd)
    return _source_file(found)


def _tool_table(data: dict[str, Any], path: str) -> dict[str, Any]:
    """``[tool.sockguard]``, whatever shape the file has: ``tool = "sockguard"`` is an error naming the key."""
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(
            f"sockguard: {path}: tool must be a table ([tool.sockguard]), got {tool!r}",
            source=path,
            key="tool",
            value=tool,
        )
    table = tool.get("sockguard", {})
    if not isinstance(table, dict):
        raise ConfigError(
            f"sockguard: {path}: [tool.sockguard] must be a table, got {table!r}", source=path, key="tool.sockguard"
        )
    return table


def config_path(source: str) -> str | None:
    """The file behind a settings source description, if any."""
    path = source.removesuffix(" [tool.sockguard]")
    return path if path != "defaults" else None


def _rules(value: object, source: str, key: str) -> list[Rule]:
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
    parsed = []
    for item in items:
        try:
            parsed.extend(compile_rules([item], f"sockguard: {source}: {key}"))
        except RuleError as exc:
            raise ConfigError(str(exc), source=source, key=key, value=item) from None
    return parsed


def apply_table(settings: Settings, table: Mapping[str, Any], source: str) -> None:
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise unknown_key(source, unknown[0], sorted(KNOWN_KEYS))
    if "mode" in table:
        settings.mode = parse_mode(table["mode"], source, "mode")
    if "allow" in table:
        settings.allow = _rules(table["allow"], source, "allow")
    if "deny" in table:
        settings.deny = _rules(table["deny"], source, "deny")
    for key, _var in _SWITCHES:
        if key in table:
            setattr(settings, key, parse_bool(table[key], source, key))
    if "http_log_level" in table:
        settings.http_log_level = parse_log_level(table["http_log_level"], source, "http_log_level")
    if "log" in table:
        if not isinstance(table["log"], str):
            raise ConfigError(f"sockguard: {source}: log must be a file path string", source=source, key="log")
        log = table["log"] or None
        base = config_path(source)
        if log and base and not os.path.isabs(log):
            log = os.path.join(os.path.dirname(os.path.abspath(base)), log)
        settings.log = log
    if "resolver" in table:
        from sockguard import resolver_settings  # (only a pinned resolver needs it)

        if isinstance(table["resolver"], dict):  # [resolver] servers = [...], timeout = ..., attempts = ...
            settings.resolver, settings.resolver_options = resolver_settings.parse_table(table["resolver"], source)
        else:
            settings.resolver = resolver_settings.normalize_servers(table["resolver"], source, "resolver")
    if "pytest" in table and not isinstance(table["pytest"], dict):  # read by the pytest plugin
        raise ConfigError(f"sockguard: {source}: [pytest] must be a table", source=source, key="pytest")
    if "breaker" in table:
        if not isinstance(table["breaker"], dict):
            raise ConfigError(f"sockguard: {source}: [breaker] must be a table", source=source, key="breaker")
        settings.breaker = breaker_settings.parse_table(table["breaker"], source)


def apply_env(settings: Settings, environ: Mapping[str, str]) -> None:
    get = environ.get
    if get("SOCKGUARD_MODE"):
        settings.mode = parse_mode(get("SOCKGUARD_MODE"), "environment", "SOCKGUARD_MODE")
    if get("SOCKGUARD_ALLOW"):
        settings.allow = settings.allow + _rules(get("SOCKGUARD_ALLOW"), "environment", "SOCKGUARD_ALLOW")
    if get("SOCKGUARD_DENY"):
        settings.deny = settings.deny + _rules(get("SOCKGUARD_DENY"), "environment", "SOCKGUARD_DENY")
    for key, var in _SWITCHES:
        if get(var):
            setattr(settings, key, parse_bool(get(var), "environment", var))
    if get("SOCKGUARD_HTTP_LOG_LEVEL"):
        settings.http_log_level = parse_log_level(
            get("SOCKGUARD_HTTP_LOG_LEVEL"), "environment", "SOCKGUARD_HTTP_LOG_LEVEL"
        )
    if var_log := get("SOCKGUARD_LOG"):
        settings.log = var_log
    if get("SOCKGUARD_RESOLVER"):
        from sockguard import resolver_settings  # (only a pinned resolver needs it)

        settings.resolver = resolver_settings.normalize_servers(
            get("SOCKGUARD_RESOLVER"), "environment", "SOCKGUARD_RESOLVER"
        )
    if any(var.startswith("SOCKGUARD_RESOLVER_") for var in environ):
        from sockguard import resolver_settings

        settings.resolver_options = {**settings.resolver_options, **resolver_settings.parse_env(environ)}
    if any(var.startswith("SOCKGUARD_BREAKER") for var in environ):  # SOCKGUARD_BREAKER=off, SOCKGUARD_BREAKER_<KEY>
        settings.breaker = {**settings.breaker, **breaker_settings.parse_env(environ)}


def with_flags(
    environ: Mapping[str, str], *, config: str | None = None, allow: Iterable[str] = (), deny: Iterable[str] = ()
) -> dict[str, str]:
    """``environ`` plus the command line's ``--config``/``--allow``/``--deny``, as the SOCKGUARD_* variables
    they stand for (so the flags and the environment follow one precedence everywhere)."""
    env = dict(environ)
    if config:
        env["SOCKGUARD_CONFIG"] = os.path.abspath(config)
        env.pop(PINNED, None)  # a tool given --config reads that file, even inside a `sockguard run` tree
    for values, var in ((list(allow), "SOCKGUARD_ALLOW"), (list(deny), "SOCKGUARD_DENY")):
        if values:
            env[var] = ",".join(filter(None, [env.get(var, ""), *values]))
    return env


def load_settings(environ: Mapping[str, str] | None = None, cwd: str | None = None) -> Settings:
    """Settings a process started now with ``environ`` in ``cwd`` would enforce. Raises ConfigError."""
    return settings_from_source(take(os.environ if environ is None else environ, cwd or os.getcwd()))


def settings_from_source(found: Source) -> Settings:
    """Settings from a configuration source taken at activation (:func:`sockguard.source.take`): the pinned file of
    a ``sockguard run`` tree, or the config file's bytes and the ``SOCKGUARD_*`` variables as they were then.
    Raises ConfigError."""
    if found.pinned:
        assert found.path is not None
        if found.data is None:
            found.data = _read_bytes(found.path)  # (a transient failure propagates: the loader retries)
        settings, file = _pinned(found.path, found.data)
        _ignored_local_file(found, settings_file=file)
        return settings
    settings = Settings()
    located = _source_file(found)
    if located is not None:
        settings.source, table = located
        apply_table(settings, table, settings.source)
    apply_env(settings, found.environ)
    _ignored_local_file(found, settings_file=found.path)
    return settings


def _pinned(path: str, data: bytes) -> tuple[Settings, str | None]:
    """The pinned Settings and the config file they were resolved from (if any)."""
    try:
        parsed = _json_value(data)
    except ValueError as exc:
        raise ConfigError(
            f"sockguard: {path} (SOCKGUARD_PINNED) is not a pinned configuration: {exc}", source=path
        ) from None
    settings = Settings.from_pinned(parsed, path)
    return settings, parsed.get("file")


def _json_value(data: bytes) -> Any:
    """``json.loads(data)``, without importing ``json`` (and ``re`` with it) when the text is plain UTF-8 JSON: the
    pinned file of every process of a ``sockguard run`` tree is read at its first socket use. The same C scanner
    ``json.loads`` uses, with json's own defaults; anything it does not read whole (an error, a BOM, another
    encoding) goes to ``json.loads``, whose answer or error message it is."""
    try:
        import _json
    except ImportError:  # an interpreter without json's C accelerator
        _json = None  # type: ignore[assignment]
    if _json is not None:
        try:
            text = data.decode()
            start = len(text) - len(text.lstrip(" \t\n\r"))
            value, end = _json.make_scanner(_json_defaults())(text, start)
            if not text[end:].strip(" \t\n\r"):
                return value
        except (ValueError, StopIteration, RecursionError):
            pass  # json.loads says what is wrong
    import json

    return json.loads(data)


def _json_defaults() -> Any:
    """What the C scanner reads from its context: ``json.JSONDecoder``'s defaults. An instance, not a class of our
    own (a class costs as much to make as a small module's code; ``types`` is loaded already, by ``enum``)."""
    from types import SimpleNamespace

    constants = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}
    return SimpleNamespace(strict=True, object_hook=None, object_pairs_hook=None, parse_float=float, parse_int=int,
                           parse_constant=constants.__getitem__)  # fmt: skip


_noticed: set[str] = set()


def _ignored_local_file(found: Source, settings_file: str | None) -> None:
    """A config file in the working directory that is not the one in force: ignored, and said once on stderr (a
    checked-out repository must not widen or switch off the policy of the tree that runs a tool in it)."""
    local = found.local
    if local is None or local in _noticed or (settings_file and same_file(local, settings_file)):
        return
    try:
        with open(local, "rb") as fh:
            if _file_table(local, fh.read()) is None:
                return  # a pyproject.toml without a [tool.sockguard] table
    except (OSError, ConfigError):
        pass
    _noticed.add(local)
    in_force = "the configuration pinned by sockguard run" if found.pinned else (settings_file or "no config file")
    why = "SOCKGUARD_PINNED" if found.pinned else "SOCKGUARD_CONFIG"
    try:
        sys.stderr.write(f"sockguard: ignoring {local}: this process enforces {in_force} ({why})\n")
    except (OSError, ValueError):
        pass
