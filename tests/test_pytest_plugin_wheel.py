"""The pytest plugin from a regular (non-editable) install, in a project that turns warnings into errors.

Only a regular install shows issue 11: pytest marks the files of every ``pytest11`` distribution for assertion
rewriting, and an editable install lists none of sockguard's. Under the ``PYTHONPATH`` activation the guard has
imported ``sockguard`` before pytest starts, and pytest's "Module already imported so cannot be rewritten"
warning aborted any project with ``filterwarnings = error`` before it ran a test.

The wheel goes into a fresh virtual environment that borrows this one's packages (pytest, dnspython) through a
``.pth`` path, all but pytest-socket and the editable sockguard: ``sockguard`` is the wheel's, and pytest-socket
is not installed at all, the case sockguard stands in for it (issue 13).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.test_native_build import build_wheel

INI = """\
[pytest]
filterwarnings =
    error
asyncio_default_fixture_loop_scope = function
addopts = -p no:cacheprovider
"""

TESTS = """\
import os
import socket

import sockguard


def test_runs_from_the_wheel():
    assert "site-packages" in sockguard.__file__ and ".venv" not in sockguard.__file__


def test_loopback_is_allowed():
    socket.create_connection(("127.0.0.1", int(os.environ["SG_PORT"])), timeout=5).close()
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(python of a fresh venv with the wheel installed, the activation directory of that install)."""
    root = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(root)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()
    )  # fmt: skip
    # This environment's packages, minus pytest-socket (sockguard must stand in for it) and the editable sockguard.
    borrowed = root / "borrowed"
    borrowed.mkdir()
    own = Path(sysconfig.get_paths()["purelib"])
    for entry in own.iterdir():
        if not entry.name.lower().startswith(("pytest_socket", "sockguard", "__editable__", "_sockguard")):
            (borrowed / entry.name).symlink_to(entry)
    (site / "borrowed.pth").write_text(f"{borrowed}\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        check=True, timeout=300,
    )  # fmt: skip
    return python, site / "sockguard" / "_site"


def run_project(
    python: Path, project: Path, port: int, *args: str, under_run: bool = False, **env: str
) -> subprocess.CompletedProcess:
    """pytest in ``project``; ``under_run``: started by ``sockguard run`` (which sets up the activation itself)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SOCKGUARD_", "PYTEST_", "PYTHON"))}
    launcher = [str(python), "-m", "sockguard", "run", "--"] if under_run else []
    return subprocess.run(
        [*launcher, str(python), "-m", "pytest", "-q", *args],
        cwd=project, env={**clean, "SG_PORT": str(port), **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("activation_by", ["PYTHONPATH", "sockguard run"])
@pytest.mark.parametrize("args", [(), ("--sockguard",), ("--disable-socket", "--allow-hosts=127.0.0.1")])
def test_filterwarnings_error_under_the_activation(installed, tmp_path, args, activation_by) -> None:
    python, activation = installed
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_project.py").write_text(TESTS)
    with socket_server() as (_server, port):
        plain = run_project(python, tmp_path, port, *args)
        if activation_by == "PYTHONPATH":
            guarded = run_project(python, tmp_path, port, *args, PYTHONPATH=str(activation))
        else:
            guarded = run_project(python, tmp_path, port, *args, under_run=True)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "Module already imported" not in guarded.stdout + guarded.stderr
    assert guarded.returncode == 0, guarded.stdout + guarded.stderr
    assert "2 passed" in guarded.stdout


class socket_server:
    """A loopback listener (connections wait in its backlog)."""

    def __enter__(self):  # type: ignore[no-untyped-def]
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0), backlog=16)
        return self.sock, self.sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


MIGRATED = {
    "conftest.py": """
import pytest_socket


def pytest_runtest_setup(item):
    if "conftest" in item.name:
        pytest_socket.disable_socket()
""",
    "test_migrated.py": """
import os
import socket

import pytest
from pytest_socket import SocketBlockedError, SocketConnectBlockedError


def test_creation_refused():
    with pytest.raises(SocketBlockedError):
        socket.socket()


@pytest.mark.enable_socket
def test_enabled():
    socket.create_connection(("127.0.0.1", int(os.environ["SG_PORT"])), timeout=5).close()


@pytest.mark.allow_hosts(["127.0.0.2"])
def test_host_list():
    with pytest.raises(SocketConnectBlockedError):
        socket.create_connection(("127.0.0.1", int(os.environ["SG_PORT"])), timeout=5)


def test_conftest_disables(socket_enabled):
    socket.socket().close()  # the fixture's body runs after the conftest's hook: it wins, as in pytest-socket
""",
}


def test_pytest_socket_uninstalled_sockguard_in_its_place(installed, tmp_path) -> None:
    """A pytest-socket suite, unchanged, with pytest-socket uninstalled: its flags, markers, fixtures and the
    ``pytest_socket`` module (imported by a conftest before any hook runs) are sockguard's."""
    python, _ = installed
    (tmp_path / "pytest.ini").write_text(INI.replace("addopts = -p no:cacheprovider", "addopts = -p no:cacheprovider "
                                                     "--disable-socket -W ignore::UserWarning"))  # fmt: skip
    for name, text in MIGRATED.items():
        (tmp_path / name).write_text(text)
    with socket_server() as (_server, port):
        result = run_project(python, tmp_path, port)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout
