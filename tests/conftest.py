"""Suite-wide set-up: the whole pytest process (and every child) runs inside the netlab namespace.

See docs/netlab.md. Tests that need the lab use the ``netlab`` fixture (or the ``netlab`` marker); both skip
with the reason when the namespace could not be created (not root, no unshare).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import netlab as _netlab


def pytest_configure(config: pytest.Config) -> None:
    # The earliest hook, before any thread exists: unshare() must see a single-threaded process.
    _netlab.enter_isolated_namespace()


def pytest_report_header(config: pytest.Config) -> list[str]:
    from sockguard.accelerator import status

    return [f"netlab: {_netlab.STATUS.describe()}", f"sockguard accelerator: {status()}"]


#: The modules whose tests run the guard's decision paths in this process (floor, wrappers, caches, breaker, sinks,
#: HTTP and library hooks, asynchronous exceptions): marked ``enforcement``, and run a second time by scripts/test
#: with SOCKGUARD_ACCELERATOR=0, so the C accelerator and the pure-Python floor are held to the same outcomes.
ENFORCEMENT_MODULES = frozenset(
    {
        "test_accelerator",
        "test_async_exceptions",
        "test_breaker",
        "test_coverage_asyncio",
        "test_coverage_native",
        "test_coverage_stdlib",
        "test_coverage_thirdparty",
        "test_coverage_traps",
        "test_events",
        "test_guard",
        "test_http_requests",
        "test_import_order",
        "test_integrity",
        "test_integrity_activation",
        "test_integrity_pinning",
        "test_integrity_property",
        "test_refusal_frames",
        "test_resolution",
        "test_resolver",
        "test_transparency",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if {"netlab", "netlab_session"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.netlab)
        if item.path.stem in ENFORCEMENT_MODULES:
            item.add_marker(pytest.mark.enforcement)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netlab") is not None and not _netlab.STATUS.active:
        pytest.skip(f"netlab unavailable: {_netlab.STATUS.reason}")


@pytest.fixture(scope="session")
def netlab_session() -> Iterator[_netlab.Lab]:
    """The lab server for this process, shared by every test (state persists: call reset() yourself)."""
    if not _netlab.STATUS.active:
        pytest.skip(f"netlab unavailable: {_netlab.STATUS.reason}")
    lab = _netlab.Lab()
    yield lab
    lab.stop()


@pytest.fixture
def netlab(netlab_session: _netlab.Lab) -> _netlab.Lab:
    """The lab, reset for this test: no TCP/UDP servers, empty zone and query log, default resolv.conf."""
    netlab_session.reset()
    return netlab_session


@pytest.fixture
def unconfigured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no configuration: ``tmp_path`` as the current directory and no ``SOCKGUARD_*``
    variable (from the developer's shell or the suite's own), so a test's configuration is only what it writes."""
    for name in [name for name in os.environ if name.startswith("SOCKGUARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def _fresh_address_memory() -> Iterator[None]:
    """Which name an address was resolved from is process-wide knowledge that outlives any one policy (by
    design); every test starts from a process that has resolved nothing, so results never depend on order."""
    from sockguard import testing

    testing.reset()
    yield
    testing.reset()
