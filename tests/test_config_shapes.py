"""Configuration of the wrong shape, in every front end (issue 17, item 10).

Each broken file must give exit status 2 and one clear message naming the file and the key, never a
traceback: ``sockguard status``, ``check``, ``export``, ``audit`` and ``run`` (which must not start the program).
"""

from __future__ import annotations

import pytest

from sockguard import cli

#: (file name, content, what the message must name besides the file)
BROKEN = [
    ("pyproject.toml", 'tool = "sockguard"\n', "tool must be a table"),
    ("pyproject.toml", "[tool]\nsockguard = 5\n", "[tool.sockguard] must be a table"),
    ("pyproject.toml", "[[tool.sockguard]]\nallow = []\n", "[tool.sockguard] must be a table"),
    ("pyproject.toml", "[tool.sockguard]\nallow = 5\n", "allow must be a list of rule strings"),
    ("sockguard.toml", "allow = [1, 2]\n", "allow must be a list of rule strings"),
    ("sockguard.toml", 'allow = ["http://api.example.test/"]\n', "allow"),
    ("sockguard.toml", 'mode = ["enforce"]\n', "mode must be one of"),
    ("sockguard.toml", "log = 5\n", "log must be a file path string"),
    ("sockguard.toml", 'allow_loopback = "maybe"\n', "allow_loopback must be true/false"),
    ("sockguard.toml", "breaker = [1]\n", "[breaker] must be a table"),
    ("sockguard.toml", "[breaker]\nthreshold = []\n", "breaker.threshold"),
    ("sockguard.toml", "resolver = 5\n", "resolver"),
    ("sockguard.toml", '[resolver]\ntimeout = "soon"\n', "resolver.timeout"),
    ("sockguard.toml", "pytest = 5\n", "[pytest] must be a table"),
    ("sockguard.toml", "alow = []\n", "unknown key 'alow'"),
    ("sockguard.toml", b'allow = ["\xff"]\n', "not UTF-8"),
    ("sockguard.toml", "allow = " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
    ("sockguard.toml", "allow = [\n", "is not valid TOML"),
]
FRONT_ENDS = {
    "status": ["status"],
    "check": ["check", "https://api.example.test/"],
    "export": ["export", "--format", "json", "--no-resolve"],
    "audit": ["audit", "."],
    "run": ["run", "--", "false"],
}


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
@pytest.mark.parametrize(("name", "content", "message"), BROKEN, ids=[f"{n}:{m}" for n, _, m in BROKEN])
def test_wrong_shape_is_a_clear_error_in_every_front_end(unconfigured, capsys, front_end, name, content, message):
    path = unconfigured / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    code = cli.main(FRONT_ENDS[front_end])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and str(path) in err, err
    assert "Traceback" not in err
    if front_end == "run":
        assert "not starting the program" in err


def test_error_messages_escape_control_characters(unconfigured, capsys, monkeypatch):
    """A configuration path comes from the environment or a flag: printed on a terminal, it is escaped."""
    monkeypatch.setenv("SOCKGUARD_CONFIG", str(unconfigured / "\x1b[2Jgone.toml"))
    for argv in (["status"], ["check", "api.example.test"], ["export", "--format", "json"], ["audit", "."]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "\x1b" not in err and "\\x1b[2Jgone.toml" in err, err
