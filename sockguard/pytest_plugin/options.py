"""The plugin's inputs: command-line options, ini keys, the ``[tool.sockguard.pytest]`` table and markers.

Every value is parsed when read; a bad one raises :class:`_BadInput` naming where it came from (a usage error at
configure time, a setup error for a marker).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from sockguard.pytest_plugin.scopes import Rules

MODES = ("enforce", "monitor", "off")
SWALLOWED = ("fail", "warn")
_MARK_KEYS = frozenset(("allow", "deny", "mode", "allow_loopback", "allow_unix"))
_TABLE_KEYS = frozenset(("enable", "mode", "allow", "deny", "allow_loopback", "allow_unix", "report", "swallowed"))


class _BadInput(ValueError):
    """A rule, marker or option value sockguard cannot use; the message names it."""


def _rule_list(value: object, where: str) -> tuple[str, ...]:
    """Rules from a string (comma/space separated) or a list of strings, each parsed now."""
    from sockguard.rules import RuleError, parse_rule, split_rules

    if isinstance(value, str):
        items = split_rules(value)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = [part for v in value for part in split_rules(v)]
    else:
        raise _BadInput(f"sockguard: {where} must be a rule string or a list of rule strings, got {value!r}")
    for item in items:
        try:
            parse_rule(item)
        except RuleError as exc:
            raise _BadInput(f"sockguard: {where}: {exc}") from None
    return tuple(items)


def _mode(value: object, where: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in MODES:
        raise _BadInput(f"sockguard: {where} must be one of {', '.join(MODES)}, got {value!r}")
    return value.strip().lower()


def _flag(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise _BadInput(f"sockguard: {where} must be true or false, got {value!r}")


def _swallowed(value: object, where: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in SWALLOWED:
        raise _BadInput(f"sockguard: {where} must be one of {', '.join(SWALLOWED)}, got {value!r}")
    return value.strip().lower()


def _apply_marker(rules: Rules, mark: pytest.Mark, where: str) -> Rules:
    unknown = sorted(set(mark.kwargs) - _MARK_KEYS)
    if unknown:
        raise _BadInput(
            f"sockguard: {where}: @pytest.mark.sockguard got unknown argument {unknown[0]!r} "
            f"(known: {', '.join(sorted(_MARK_KEYS))})"
        )
    what = f"{where}: @pytest.mark.sockguard"
    allow = _rule_list(list(mark.args), f"{what} positional rules") if mark.args else ()
    if "allow" in mark.kwargs:
        allow += _rule_list(mark.kwargs["allow"], f"{what}(allow=...)")
    deny = _rule_list(mark.kwargs["deny"], f"{what}(deny=...)") if "deny" in mark.kwargs else ()
    mode = _mode(mark.kwargs["mode"], f"{what}(mode=...)") if "mode" in mark.kwargs else None
    flags = {
        key: _flag(mark.kwargs[key], f"{what}({key}=...)")
        for key in ("allow_loopback", "allow_unix")
        if key in mark.kwargs
    }
    return rules.refined(allow=allow, deny=deny, mode=mode, **flags)


# --- options ----------------------------------------------------------------------------------


@dataclasses.dataclass
class _Native:
    """sockguard's own settings, merged from [tool.sockguard.pytest] < ini < command line."""

    enabled: bool = False
    mode: str | None = None
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    allow_loopback: bool | None = None
    allow_unix: bool | None = None
    report: str | None = None
    swallowed: str | None = None


@dataclasses.dataclass
class _Compat:
    """pytest-socket's options, when sockguard is the one handling them."""

    disable: bool = False
    force_enable: bool = False
    allow_hosts: str | None = None
    allow_unix_socket: bool = False

    def used(self) -> list[str]:
        flags = ["--disable-socket"] if self.disable else []
        flags += ["--force-enable-socket"] if self.force_enable else []
        flags += [f"--allow-hosts={self.allow_hosts}"] if self.allow_hosts is not None else []
        flags += ["--allow-unix-socket"] if self.allow_unix_socket else []
        return flags


def _pytest_socket_present(pluginmanager: pytest.PytestPluginManager) -> bool:
    """Whether pytest-socket will own its option, marker and fixture names in this run."""
    if pluginmanager.is_blocked("socket") or pluginmanager.is_blocked("pytest_socket"):
        return False
    if pluginmanager.has_plugin("socket") or pluginmanager.has_plugin("pytest_socket"):
        return True
    import sys
    from importlib.machinery import PathFinder

    loaded = sys.modules.get("pytest_socket")
    if loaded is not None and not getattr(loaded, "__name__", "").startswith("sockguard."):
        return True  # the real one, imported already
    # Installed? Looked up on sys.path itself: sys.modules may hold sockguard's stand-in (socket_api).
    return PathFinder.find_spec("pytest_socket") is not None


def add_options(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    group = parser.getgroup("sockguard", "sockguard (egress allowlist for the test run)")
    group.addoption("--sockguard", action="store_true", default=False, help="Guard the run with sockguard.")
    group.addoption(
        "--sockguard-allow",
        action="append",
        default=[],
        metavar="RULE",
        help="Allow a destination (runtime rule syntax: host, *.domain, host:port, IP, CIDR). Repeatable.",
    )
    group.addoption("--sockguard-deny", action="append", default=[], metavar="RULE", help="Deny a destination.")
    group.addoption(
        "--sockguard-mode", choices=MODES, default=None, help="enforce (default), monitor (report only) or off."
    )
    group.addoption(
        "--sockguard-no-loopback", action="store_true", default=False, help="Block loopback (allowed by default)."
    )
    group.addoption("--sockguard-no-unix", action="store_true", default=False, help="Block AF_UNIX sockets.")
    group.addoption("--sockguard-report", metavar="PATH", default=None, help="Write a JSON report of blocked attempts.")
    group.addoption(
        "--sockguard-swallowed",
        choices=SWALLOWED,
        default=None,
        help="A block the code under test swallowed: fail the test (default with --sockguard) or warn.",
    )
    parser.addini("sockguard", "Enable sockguard for the run.", type="bool", default=None)
    parser.addini("sockguard_allow", "sockguard allow rules, one per line.", type="linelist", default=[])
    parser.addini("sockguard_deny", "sockguard deny rules, one per line.", type="linelist", default=[])
    parser.addini("sockguard_mode", "sockguard mode: enforce, monitor or off.", default=None)
    parser.addini("sockguard_allow_loopback", "Allow loopback (default true).", type="bool", default=None)
    parser.addini("sockguard_allow_unix", "Allow AF_UNIX sockets (default true).", type="bool", default=None)
    parser.addini("sockguard_report", "Path of a JSON report of blocked attempts.", default=None)
    parser.addini("sockguard_swallowed", "fail or warn when a block was swallowed.", default=None)
    if _pytest_socket_present(pluginmanager):
        return
    # pytest-socket's option texts: they describe the interface sockguard serves in its place (suites check them)
    socket_group = parser.getgroup("socket")
    socket_group.addoption(
        "--disable-socket",
        action="store_true",
        default=False,
        help="Disable socket.socket by default to block network calls.",
    )
    socket_group.addoption(
        "--force-enable-socket",
        action="store_true",
        default=False,
        help="Force enable socket.socket network calls (override --disable-socket).",
    )
    socket_group.addoption(
        "--allow-hosts",
        metavar="ALLOWED_HOSTS_CSV",
        default=None,
        help="Only allow specified hosts through socket.socket.connect((host, port)).",
    )
    socket_group.addoption(
        "--allow-unix-socket",
        action="store_true",
        default=False,
        help="Allow calls if they are to Unix domain sockets",
    )


def _read_table(config: pytest.Config) -> tuple[str, str, dict[str, Any]]:
    """``[tool.sockguard.pytest]`` (or ``[pytest]`` in sockguard.toml): where, its directory, the table."""
    from sockguard.config import config_path, find_config_file
    from sockguard.errors import ConfigError

    try:
        found = find_config_file(os.environ, str(config.rootpath))
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    if found is None or found[1].get("pytest") is None:
        return "", "", {}
    source, table = found
    path = config_path(source) or source
    where = f"{path} [tool.sockguard.pytest]" if source.endswith("[tool.sockguard]") else f"{path} [pytest]"
    section = table["pytest"]
    if not isinstance(section, dict):
        raise pytest.UsageError(f"sockguard: {where} must be a table")
    unknown = sorted(set(section) - _TABLE_KEYS)
    if unknown:
        raise pytest.UsageError(
            f"sockguard: {where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_TABLE_KEYS))})"
        )
    return where, os.path.dirname(os.path.abspath(path)), section


def _ini(config: pytest.Config, name: str) -> Any:
    try:
        return config.getini(name)
    except (ValueError, pytest.UsageError) as exc:
        raise _BadInput(f"sockguard: ini option {name}: {exc}") from None


def _native_options(config: pytest.Config) -> _Native:
    native = _Native()
    source, base, table = _read_table(config)
    if "enable" in table:
        native.enabled = _flag(table["enable"], f"{source} enable")
    if "mode" in table:
        native.mode = _mode(table["mode"], f"{source} mode")
    native.allow = _rule_list(table.get("allow", []), f"{source} allow")
    native.deny = _rule_list(table.get("deny", []), f"{source} deny")
    for key in ("allow_loopback", "allow_unix"):
        if key in table:
            setattr(native, key, _flag(table[key], f"{source} {key}"))
    if "report" in table:
        if not isinstance(table["report"], str):
            raise _BadInput(f"sockguard: {source} report must be a file path string")
        native.report = os.path.join(base, table["report"])
    if "swallowed" in table:
        native.swallowed = _swallowed(table["swallowed"], f"{source} swallowed")

    if _ini(config, "sockguard") is not None:
        native.enabled = bool(_ini(config, "sockguard"))
    if _ini(config, "sockguard_mode"):
        native.mode = _mode(_ini(config, "sockguard_mode"), "ini option sockguard_mode")
    native.allow += _rule_list(_ini(config, "sockguard_allow"), "ini option sockguard_allow")
    native.deny += _rule_list(_ini(config, "sockguard_deny"), "ini option sockguard_deny")
    for key in ("allow_loopback", "allow_unix"):
        value = _ini(config, f"sockguard_{key}")
        if value is not None:
            setattr(native, key, bool(value))
    if _ini(config, "sockguard_report"):
        native.report = os.path.join(str(config.rootpath), _ini(config, "sockguard_report"))
    if _ini(config, "sockguard_swallowed"):
        native.swallowed = _swallowed(_ini(config, "sockguard_swallowed"), "ini option sockguard_swallowed")

    if config.getoption("sockguard"):
        native.enabled = True
    if config.getoption("sockguard_mode"):
        native.mode = config.getoption("sockguard_mode")
        native.enabled = True
    native.allow += _rule_list(config.getoption("sockguard_allow"), "--sockguard-allow")
    native.deny += _rule_list(config.getoption("sockguard_deny"), "--sockguard-deny")
    if config.getoption("sockguard_no_loopback"):
        native.allow_loopback = False
    if config.getoption("sockguard_no_unix"):
        native.allow_unix = False
    if config.getoption("sockguard_report"):
        native.report = os.path.join(str(config.invocation_params.dir), config.getoption("sockguard_report"))
    if config.getoption("sockguard_swallowed"):
        native.swallowed = config.getoption("sockguard_swallowed")
    return native


def _socket_options_used(config: pytest.Config) -> bool:
    return any(config.getoption(name, None) for name in ("disable_socket", "force_enable_socket", "allow_hosts"))
