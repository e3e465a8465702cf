"""Rules broader than they look (issue 17, item 12): accepted with a warning in every front end, refused with
--strict; ``report --suggest`` never proposes a wildcard on a shared public suffix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sockguard import breadth, cli
from sockguard.rules import parse_rule
from tests.test_report import event, write_log

BROAD = [
    "*.com",
    "*.test",
    "*.co.uk",
    "*.github.io",
    "*.s3.amazonaws.com",
    "*.amazonaws.com",  # holds s3.amazonaws.com: everyone's buckets
    "*.blogspot.com",
    "*.com.xx",  # an unknown country's usual second level
    "0.0.0.0/0",
    "::/0",
    "[::ffff:0:0/96]",
    "128.0.0.0/1",
    "2000::/3",
    "*.github.io:443",
]
NARROW = ["api.example.com", "*.example.com", "*.alice.github.io", "github.io", "10.0.0.0/8", "2001:db8::/32"]
NARROW += ["203.0.113.0/24:443", "[::ffff:10.0.0.0/104]"]


@pytest.mark.parametrize("rule", BROAD)
def test_broad_rules_are_named(rule):
    (warning,) = breadth.broad_rules([parse_rule(rule)], breadth.PublicSuffixes(breadth.CURATED_SUFFIXES))
    assert repr(rule) in warning and "allows" in warning


@pytest.mark.parametrize("rule", NARROW)
def test_narrow_rules_pass(rule):
    assert breadth.broad_rules([parse_rule(rule)], breadth.PublicSuffixes(breadth.CURATED_SUFFIXES)) == []


def test_the_curated_suffixes_are_on_the_public_suffix_list():
    if not os.path.isfile(breadth.SYSTEM_LIST):
        pytest.skip(f"{breadth.SYSTEM_LIST} not installed (Debian package publicsuffix)")
    listed = set(breadth._read_list(breadth.SYSTEM_LIST))
    assert {s for s in breadth.CURATED_SUFFIXES if s not in listed} == set()


def test_a_full_list_adds_suffixes_and_honours_wildcards_and_exceptions(tmp_path, monkeypatch):
    psl = tmp_path / "list.dat"
    psl.write_text("// a comment\nexample-hosting.test\n*.ck\n!www.ck\n")
    monkeypatch.setenv("SOCKGUARD_PUBLIC_SUFFIX_LIST", str(psl))
    table = breadth.public_suffixes()
    assert table.is_public_suffix("example-hosting.test") and table.is_public_suffix("co.ck")
    assert not table.is_public_suffix("www.ck") and not table.is_public_suffix("example.test")
    assert breadth.shared_suffix("example-hosting.test")


@pytest.fixture
def workdir(unconfigured: Path) -> Path:
    (unconfigured / "sockguard.toml").write_text('allow = ["api.example.test", "*.github.io", "0.0.0.0/0"]\n')
    return unconfigured


@pytest.mark.parametrize(
    ("argv", "normal", "strict"),
    [
        (["status"], 0, 2),
        (["check", "api.example.test"], 0, 2),
        (["export", "--format", "json", "--no-resolve", "--no-dns"], 0, 1),
        (["audit", "."], 0, 1),
        (["run", "--", "true"], None, 2),  # None: exec'd (not run here)
    ],
)
def test_every_front_end_warns_and_strict_refuses(workdir, capsys, monkeypatch, argv, normal, strict):
    executed = []
    monkeypatch.setattr(os, "execvpe", lambda *a: executed.append(a))
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert "'*.github.io'" in err and "a public suffix" in err and "'0.0.0.0/0'" in err, err
    if normal is None:
        assert executed and code == 0
    else:
        assert code == normal, err
    executed.clear()
    strict_argv = [argv[0], "--strict", *argv[1:]]
    assert cli.main(strict_argv) == strict
    assert not executed  # run --strict does not start the program
    assert "--strict" in capsys.readouterr().err


def test_suggest_never_proposes_a_wildcard_on_a_shared_suffix(tmp_path, capsys):
    hosts = [f"user{i}.github.io" for i in range(6)] + [f"bucket{i}.s3.amazonaws.com" for i in range(6)]
    hosts += [f"blog{i}.blogspot.com" for i in range(6)] + [f"tenant{i}.cdn.example.test" for i in range(6)]
    log = write_log(tmp_path / "m.jsonl", [event(h, 443) for h in hosts])
    assert cli.main(["report", str(log), "--suggest", "--format", "json", "--wildcard-threshold", "2"]) == 0
    rules = [item["rule"] for item in json.loads(capsys.readouterr().out)["allow"]]
    assert "*.cdn.example.test:443" in rules  # ordinary siblings still collapse
    assert not [r for r in rules if r.startswith("*.") and "example.test" not in r], rules
    assert "user3.github.io:443" in rules and "bucket0.s3.amazonaws.com:443" in rules
