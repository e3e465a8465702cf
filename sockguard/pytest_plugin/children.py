"""Python processes the tests start run under the policy in force, and their blocks are charged to the test.

A child cannot share this process's guard State, so the policy on top of the stack is mirrored into the
``SOCKGUARD_*`` variables (and sockguard's sitecustomize directory put first on ``PYTHONPATH``) every time it
changes: a child started now is guarded from its first line by the same rules. Each child logs its decisions to
one JSON-lines file in a private temporary directory; the plugin reads the blocks that appeared since its last look
whenever a scope ends, so they land on the test that started the child. The variables are restored when the
stack empties.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from typing import Any

from sockguard.pytest_plugin.records import SockguardWarning
from sockguard.pytest_plugin.scopes import Rules

_ENV_KEYS = (
    "PYTHONPATH",
    "SOCKGUARD_CONFIG",
    "SOCKGUARD_MODE",
    "SOCKGUARD_ALLOW",
    "SOCKGUARD_DENY",
    "SOCKGUARD_ALLOW_LOOPBACK",
    "SOCKGUARD_ALLOW_UNIX",
    "SOCKGUARD_LOG",
    "SOCKGUARD_RESOLVER",
)


class ChildProcesses:
    """The environment children inherit, and the log they write their decisions to."""

    def __init__(self) -> None:
        self._saved_env: dict[str, str | None] | None = None
        self._tmpdir: str | None = None
        self._child_log: str | None = None
        self._child_offset = 0
        self._env: dict[Rules, dict[str, str]] = {}
        self._env_current: dict[str, str] | None = None
        self._pythonpath: str | None = None

    def mirror(self, rules: Rules) -> None:
        """Children started from now on run under ``rules`` (the first call saves the variables it changes)."""
        from sockguard.paths import sitecustomize_dir

        if self._saved_env is None:
            self._saved_env = {key: os.environ.get(key) for key in _ENV_KEYS}
            os.environ.pop("SOCKGUARD_RESOLVER", None)  # children use the system resolver, like this process
            if self._tmpdir is None:
                self._tmpdir = tempfile.mkdtemp(prefix="sockguard-pytest-")
                self._child_log = os.path.join(self._tmpdir, "children.jsonl")
                with open(os.path.join(self._tmpdir, "empty.toml"), "w"):
                    pass
            try:
                site = sitecustomize_dir()
            except FileNotFoundError as exc:
                warnings.warn(SockguardWarning(f"{exc}: child processes are NOT guarded"), stacklevel=1)
            else:
                rest = [p for p in (self._saved_env["PYTHONPATH"] or "").split(os.pathsep) if p and p != site]
                self._pythonpath = os.pathsep.join([site, *rest])
        values = self._env.get(rules)
        if values is None:
            assert self._tmpdir is not None and self._child_log is not None
            values = self._env[rules] = rules.settings().to_env()
            values["SOCKGUARD_CONFIG"] = os.path.join(self._tmpdir, "empty.toml")
            values["SOCKGUARD_LOG"] = self._child_log
            if self._pythonpath is not None:
                values["PYTHONPATH"] = self._pythonpath
        if values is self._env_current:
            return
        self._env_current = values
        for key, value in values.items():
            if os.environ.get(key) != value:
                os.environ[key] = value

    def restore(self) -> None:
        """The variables as they were before the first :meth:`mirror`."""
        self._env_current = None
        if self._saved_env is None:
            return
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            elif os.environ.get(key) != value:
                os.environ[key] = value
        self._saved_env = None

    def new_blocks(self) -> list[dict[str, Any]]:
        """The block and would-block events children logged since the last call (whole lines only)."""
        path = self._child_log
        if path is None:
            return []
        try:
            if os.path.getsize(path) <= self._child_offset:
                return []
            with open(path, "rb") as f:
                f.seek(self._child_offset)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self._child_offset += end
        blocks = []
        for line in data[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("decision") in ("block", "would-block"):
                blocks.append(event)
        return blocks

    def remove_log(self) -> None:
        """At the end of the run: the temporary directory and the log in it go."""
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = self._child_log = None
