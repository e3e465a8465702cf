"""pytest plugin: one sockguard allowlist over the whole test run (the ``pytest11`` entry point).

Inactive unless enabled: ``--sockguard`` (or ``--sockguard-mode``), ini ``sockguard = true``,
``[tool.sockguard.pytest]`` ``enable = true``, a pytest-socket option, or a sockguard / pytest-socket marker or
fixture on a test. Then collection, fixture set-up and teardown of every scope, the tests themselves and the
Python processes they start run under an explicit policy built with the runtime engine. Every blocked attempt is
recorded (even when the code under test swallows the exception): the test's report names the destination, the
call site and the rule to add, and the session ends with a summary (optionally a JSON file). See
docs/pytest-plugin.md.

One job per module: ``options`` (inputs), ``scopes`` (policies and the scopes that hold them), ``node_rules``
(which policy a node runs under), ``stack`` (the scope on top in force), ``children`` (child processes),
``recorder`` and ``records`` (what was blocked, where), ``raises`` (what ``pytest.raises`` caught), ``reporting``
(reports, summary, JSON file), ``session`` (the per-config plugin: pytest's hooks), ``fixture``, ``compat``
(pytest-socket's semantics), ``socket_changes`` (pytest-socket's functions at run time) and ``socket_api`` (the
``pytest_socket`` module when pytest-socket is not installed). This module holds only the module-level hooks and
the ``sockguard`` fixture.

PYTEST_DONT_REWRITE: production code, not tests (the guard may have imported sockguard before pytest started).
"""

from __future__ import annotations

import sys

import pytest

from sockguard.pytest_plugin import session, socket_api
from sockguard.pytest_plugin.fixture import Controller, _SocketFixtures
from sockguard.pytest_plugin.options import _BadInput, _Compat, _native_options, _pytest_socket_present, add_options
from sockguard.pytest_plugin.records import Blocked, SockguardWarning
from sockguard.pytest_plugin.scopes import Rules
from sockguard.pytest_plugin.session import _PLUGIN, _Plugin

__all__ = ["Blocked", "Controller", "Rules", "SockguardWarning"]


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    add_options(parser, pluginmanager)
    if not _pytest_socket_present(pluginmanager):
        _serve_pytest_socket()  # now: a root conftest.py imports pytest_socket before pytest_configure


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sockguard(*allow, allow=[], deny=[], mode=None, allow_loopback=None, allow_unix=None): "
        "sockguard policy for this test, on top of the session's",
    )
    socket_present = _pytest_socket_present(config.pluginmanager)
    compat = None
    if not socket_present:
        # pytest-socket's own descriptions: suites check them (sockguard serves these markers in its place)
        config.addinivalue_line("markers", "disable_socket(): Disable socket connections for a specific test")
        config.addinivalue_line("markers", "enable_socket(): Enable socket connections for a specific test")
        config.addinivalue_line("markers", "allow_hosts([hosts]): Restrict socket connection to defined list of hosts")
        compat = _Compat(
            disable=bool(config.getoption("disable_socket", False)),
            force_enable=bool(config.getoption("force_enable_socket", False)),
            allow_hosts=config.getoption("allow_hosts", None),
            allow_unix_socket=bool(config.getoption("allow_unix_socket", False)),
        )
    try:
        native = _native_options(config)
        plugin = _Plugin(config, native, compat, socket_present)
    except _BadInput as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_PLUGIN] = plugin
    config.pluginmanager.register(plugin, "sockguard-session")
    if compat is not None:
        config.pluginmanager.register(_SocketFixtures(), "sockguard-socket-fixtures")
        socket_api.HANDLERS.append(plugin.socket_functions)
    session._active_configs += 1


def pytest_runtest_setup(item: pytest.Item) -> None:
    """After the conftests' own ``pytest_runtest_setup`` (this module is registered before them), before the
    fixtures: the moment pytest-socket applies its per-test decision."""
    plugin = item.config.stash.get(_PLUGIN, None)
    if plugin is not None and plugin.compat is not None:
        plugin.settle(item)


def _serve_pytest_socket() -> None:
    """``import pytest_socket`` finds sockguard's module for this run: pytest-socket is not installed, or is
    kept out of the run (``-p no:socket`` hands its names to sockguard). The previous entry comes back at the end."""
    if sys.modules.get("pytest_socket") is not socket_api:
        _saved_modules.append(sys.modules.get("pytest_socket"))
        sys.modules["pytest_socket"] = socket_api


_saved_modules: list[object] = []


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin = config.stash.get(_PLUGIN, None)
    if plugin is not None:
        session._active_configs -= 1
        plugin.unconfigure()
        if plugin.socket_functions in socket_api.HANDLERS:
            socket_api.HANDLERS.remove(plugin.socket_functions)
        del config.stash[_PLUGIN]
    if not socket_api.HANDLERS and sys.modules.get("pytest_socket") is socket_api and _saved_modules:
        previous = _saved_modules.pop()
        if previous is None:
            del sys.modules["pytest_socket"]
        else:
            sys.modules["pytest_socket"] = previous  # type: ignore[assignment]


@pytest.fixture(scope="session")
def sockguard(pytestconfig: pytest.Config) -> Controller:
    """Relax or tighten sockguard's policy inside a test: ``sockguard.allow("api.test:443")``,
    ``with sockguard.deny(...)``, ``sockguard.policy(mode="monitor")``, ``sockguard.expect_blocked()``.
    Requesting it guards the test even when the run is not guarded."""
    return Controller(pytestconfig.stash[_PLUGIN])
