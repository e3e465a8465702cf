"""Configuration sources, precedence, and errors that name file, key and value."""

from __future__ import annotations

import os

import pytest

from sockguard.config import load_settings
from sockguard.errors import ConfigError


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_defaults_without_any_file(tmp_path):
    settings = load_settings({}, str(tmp_path))
    assert (settings.mode, texts(settings.allow), texts(settings.deny)) == ("enforce", [], [])
    assert settings.allow_loopback and settings.allow_unix and settings.log is None
    assert settings.source == "defaults"


def texts(rules):
    """The rules as written (Settings keeps parsed Rule objects)."""
    return [rule.text for rule in rules]


def test_file_precedence(tmp_path):
    explicit = write(tmp_path / "explicit.toml", 'allow = ["explicit.test"]\n')
    write(tmp_path / "sockguard.toml", 'allow = ["local.test"]\n')
    write(tmp_path / "pyproject.toml", '[tool.sockguard]\nallow = ["pyproject.test"]\n')
    assert texts(load_settings({"SOCKGUARD_CONFIG": explicit}, str(tmp_path)).allow) == ["explicit.test"]
    assert texts(load_settings({}, str(tmp_path)).allow) == ["local.test"]
    os.remove(tmp_path / "sockguard.toml")
    settings = load_settings({}, str(tmp_path))
    assert texts(settings.allow) == ["pyproject.test"]
    assert settings.source.endswith("pyproject.toml [tool.sockguard]")


def test_pyproject_without_sockguard_table_is_ignored(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname = "app"\n')
    assert load_settings({}, str(tmp_path)).source == "defaults"


def test_environment_extends_lists_and_overrides_scalars(tmp_path):
    write(tmp_path / "sockguard.toml", 'mode = "monitor"\nallow = ["a.test"]\ndeny = ["d.test"]\nallow_unix = true\n')
    env = {
        "SOCKGUARD_ALLOW": "b.test, c.test  203.0.113.0/24",
        "SOCKGUARD_DENY": "e.test",
        "SOCKGUARD_MODE": "enforce",
        "SOCKGUARD_ALLOW_LOOPBACK": "0",
        "SOCKGUARD_ALLOW_UNIX": "false",
        "SOCKGUARD_LOG": "/tmp/x.jsonl",
    }
    settings = load_settings(env, str(tmp_path))
    assert texts(settings.allow) == ["a.test", "b.test", "c.test", "203.0.113.0/24"]
    assert texts(settings.deny) == ["d.test", "e.test"]
    assert (settings.mode, settings.allow_loopback, settings.allow_unix) == ("enforce", False, False)
    assert settings.log == "/tmp/x.jsonl"


def test_relative_log_path_is_relative_to_the_config_file(tmp_path):
    sub = tmp_path / "conf"
    sub.mkdir()
    path = write(sub / "sg.toml", 'log = "egress.jsonl"\n')
    assert load_settings({"SOCKGUARD_CONFIG": path}, "/").log == str(sub / "egress.jsonl")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('allow = ["10.0.0.1/8"]', ["allow", "10.0.0.1/8", "host bits set"]),
        ('allow = ["api.test:99999"]', ["allow", "api.test:99999", "1-65535"]),
        ('deny = ["https://x.test/"]', ["deny", "URL"]),
        ('allow = "not-a-list-but-ok.test"', None),
        ("allow = [1, 2]", ["allow", "list of rule strings"]),
        ('mode = "block"', ["mode", "'block'", "enforce, monitor, off"]),
        ('allow_loopback = "maybe"', ["allow_loopback", "'maybe'"]),
        ('alow = ["typo.test"]', ["unknown key 'alow'"]),
        ("allow = [", ["not valid TOML"]),
        ("log = 5", ["log", "file path"]),
        ("resolver = 5", ["resolver", "nameservers"]),
    ],
)
def test_config_errors_name_file_key_and_value(tmp_path, text, expected):
    path = write(tmp_path / "sockguard.toml", text + "\n")
    if expected is None:
        assert texts(load_settings({}, str(tmp_path)).allow) == ["not-a-list-but-ok.test"]
        return
    with pytest.raises(ConfigError) as info:
        load_settings({}, str(tmp_path))
    message = str(info.value)
    assert path in message
    for fragment in expected:
        assert fragment in message


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SOCKGUARD_ALLOW": "ok.test,bad*.test"}, "SOCKGUARD_ALLOW"),
        ({"SOCKGUARD_MODE": "loud"}, "SOCKGUARD_MODE"),
        ({"SOCKGUARD_ALLOW_UNIX": "2"}, "SOCKGUARD_ALLOW_UNIX"),
        ({"SOCKGUARD_CONFIG": "/nonexistent/sockguard.toml"}, "/nonexistent/sockguard.toml does not exist"),
    ],
)
def test_environment_errors_name_the_variable(tmp_path, env, fragment):
    with pytest.raises(ConfigError) as info:
        load_settings(env, str(tmp_path))
    assert fragment in str(info.value)


def test_settings_round_trip_through_environment(tmp_path):
    write(tmp_path / "sockguard.toml", 'allow = ["a.test:443"]\ndeny = ["10.0.0.0/8"]\nallow_unix = false\n')
    settings = load_settings({}, str(tmp_path))
    again = load_settings(settings.to_env(), str(tmp_path / "nowhere"))
    assert (again.allow, again.deny, again.allow_unix) == (settings.allow, settings.deny, settings.allow_unix)


def test_http_event_settings_from_file_environment_and_back(tmp_path):
    """http_events / http_log_level / log_query (sockguard/http/): file, environment override, to_env round trip."""
    assert (load_settings({}, str(tmp_path)).http_events, load_settings({}, str(tmp_path)).http_log_level) == (None, 10)
    write(tmp_path / "sockguard.toml", 'http_events = false\nhttp_log_level = "INFO"\nlog_query = true\n')
    settings = load_settings({}, str(tmp_path))
    assert (settings.http_events, settings.http_log_level, settings.log_query) == (False, 20, True)
    env = {"SOCKGUARD_HTTP_EVENTS": "on", "SOCKGUARD_HTTP_LOG_LEVEL": "debug", "SOCKGUARD_LOG_QUERY": "0"}
    settings = load_settings(env, str(tmp_path))
    assert (settings.http_events, settings.http_log_level, settings.log_query) == (True, 10, False)
    settings.http_log_level = 20
    again = load_settings(settings.to_env(), str(tmp_path / "elsewhere"))
    assert (again.http_events, again.http_log_level, again.log_query) == (True, 20, False)


@pytest.mark.parametrize(
    ("text", "key"),
    [('http_events = "sometimes"\n', "http_events"), ('http_log_level = "warning"\n', "http_log_level"),
     ("log_query = 2\n", "log_query")],
)  # fmt: skip
def test_http_event_settings_errors_name_the_key(tmp_path, text, key):
    write(tmp_path / "sockguard.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings({}, str(tmp_path))
    assert info.value.key == key and key in str(info.value)
