"""Finding files to scan: which names audit reads and which directories it skips (VCS and tool caches,
virtualenvs, test code unless asked), lazily, depth first in name order."""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Iterator

SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "node_modules", "__pycache__", ".tox", ".nox", ".venv", "venv", ".eggs"}
    | {".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis"}
)
TEST_DIRS = frozenset({"test", "tests", "testing", "__tests__", "fixtures", "testdata", "test_data", "test-data"})
LOCK_FILES = frozenset({"package-lock.json", "npm-shrinkwrap.json", "composer.lock", "pipfile.lock"})
COMPOSE_NAME = re.compile(r"^(docker-)?compose([.-][\w.-]*)?\.ya?ml$")


def file_kind(name: str) -> str | None:
    """The scanner for a file name, or None when audit does not read such files."""
    low = name.lower()
    if low in LOCK_FILES:
        return None
    if low in (".env", ".envrc") or low.startswith(".env.") or low.endswith(".env"):
        return "dotenv"
    ext = low.rpartition(".")[2] if "." in low else ""
    if ext == "py":
        return "python"
    if ext in ("yaml", "yml"):
        return "compose" if COMPOSE_NAME.match(low) else "yaml"
    if ext == "toml":
        return "toml"
    if ext == "json":
        return "json"
    if ext in ("ini", "cfg", "conf"):
        return "ini"
    return None


def is_test_file(name: str) -> bool:
    return name == "conftest.py" or (name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py")))


def _excluded(path: str, root: str, name: str, exclude: tuple[str, ...]) -> bool:
    if not exclude:
        return False
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    return any(fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(name, pattern) for pattern in exclude)


def inside(path: str, root: str) -> bool:
    """Whether a resolved path lies in the resolved tree ``root`` (the root itself included)."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives, or one relative
        return False


#: (path, kind, problem): kind None for a directory; problem None when the file is to be scanned.
Walked = tuple[str, "str | None", "str | None"]


def walk(root: str, include_tests: bool, exclude: tuple[str, ...] = ()) -> Iterator[Walked]:
    """Every scannable file under root, depth first in name order, lazily, as (path, kind, None); and
    (path, kind, why) for what cannot or must not be scanned, so that nothing is skipped in silence:
    a directory that cannot be listed, a symlink that leads out of the tree (not followed: its content is
    not the tree's), a special file (FIFO, socket, device) with a scannable name. A symlink to a directory
    inside the tree is not followed either: its target is walked where it lies.
    ``exclude``: glob patterns matched against the path relative to root and against the name."""
    real_root = os.path.realpath(root)
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield directory, None, f"directory cannot be listed: {exc.strerror or exc}"
            continue
        subdirs = []
        for entry in entries:
            name = entry.name
            try:
                if entry.is_symlink():
                    if _excluded(entry.path, root, name, exclude):
                        continue
                    target = os.path.realpath(entry.path)
                    is_dir = os.path.isdir(target)
                    kind = None if is_dir else file_kind(name)
                    if not is_dir and (kind is None or (not include_tests and is_test_file(name))):
                        continue
                    if not inside(target, real_root):
                        what = "a directory" if is_dir else "a file"
                        yield entry.path, kind, f"symlink to {what} outside the scanned tree ({target}): not followed"
                        continue
                    if is_dir:
                        continue
                    mode = os.stat(target).st_mode
                elif entry.is_dir(follow_symlinks=False):
                    if name in SKIP_DIRS or name.endswith((".egg-info", ".dist-info")):
                        continue
                    if not include_tests and name in TEST_DIRS:
                        continue
                    if os.path.exists(os.path.join(entry.path, "pyvenv.cfg")):
                        continue  # a virtualenv: third-party code
                    if not _excluded(entry.path, root, name, exclude):
                        subdirs.append(entry.path)
                    continue
                else:
                    kind = file_kind(name)
                    if kind is None or (not include_tests and is_test_file(name)):
                        continue
                    if _excluded(entry.path, root, name, exclude):
                        continue
                    mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISREG(mode):
                    yield entry.path, kind, None
                else:
                    yield entry.path, kind, "not a regular file (FIFO, socket or device): not read"
            except OSError as exc:
                yield entry.path, None, f"cannot be examined: {exc.strerror or exc}"
        stack.extend(reversed(subdirs))
