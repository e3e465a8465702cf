"""Issue 10, item 5: what a process enforces is fixed when the guard activates; ``sockguard run`` pins the whole
resolved configuration for its tree. (The far-side proofs, in guarded children under both activations, are in
tests/test_integrity_activation.py::test_configuration_is_fixed_at_activation.)"""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sockguard import source
from sockguard.config import Settings, load_settings, settings_from_source
from sockguard.errors import ConfigError
from sockguard.paths import sitecustomize_dir
from sockguard.runner import guarded_environment, pinned_environment

PY = sys.executable


def _args(**given: object) -> argparse.Namespace:
    values = {"config": None, "allow": [], "deny": [], "mode": None, "log": None, "program": []}
    values.update(given)
    return argparse.Namespace(**values)


def _clean(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


def test_the_whole_configuration_round_trips_through_the_pinned_file(tmp_path: Path) -> None:
    config = tmp_path / "sockguard.toml"
    config.write_text(
        'mode = "monitor"\nallow = ["api.example.com:443", "10.0.0.0/8:5432"]\ndeny = ["10.0.0.9"]\n'
        'allow_loopback = false\nallow_unix = false\nallow_raw = true\nlog = "egress.jsonl"\n'
        '[resolver]\nservers = ["127.0.0.53"]\ntimeout = 1.5\n[breaker]\nthreshold = 4\n'
    )
    settings = load_settings({"SOCKGUARD_ALLOW": "extra.example.com"}, str(tmp_path))
    env = pinned_environment(settings)
    pinned = Path(env[source.PINNED])
    again = load_settings({source.PINNED: str(pinned), "SOCKGUARD_MODE": "off"}, "/")  # the variable is ignored
    for key in ("mode", "allow_loopback", "allow_unix", "allow_raw", "log", "resolver", "resolver_options", "breaker"):
        assert getattr(again, key) == getattr(settings, key), key
    assert (
        [r.text for r in again.allow]
        == [r.text for r in settings.allow]
        == [
            "api.example.com:443",
            "10.0.0.0/8:5432",
            "extra.example.com",
        ]
    )
    assert [r.text for r in again.deny] == ["10.0.0.9"]
    assert again.log == str(tmp_path / "egress.jsonl")
    assert "pinned by sockguard run" in again.source and str(config) in again.source
    assert json.loads(pinned.read_text())["file"] == str(config)


def test_the_pinned_file_is_content_addressed_in_a_directory_only_this_user_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    first = pinned_environment(Settings(allow=["a.example.com"]))[source.PINNED]
    assert pinned_environment(Settings(allow=["a.example.com"]))[source.PINNED] == first  # reused
    other = pinned_environment(Settings(allow=["b.example.com"]))[source.PINNED]
    assert other != first and os.path.dirname(other) == os.path.dirname(first)
    directory = Path(first).parent
    assert directory == tmp_path / f"sockguard-{os.getuid()}"  # where the tree's native policy lives too
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o444
    directory.chmod(0o777)  # writable by others: never trusted with what a tree enforces
    with pytest.raises(ConfigError, match="only this user can write"):
        pinned_environment(Settings(allow=["c.example.com"]))


def test_run_pins_the_tree_and_a_nested_run_cannot_widen_it(tmp_path: Path) -> None:
    env = guarded_environment(_args(allow=["a.example.com"]), _clean())
    assert Path(env[source.PINNED]).is_file()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == sitecustomize_dir()
    nested = subprocess.run(
        [PY, "-m", "sockguard", "run", "--allow", "203.0.113.10", "--mode", "off", "--", PY, "-c", "pass"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nested.returncode == 0
    assert "configuration is pinned (SOCKGUARD_PINNED)" in nested.stderr and "ignored" in nested.stderr
    status = subprocess.run(
        [PY, "-m", "sockguard", "status", "--format", "json"], env=env, capture_output=True, text=True, timeout=60
    )
    data = json.loads(status.stdout)
    assert data["allow"] == ["a.example.com"] and data["mode"] == "enforce" and "pinned" in data["source"]


@pytest.mark.parametrize(
    "content", [None, "not json", '{"mode": "off"}', '{"sockguard_pinned": 1, "mode": "sideways"}']
)
def test_a_broken_pinned_file_fails_closed(tmp_path: Path, content: str | None) -> None:
    pinned = tmp_path / "pinned.json"
    if content is not None:
        pinned.write_text(content)
    code = "import socket; s = socket.socket(); s.settimeout(2); s.connect(('127.0.0.9', 9))"
    result = subprocess.run(
        [PY, "-c", code],
        env=_clean(PYTHONPATH=sitecustomize_dir(), SOCKGUARD_PINNED=str(pinned), SOCKGUARD_MODE="off"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "EgressBlocked" in result.stderr and "configuration is broken, all traffic blocked" in result.stderr
    assert "blocking all network traffic" in result.stderr  # and SOCKGUARD_MODE=off did not switch it off


def test_the_source_is_the_file_as_it_was_at_activation(tmp_path: Path) -> None:
    config = tmp_path / "sockguard.toml"
    config.write_text('allow = ["before.example.com"]\n')
    found = source.take({}, str(tmp_path))
    config.write_text('mode = "off"\n')  # changed after activation: not this process's configuration
    settings = settings_from_source(found)
    assert settings.mode == "enforce" and [r.text for r in settings.allow] == ["before.example.com"]


def test_a_read_that_failed_at_activation_is_tried_again_at_load(tmp_path: Path) -> None:
    config = tmp_path / "sockguard.toml"
    found = source.take({"SOCKGUARD_CONFIG": str(config)}, str(tmp_path))
    assert found.data is None and "does not exist" in (found.error or "")
    config.write_text('allow = ["later.example.com"]\n')
    assert [r.text for r in settings_from_source(found).allow] == ["later.example.com"]
    with pytest.raises(ConfigError, match="does not exist"):
        settings_from_source(source.take({"SOCKGUARD_CONFIG": str(tmp_path / "missing.toml")}, str(tmp_path)))


def test_config_none_means_no_file_even_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "sockguard.toml").write_text('mode = "off"\n')
    assert load_settings({"SOCKGUARD_CONFIG": "none"}, str(tmp_path)).mode == "enforce"
    assert load_settings({}, str(tmp_path)).mode == "off"


def test_activation_exports_its_file_for_children(tmp_path: Path) -> None:
    """A guarded process names the file it chose (or none), so a child in another directory uses the same."""
    (tmp_path / "sockguard.toml").write_text('allow = ["a.example.com"]\n')
    code = "import os; print(os.environ.get('SOCKGUARD_CONFIG'))"
    run = subprocess.run(
        [PY, "-c", code], env=_clean(PYTHONPATH=sitecustomize_dir()), capture_output=True, text=True, cwd=tmp_path
    )
    assert run.stdout.strip() == str(tmp_path / "sockguard.toml")
    empty = tmp_path / "empty"
    empty.mkdir()
    run = subprocess.run(
        [PY, "-c", code], env=_clean(PYTHONPATH=sitecustomize_dir()), capture_output=True, text=True, cwd=empty
    )
    assert run.stdout.strip() == "none"
    run = subprocess.run(
        [PY, "-c", code], env=_clean(PYTHONPATH=sitecustomize_dir(), SOCKGUARD_MODE="off"), capture_output=True,
        text=True, cwd=empty,
    )  # fmt: skip
    assert run.stdout.strip() == "None"  # switched off: not activated, nothing exported
