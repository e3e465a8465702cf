"""Files the tools write get the mode ``open(path, "w")`` would give them (issue 17, item 13): 0666 minus the
umask for a new file, the old mode for a file that is replaced; never mkstemp's 0600 (the HTML report is
meant for sharing). Written atomically all the same."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sockguard import cli
from tests.test_report import event, write_log


@pytest.fixture
def workdir(unconfigured: Path) -> Path:
    (unconfigured / ".env").write_text("URL=http://198.51.100.7/\n")
    write_log(unconfigured / "app.jsonl", [event("api.example.test", 443)])
    return unconfigured


WRITERS = {
    "report -o": (["report", "app.jsonl", "-o", "out"], 0),
    "report --html": (["report", "app.jsonl", "--html", "out"], 0),
    "export -o": (["export", "--format", "nftables", "--allow", "198.51.100.0/24", "-o", "out"], 0),
    "audit -o": (["audit", ".env", "-o", "out"], 1),
    "audit --write-baseline": (["audit", ".env", "--write-baseline", "out"], 0),
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_new_files_honour_the_umask(workdir, capsys, writer, umask):
    argv, code = WRITERS[writer]
    old = os.umask(umask)
    try:
        assert cli.main(argv) == code, capsys.readouterr().err
    finally:
        os.umask(old)
    assert _mode(workdir / "out") == 0o666 & ~umask
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".sockguard-")) == []


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_replaced_file_keeps_its_mode(workdir, capsys, writer):
    argv, code = WRITERS[writer]
    target = workdir / "out"
    target.write_text("old")
    target.chmod(0o640)
    assert cli.main(argv) == code, capsys.readouterr().err
    assert _mode(target) == 0o640 and target.read_text() != "old"
