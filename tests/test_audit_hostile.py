"""``sockguard audit`` under hostile input (issue 17, items 5-9): it stays inside the tree it was given,
streams findings, never skips in silence, scans long values, escapes what it prints and survives any file
name and any baseline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sockguard import cli
from sockguard.audit.auditor import Auditor
from sockguard.policy import Policy


@pytest.fixture
def tree(unconfigured: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scanned tree (``tree/``) next to files that are not part of it (``outside/``)."""
    (unconfigured / "tree").mkdir()
    (unconfigured / "outside").mkdir()
    (unconfigured / "outside" / "secret.env").write_text("TOKEN_URL=http://169.254.169.254/latest/meta-data/\n")
    monkeypatch.chdir(unconfigured / "tree")
    return unconfigured / "tree"


def audit(*argv: str) -> int:
    return cli.main(["audit", *argv])


def report(capsys, *argv: str) -> tuple[int, dict, str]:
    code = audit("--format", "json", *argv)
    out, err = capsys.readouterr()
    return code, json.loads(out), err


# --- item 5: inside the tree --------------------------------------------------------------------------------------


def test_a_symlink_out_of_the_tree_is_reported_not_followed(tree, capsys):
    (tree / ".env").symlink_to(tree.parent / "outside" / "secret.env")
    (tree / "linked-dir").symlink_to(tree.parent / "outside")
    code, doc, _ = report(capsys, ".")
    assert doc["findings"] == []  # the outside file's content is not reported under the in-tree name
    problems = {p["path"]: p["error"] for p in doc["stats"]["problems"]}
    assert "outside the scanned tree" in problems[".env"] and "not followed" in problems[".env"]
    assert "a directory outside the scanned tree" in problems["linked-dir"]
    assert code == 0
    assert audit("--strict", ".") == 1  # not scanned counts under --strict
    capsys.readouterr()


def test_a_symlink_inside_the_tree_is_scanned_once(tree, capsys):
    (tree / "real.env").write_text("URL=http://198.51.100.7/\n")
    (tree / ".env").symlink_to(tree / "real.env")
    code, doc, _ = report(capsys, ".")
    assert code == 1 and len(doc["findings"]) == 1 and doc["stats"]["problems"] == []


@pytest.mark.parametrize("env_file", ["ABSOLUTE", "../outside/secret.env"])
def test_compose_env_file_outside_the_tree_is_reported_not_read(tree, capsys, env_file):
    target = str(tree.parent / "outside" / "secret.env") if env_file == "ABSOLUTE" else env_file
    (tree / "docker-compose.yml").write_text(f"services:\n  web:\n    image: x\n    env_file: {target}\n")
    code, doc, _ = report(capsys, ".")
    assert doc["findings"] == [] and code == 0
    (problem,) = doc["stats"]["problems"]
    assert problem["path"] == "docker-compose.yml" and "outside the scanned tree: not followed" in problem["error"]


def test_special_files_never_hang_the_scan(tree):
    """A FIFO named like a config file, inside the tree and behind a symlink: reported, never opened for a
    blocking read (a symlink to /proc/kmsg hung the scan as root)."""
    os.mkfifo(tree / ".env")
    os.mkfifo(tree.parent / "outside" / "pipe.env")
    (tree / "app.env").symlink_to(tree.parent / "outside" / "pipe.env")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_")}
    done = subprocess.run(
        [sys.executable, "-m", "sockguard", "audit", "--format", "json", "."],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = {p["path"]: p["error"] for p in json.loads(done.stdout)["stats"]["problems"]}
    assert "not a regular file" in problems[".env"]
    assert "outside the scanned tree" in problems["app.env"]
    explicit = subprocess.run(
        [sys.executable, "-m", "sockguard", "audit", "--format", "json", ".env"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "not a regular file" in explicit.stdout


# --- item 6: long values -------------------------------------------------------------------------------------------


def test_a_long_value_is_scanned_and_its_finding_shown_clipped(tree, capsys):
    (tree / ".env").write_text("VPN_GATE_URL=http://169.254.169.254/?x=" + "A" * 100_000 + "\n")
    code, doc, _ = report(capsys, ".")
    assert code == 1
    (finding,) = doc["findings"]
    assert finding["classification"] == "metadata" and finding["line"] == 1 and finding["column"] == 14
    assert len(finding["value"]) < 500 and finding["value"].endswith("characters)")
    assert audit(".") == 1 and "169.254.169.254" in capsys.readouterr().out


def test_many_destinations_in_one_long_value_get_their_own_positions(tree, capsys):
    value = ",".join(f"10.0.{i >> 8}.{i & 255 or 1}:80" for i in range(5_000))
    (tree / "app.ini").write_text(f"[upstreams]\nservers = {value}\n")
    _, doc, _ = report(capsys, ".")
    assert len(doc["findings"]) == 5_000
    text = (tree / "app.ini").read_text().splitlines()[1]
    for finding in doc["findings"][::500]:
        assert text[finding["column"] - 1 :].startswith(finding["value"])


# --- item 7: streamed ----------------------------------------------------------------------------------------------


def test_findings_are_streamed_not_collected(tree):
    (tree / "hosts.yaml").write_text("hosts:\n" + "".join(f"  - 10.1.{i >> 8}.{i & 255 or 1}\n" for i in range(20_000)))
    auditor = Auditor(Policy([]), cwd=str(tree))
    stream = auditor.scan_paths([str(tree)])
    first = next(stream)
    assert first.kind == "internal-address" and auditor.count == 1  # one finding made, not 20,000 held
    assert sum(1 for _ in stream) == 19_999


# --- item 8: what reaches the terminal ----------------------------------------------------------------------------


def test_escape_sequences_never_reach_the_terminal(tree, capsys):
    (tree / "x\x1b[2J.env").write_text("KEY=http://198.51.100.7/\x1b[31m\x07\n")
    (tree / "app.yaml").write_text('"k\\e]0;title\\a": http://198.51.100.9/\n')
    (tree / ".env").write_text('URL="http://198.51.100.8/\\u001b[1A"\n')
    assert audit(".") == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "x\\x1b[2J.env" in out and "\\x1b[31m\\x07" in out and "k\\x1b]0;title\\x07=" in out
    assert out.count("error[raw-ip]") == 3


# --- item 9: any file name, any baseline -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_undecodable_file_names_survive_json_and_sarif(tree, capsys, fmt):
    name = os.fsencode(tree) + b"/bad\xff\xfe.env"
    with open(name, "wb") as fh:
        fh.write(b"URL=http://198.51.100.7/\n")
    assert audit("--format", fmt, "-o", "r.out", ".") == 1, capsys.readouterr().err
    doc = json.loads((tree / "r.out").read_text(encoding="utf-8"))
    text = json.dumps(doc)
    assert "bad\\\\xff\\\\xfe.env" in text or "bad%5Cxff%5Cxfe.env" in text  # the bytes, escaped, not lost
    if fmt == "sarif":
        pytest.importorskip("jsonschema").Draft4Validator(
            json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
        ).validate(doc)


def test_lone_surrogates_in_values_survive_json(tree, capsys):
    (tree / "config.json").write_text('{"upstream_host": "http://198.51.100.7/\\ud800"}\n')
    assert audit("--format", "json", "-o", "r.json", ".") == 1
    assert json.loads((tree / "r.json").read_text(encoding="utf-8"))["findings"][0]["host"] == "198.51.100.7"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[" * 100_000, "nested too deeply"),
        (b"\xff\xfe{", "not valid JSON"),
        ('{"version": 1, "findings": [{"fingerprint": "x", "count": true}]}', "entry 0"),
        ('{"version": 1, "findings": "all"}', "expected {'version': 1"),
    ],
)
def test_a_malformed_baseline_is_a_clear_error(tree, capsys, content, message):
    path = tree / "baseline.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert audit("--baseline", "baseline.json", ".") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_not_scanned_counts_under_strict(tree, capsys):
    (tree / "blob.env").write_bytes(b"\x00\x01binary")
    (tree / "huge.env").write_bytes(b"A=" + b"x" * (10 * 1024 * 1024 + 1))
    assert audit(".") == 0
    out = capsys.readouterr().out
    assert "not scanned: 2 (--strict makes that exit 1)" in out
    assert "binary content" in out and "larger than 10 MiB" in out
    assert audit("--strict", ".") == 1
    capsys.readouterr()
