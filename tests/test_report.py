"""`sockguard report`: summaries, learn-mode suggestions, the HTML page (rendered in
headless Chromium), hostile and broken logs, and bounded memory on large logs."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tomllib
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sockguard
from sockguard import cli
from sockguard.config import load_settings
from sockguard.events import make_event
from sockguard.report.cli import Progress
from sockguard.report.fields import BUCKETS, CACHE_MAX, MAX_ADDRESSES, MAX_CALLERS, MAX_GLOBAL
from sockguard.report.html import COLORS, render_html
from sockguard.report.summary import Clock, Series, Summary
from sockguard.sinks import Sinks
from tests.loopback import CountingTCPServer

T0 = 1_700_000_000.0
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "report"
_ENCODE = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str).encode  # as Sinks writes


def event(
    host: str | None,
    port: int | None,
    decision: str = "would-block",
    *,
    address: str | None = None,
    op: str = "connect",
    reason: str = "not-allowed",
    ts: float = T0,
    caller: str = "app.client:fetch:10",
    mode: str = "monitor",
    rule: str | None = None,
) -> dict:
    made = make_event(
        operation=op,
        protocol="dns" if op == "resolve" else "tcp",
        host=host,
        port=port,
        address=address,
        decision=decision,
        reason=reason,
        rule=rule,
        mode=mode,
        caller=caller,
    )
    made["ts"] = ts
    return made


def write_log(path: Path, events: list[dict], tail: str = "") -> Path:
    with open(path, "w") as fh:
        for item in events:
            fh.write(_ENCODE(item) + "\n")
        fh.write(tail)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _strict(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def report_json(capsys, *argv: str) -> dict:
    code, out, _ = run(capsys, *argv, "--format", "json")
    assert code == 0
    return json.loads(out, parse_constant=_strict)  # strict JSON: no NaN / Infinity


def by_destination(data: dict) -> dict[str, dict]:
    return {d["destination"]: d for d in data["destinations"]}


# -- summary --------------------------------------------------------------------------


def test_summary_lists_destinations_with_counts_addresses_callers_and_times(tmp_path, capsys):
    log = write_log(
        tmp_path / "app.jsonl",
        [
            event("api.example.test", 443, "allow", op="resolve", reason="allowed-name", ts=T0),
            event("api.example.test", 443, "allow", address="203.0.113.5", reason="allowed-name", ts=T0 + 1),
            event("api.example.test", 443, "allow", address="203.0.113.6", reason="allowed-name", ts=T0 + 2),
            event("API.Example.test.", 443, "allow", op="resolve", reason="allowed-name", ts=T0 + 3),
            event("telemetry.vendor.example", 443, address="198.51.100.7", ts=T0 + 4, caller="vendor.sdk:ping:7"),
            event("telemetry.vendor.example", 443, address="198.51.100.7", ts=T0 + 9, caller="vendor.sdk:ping:7"),
            event(None, 8443, "block", address="203.0.113.99", reason="raw-ip", ts=T0 + 5, mode="enforce"),
        ],
    )
    data = report_json(capsys, str(log))
    assert data["events"] == 7 and data["malformed"]["count"] == 0
    assert data["decisions"] == {"allow": 4, "would-block": 2, "block": 1}
    dests = by_destination(data)
    assert list(dests) == ["telemetry.vendor.example:443", "203.0.113.99:8443", "api.example.test:443"]
    api = dests["api.example.test:443"]  # case and trailing dot folded into one destination
    assert api["events"] == 4 and api["ops"] == {"resolve": 2, "connect": 2}
    assert [a["address"] for a in api["addresses"]] == ["203.0.113.5", "203.0.113.6"]
    assert (api["first_seen"], api["last_seen"]) == (T0, T0 + 3)
    vendor = dests["telemetry.vendor.example:443"]
    assert vendor["decisions"]["would-block"] == 2
    assert vendor["callers"] == [{"caller": "vendor.sdk:ping:7", "events": 2, "blocked": 2}]
    assert dests["203.0.113.99:8443"]["kind"] == "ip"
    assert {p["kind"] for p in data["patterns"]} >= {"raw-ip", "modes"}

    code, text, _ = run(capsys, str(log))
    assert code == 0
    assert "telemetry.vendor.example:443  [name]  2 events: would-block 2" in text
    assert "callers vendor.sdk:ping:7 (2)" in text
    assert "addresses 203.0.113.5 (1), 203.0.113.6 (1)" in text
    assert "Blocked and would-block: 3 events to 2 destinations" in text
    assert "reached by raw IP, without a name: 203.0.113.99:8443" in text


def test_retry_loop_is_one_caller_hammering_one_destination(tmp_path, capsys):
    loop = [event("health.vendor.example", 443, ts=T0 + 5 * i, caller="app.health:probe:42") for i in range(25)]
    busy = [event("busy.vendor.example", 443, ts=T0 + i, caller=f"app.views:page{i}:1") for i in range(25)]
    data = report_json(capsys, str(write_log(tmp_path / "r.jsonl", loop + busy)))
    loops = [p for p in data["patterns"] if p["kind"] == "retry-loop"]
    assert [p["destinations"] for p in loops] == [["health.vendor.example:443"]]
    assert "25 times over 2m, about every 5.0 s, 100% from app.health:probe:42" in loops[0]["message"]


def test_report_on_a_log_written_by_the_real_guard(tmp_path, capsys):
    """Monitor mode with loopback standing in for remote hosts: the far side
    counts the connects that would have been blocked, and the report names the
    calling test function."""
    log = tmp_path / "guard.jsonl"
    with CountingTCPServer("127.0.0.2") as allowed, CountingTCPServer("127.0.0.3") as other:
        with sockguard.guarded(allow=["127.0.0.2"], mode="monitor", allow_loopback=False, log=str(log)):
            for _ in range(3):
                socket.create_connection((allowed.host, allowed.port), timeout=2).close()
                socket.create_connection((other.host, other.port), timeout=2).close()
        assert other.settle(3) == 3  # monitor mode: nothing was stopped
    data = report_json(capsys, str(log))
    dests = by_destination(data)
    would = dests[f"127.0.0.3:{other.port}"]
    assert would["decisions"] == {"allow": 0, "would-block": 3, "block": 0}
    assert would["reasons"] == {"raw-ip": 3} and would["internal_categories"] == ["loopback"]
    assert would["callers"][0]["caller"].startswith("tests.test_report:test_report_on_a_log_written_by_the_real_guard:")
    assert dests[f"127.0.0.2:{allowed.port}"]["decisions"]["allow"] == 3
    assert dests[f"127.0.0.2:{allowed.port}"]["rules"] == {"127.0.0.2": 3}

    code, toml_text, _ = run(capsys, str(log), "--suggest")
    assert code == 0
    table = tomllib.loads(toml_text)
    assert table["allow"] == []  # loopback is never an allowlist entry...
    assert "allow_loopback = true" in toml_text  # ...and the way to allow it is spelled out


def test_several_logs_and_stdin_are_one_report(tmp_path, capsys, monkeypatch):
    one = write_log(tmp_path / "1.jsonl", [event("a.example.test", 443, ts=T0)])
    two = write_log(tmp_path / "2.jsonl", [event("a.example.test", 443, ts=T0 + 60)])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(two.read_bytes())))
    data = report_json(capsys, str(one), "-")
    assert [f["path"] for f in data["files"]] == [str(one), "<stdin>"]
    assert by_destination(data)["a.example.test:443"]["events"] == 2
    assert (data["first_seen"], data["last_seen"]) == (T0, T0 + 60)


def test_output_file_is_written_whole(tmp_path, capsys):
    log = write_log(tmp_path / "o.jsonl", [event("a.example.test", 443)])
    out = tmp_path / "report.json"
    code, stdout, _ = run(capsys, str(log), "--format", "json", "-o", str(out))
    assert code == 0 and stdout == "" and json.loads(out.read_text())["events"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl", "report.json"]  # no temporary left over
    assert run(capsys, str(log), "-o", os.devnull)[0] == 0  # not a regular file: written in place
    assert not [p for p in Path(os.devnull).parent.iterdir() if p.name.startswith("null.tmp")]


# -- broken and hostile logs ---------------------------------------------------------------


def test_malformed_lines_are_counted_with_line_numbers_and_never_abort(tmp_path, capsys):
    good = _ENCODE(event("ok.example.test", 443))
    lines = [
        good,
        "this is not json",  # 2
        "[1, 2, 3]",  # 3
        json.dumps({"event": "decision", "decision": "allow", "host": "x.test"}),  # 4: no ts
        json.dumps({**event("x.test", 443), "port": "443"}),  # 5: port is a string
        json.dumps({**event("x.test", 443), "decision": "maybe"}),  # 6
        "",  # blank: ignored
        json.dumps(
            {**event("flaky.example.test", 443, "alert", reason="retry-storm"), "event": "alert", "state": "firing"}
        ),
        json.dumps({"event": "future-kind", "ts": T0, "whatever": {"nested": [1, 2]}, "x": float("nan")}),
        good,
        "[" * 100_000,  # 11: nested too deeply for the JSON parser
        json.dumps({**event("x.test", 443), "ts": float("nan")}),  # 12: NaN is not a time
    ]
    raw = ("\n".join(lines) + "\n").encode() + b"\xff\xfe not utf-8\n" + b"x" * (1 << 20) + b"\n"
    raw += good.encode() + b"\n" + good[:40].encode()  # killed mid-write: truncated last line
    log = tmp_path / "broken.jsonl"
    log.write_bytes(raw)
    data = report_json(capsys, str(log))
    assert data["events"] == 3
    assert data["malformed"]["count"] == 9
    where = [int(m["line"].rsplit(":", 1)[1]) for m in data["malformed"]["first"]]
    assert where == [2, 3, 4, 5, 6, 11, 12, 13, 14]
    problems = " | ".join(m["problem"] for m in data["malformed"]["first"])
    for expected in ("not JSON", "not a JSON object", "'ts'", "'port'", "unknown decision", "not UTF-8", "longer"):
        assert expected in problems
    assert data["truncated_last_lines"] == [f"{log}:{len(lines) + 4}"]
    assert data["other_events"]["kinds"] == {"alert": 1, "future-kind": 1}
    assert data["other_events"]["samples"][0]["host"] == "flaky.example.test"
    assert data["other_events"]["detail"] == {"alert": {"retry-storm firing": 1}}
    assert "1 breaker alert(s): retry-storm firing 1" in [p["message"] for p in data["patterns"]]
    code, text, _ = run(capsys, str(log))
    assert code == 0 and "Malformed lines: 9 (skipped)" in text and "Other events: alert 1, future-kind 1" in text


def test_hostile_strings_cannot_reach_the_terminal_or_the_toml(tmp_path, capsys):
    evil_host = 'x.test"]\nallow = ["*.evil.test"]\n#\x1b[2J'
    evil_caller = "mod:fn:1\n\x1b]0;pwned\x07"
    log = write_log(
        tmp_path / "evil.jsonl",
        [event(evil_host, 443, caller=evil_caller, reason="invalid-host"), event("fine.example.test", 443)],
    )
    code, text, _ = run(capsys, str(log), "--top", "0")
    assert code == 0 and "\x1b" not in text and "\x07" not in text and "\\x1b" in text
    code, toml_text, _ = run(capsys, str(log), "--suggest")
    assert code == 0 and "\x1b" not in toml_text
    table = tomllib.loads(toml_text)
    assert table["allow"] == ["fine.example.test:443"]
    assert set(table) == {"mode", "allow"}


def test_unreadable_inputs_and_usage_errors_exit_2(tmp_path, capsys):
    code, _, err = run(capsys, str(tmp_path / "missing.jsonl"))
    assert code == 2 and "missing.jsonl" in err and "No such file" in err
    code, _, err = run(capsys, str(tmp_path))
    assert code == 2 and "is a directory" in err
    garbage = tmp_path / "notes.txt"
    garbage.write_text("hello\nworld\n")
    code, _, err = run(capsys, str(garbage))
    assert code == 2 and "holds no sockguard events" in err and "notes.txt:1: not JSON" in err
    log = write_log(tmp_path / "ok.jsonl", [event("a.example.test", 443)])
    code, _, err = run(capsys, str(log), "--html", str(tmp_path / "no-such-dir" / "page.html"))
    assert code == 2 and "cannot write HTML" in err
    for bad in (["--port-limit", "-1"], ["--max-destinations", "0"], ["--format", "xml"]):
        with pytest.raises(SystemExit) as info:
            cli.main(["report", str(log), *bad])
        assert info.value.code == 2
    capsys.readouterr()


def test_empty_log_is_an_empty_report(tmp_path, capsys):
    log = tmp_path / "empty.jsonl"
    log.write_text("")
    data = report_json(capsys, str(log))
    assert data["events"] == 0 and data["destinations"] == [] and data["timeline"]["buckets"] == []
    code, out, _ = run(capsys, str(log), "--suggest")
    assert code == 0 and tomllib.loads(out)["allow"] == []


def test_fail_on_block_exit_codes(tmp_path, capsys):
    allowed = write_log(tmp_path / "allowed.jsonl", [event("a.example.test", 443, "allow", reason="allowed-name")])
    would = write_log(tmp_path / "would.jsonl", [event("b.example.test", 443, "would-block")])
    blocked = write_log(tmp_path / "blocked.jsonl", [event("b.example.test", 443, "block", mode="enforce")])
    assert run(capsys, str(allowed), "--fail-on-block")[0] == 0
    assert run(capsys, str(would), "--fail-on-block")[0] == 1
    assert run(capsys, str(blocked), "--fail-on-block", "--format", "json")[0] == 1
    assert run(capsys, str(blocked))[0] == 0  # without the flag a block is just reported


def test_progress_goes_to_stderr_only_when_asked(tmp_path, capsys):
    log = write_log(tmp_path / "p.jsonl", [event("a.example.test", 443, ts=T0 + i) for i in range(50_000)])
    code, out, err = run(capsys, str(log), "--progress", "--format", "json")
    assert code == 0 and json.loads(out)["events"] == 50_000
    assert "sockguard report: done, 50,000 lines" in err
    code, out, err = run(capsys, str(log))  # stderr is not a TTY here: quiet by default
    assert code == 0 and err == ""


def test_progress_on_a_terminal_redraws_one_line():
    stream = io.StringIO()
    progress = Progress(stream, tty=True, total=4 * 2**20)
    progress.next = 0.0  # as if half a second had passed
    progress.update("big.jsonl", 2**20, 5000)
    progress.close(5000)
    text = stream.getvalue()
    assert text.startswith("\rsockguard report: big.jsonl: 5,000 lines, 1.0 MB (25%)") and "\x1b[K" in text
    assert text.endswith("\rsockguard report: 5,000 lines in 0.0 s\x1b[K\n")


# -- suggestions ----------------------------------------------------------------------------


def _monitor_log() -> list[dict]:
    """What a monitor-mode run might record, with every awkward case."""
    e = []
    t = T0
    for i in range(3):  # resolve (port known), then connect by address: one destination
        e.append(event("api.example.test", 443, op="resolve", ts=t + i))
        e.append(event("api.example.test", 443, address="203.0.113.10", ts=t + i + 0.1))
    e.append(event("api.example.test", None, op="resolve", ts=t + 5))  # gethostbyname: no port
    for port in (8001, 8002, 8003, 8004):  # more ports than --port-limit: any-port rule
        e.append(event("busy.example.test", port, address="203.0.113.11", ts=t + port / 1000))
    e.append(event("ws.example.test", 80, address="203.0.113.12"))
    e.append(event("ws.example.test", 443, address="203.0.113.12"))
    e.append(event("Mixed.Example.test", 5432, address="198.51.100.20"))  # public and internal answers
    e.append(event("mixed.example.test", 5432, address="10.20.30.40"))
    e.append(event(None, 9000, address="198.51.100.99", reason="raw-ip"))
    e.append(event(None, 9000, op="send", address="2001:db8::99", reason="raw-ip"))
    e.append(event("db.corp.example.test", 5432, address="10.0.0.5"))  # resolves only internally
    e.append(event(None, 80, address="169.254.169.254", reason="raw-ip"))  # metadata address
    e.append(event("metadata.google.internal", 80, op="resolve", reason="metadata-name"))
    e.append(event("blocked.example.test", 443, reason="denied", rule="blocked.example.test:443"))
    e.append(event("blocked.example.test", 8080, address="203.0.113.31"))  # same host, another port: not denied
    e.append(event("already.example.test", 443, "allow", address="203.0.113.30", reason="allowed-name"))
    e.append(event("old.example.test", 443, "block", mode="enforce"))  # only ever blocked (enforce)
    e.append(event("instance-data", 80, "block", mode="enforce", reason="metadata-name"))
    for n in range(4):
        e.append(event(f"n{n}.cdn.example.test", 443, address=f"203.0.113.{40 + n}"))
    return e


WITHHELD = {"mixed.example.test": "10.20.30.40", "db.corp.example.test": "10.0.0.5", None: "169.254.169.254"}


def _allowed_by(policy, item: dict) -> bool:
    """The checks the guard makes for this event (lookup, or connect/send)."""
    host, port, address = item["host"], item["port"], item["address"]
    if item["op"] == "resolve" and address is None:
        return policy.check_name(host, port).allowed
    if host is None:
        return policy.check_address(address, port).allowed
    return policy.check_name(host, port).allowed and policy.check_address(address, port, host.lower()).allowed


def test_suggested_allowlist_loads_and_allows_every_would_block_destination(tmp_path, capsys):
    events = _monitor_log()
    log = write_log(tmp_path / "monitor.jsonl", events)
    code, toml_text, _ = run(capsys, str(log), "--suggest")
    assert code == 0
    config = tmp_path / "suggested.toml"
    config.write_text(toml_text)
    settings = load_settings({"SOCKGUARD_CONFIG": str(config)}, str(tmp_path))
    assert settings.source == str(config) and settings.mode == "enforce"
    assert [rule.text for rule in settings.allow] == [
        "already.example.test:443",
        "api.example.test:443",
        "blocked.example.test:8080",
        "busy.example.test",
        "n0.cdn.example.test:443",
        "n1.cdn.example.test:443",
        "n2.cdn.example.test:443",
        "n3.cdn.example.test:443",
        "mixed.example.test:5432",
        "ws.example.test:80",
        "ws.example.test:443",
        "198.51.100.99:9000",
        "[2001:db8::99]:9000",
    ]
    policy = settings.build_policy()
    for item in events:
        if item["decision"] == "allow" or (item["decision"] == "would-block" and item["reason"] != "denied"):
            internal = item["address"] in WITHHELD.values() or item["host"] == "metadata.google.internal"
            assert _allowed_by(policy, item) is not internal, item
    assert not policy.check_name("blocked.example.test", 443).allowed  # deny rules are never overridden
    assert not policy.check_name("old.example.test", 443).allowed  # enforce-mode blocks are not learned
    assert not policy.check_name("api.example.test", 80).allowed  # port-scoped
    assert policy.check_name("busy.example.test", 9999).allowed  # more than 3 ports: any port

    withheld = [line.strip() for line in toml_text.splitlines() if line.strip().startswith("#")]
    for rule in ('# "10.0.0.5:5432",', '# "db.corp.example.test:5432",', '# "169.254.169.254:80",'):
        assert rule in withheld
    assert '# "10.20.30.40:5432",' in withheld and '# "metadata.google.internal:80",' in withheld
    assert '# "old.example.test:443",' in withheld
    text = " ".join(withheld)
    assert "WARNING: db.corp.example.test:5432: resolves only to internal addresses (private)" in text
    assert "WARNING: 169.254.169.254:80: internal address (metadata)" in text
    assert "raw IP, no name was used" in text and "deny rule" in text
    assert "WARNING: instance-data:80: only ever blocked (enforce mode); cloud metadata name" in text
    assert "# old.example.test:443: only ever blocked (enforce mode); block 1" in text


def test_suggest_json_and_port_limit(tmp_path, capsys):
    log = write_log(tmp_path / "m.jsonl", _monitor_log())
    data = report_json(capsys, str(log), "--suggest", "--port-limit", "0")
    rules = [item["rule"] for item in data["allow"]]
    assert "api.example.test" in rules and "ws.example.test" in rules  # 0 = never port-scoped
    assert {tuple(w["rules"]) for w in data["withheld"]} >= {("db.corp.example.test", "10.0.0.5")}
    assert all(w["warning"] for w in data["withheld"] if "10.0.0.5" in w["rules"])


def test_wildcards_only_above_the_threshold_and_never_on_a_public_suffix(tmp_path, capsys):
    events = [event(f"n{n}.cdn.example.test", 443) for n in range(4)] + [event("cdn.example.test", 443)]
    events += [event(f"shop{n}.co.xy", 443) for n in range(5)]
    log = write_log(tmp_path / "w.jsonl", events)

    def rules(*flags: str) -> list[str]:
        code, out, _ = run(capsys, str(log), "--suggest", *flags)
        assert code == 0
        config = tmp_path / "w.toml"
        config.write_text(out)
        return [rule.text for rule in load_settings({"SOCKGUARD_CONFIG": str(config)}, str(tmp_path)).allow]

    assert "*.cdn.example.test:443" not in rules()  # off by default
    assert "*.cdn.example.test:443" not in rules("--wildcard-threshold", "4")  # 4 siblings: not MORE than 4
    collapsed = rules("--wildcard-threshold", "3")
    assert "*.cdn.example.test:443" in collapsed and "cdn.example.test:443" in collapsed  # apex stays
    assert not any(r.startswith("n0.") for r in collapsed)
    assert not any(r.startswith("*.co.xy") for r in collapsed) and "shop0.co.xy:443" in collapsed


# -- bounded memory on large logs ---------------------------------------------------------


def _big_log(path: Path, lines: int, destinations: int, seed: int = 7) -> Path:
    """Many destinations, each with more callers and addresses than are itemised;
    timestamps mostly increasing with some out of order."""
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(lines):
            d = rng.randrange(destinations)
            decision = ("allow", "would-block", "block")[d % 3]
            item = event(
                f"svc{d}.example.test",
                443 + d % 2,
                decision,
                address=f"203.0.113.{i % 200}",
                caller=f"app.m{i % 50}:f:{i % 7}",
                ts=T0 + i * 0.05 - rng.random() * 3,
            )
            item["pid"] = 1000 + i % 3000
            fh.write(_ENCODE(item) + "\n")
    return path


def test_large_log_uses_bounded_structures(tmp_path):
    """50k lines: the aggregates have the same bounded shape as for a small log and
    the totals stay exact; the 1M-line numbers are in benchmarks/report_scale.py."""
    shapes = []
    for lines in (5_000, 50_000):
        summary = Summary(max_destinations=100)
        with open(_big_log(tmp_path / f"{lines}.jsonl", lines, destinations=300), "rb") as fh:
            summary.read("big", fh)
        summary.finish()
        assert summary.events == lines and summary.malformed == 0
        dests = list(summary.destinations.values())
        assert len(dests) == 100
        assert sum(d.events for d in dests) + summary.overflow_events == lines
        assert [sum(col) for col in zip(*summary.timeline, strict=True)] == summary.counts
        for d in dests:
            assert len(d.callers) <= MAX_CALLERS and len(d.addresses) <= MAX_ADDRESSES
            assert sum(n for n, _ in d.callers.values()) + d.caller_more == d.events
            assert sum(d.addresses.values()) + d.address_more == d.events
            timeline = summary.dense(d.series)
            assert len(d.series.counts) == 3 * BUCKETS and len(timeline) <= BUCKETS
            assert [sum(col) for col in zip(*timeline, strict=True)] == d.counts
        assert len(summary.pids) <= MAX_GLOBAL and len(summary.blocked_callers) <= MAX_GLOBAL
        assert len(summary._hosts) <= CACHE_MAX and len(summary._addrs) <= CACHE_MAX
        shapes.append(
            (
                len(summary.destinations),
                max(len(d.callers) for d in dests),
                max(len(d.addresses) for d in dests),
                len(summary.overflow_domains),
            )
        )
    assert shapes[0] == shapes[1]  # ten times the lines, the same structure sizes
    streamed = json.loads("".join(summary.json_chunks()))  # the CLI's streamed JSON is the same report
    assert streamed == json.loads(json.dumps(summary.to_json())) and len(streamed["destinations"]) == 100


def test_streaming_reads_a_pipe_line_by_line(tmp_path):
    """The reader only ever asks for one line: it works on a non-seekable pipe
    and never reads more than one (bounded) line ahead."""
    log = _big_log(tmp_path / "pipe.jsonl", 2_000, destinations=10)
    reads = []

    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readline(self, size: int = -1) -> bytes:
            reads.append(size)
            return self.data.readline(size)

    summary = Summary()
    summary.read("pipe", Pipe(log.read_bytes()))  # type: ignore[arg-type]
    assert summary.events == 2_000 and set(reads) == {1 << 20}


def test_suggestion_past_max_destinations_says_it_is_incomplete(tmp_path, capsys):
    log = write_log(tmp_path / "many.jsonl", [event(f"h{i}.example.test", 443) for i in range(30)])
    code, out, err = run(capsys, str(log), "--suggest", "--max-destinations", "10")
    assert code == 0 and "INCOMPLETE" in err and "# WARNING: INCOMPLETE. 20 events" in out
    assert len(tomllib.loads(out)["allow"]) == 10
    data = report_json(capsys, str(log), "--max-destinations", "10")
    assert len(data["destinations"]) == 10 and data["overflow"]["events"]["would-block"] == 20
    assert data["decisions"]["would-block"] == 30  # totals stay exact


def test_a_bucket_count_past_32_bits_widens_instead_of_failing():
    series = Series()
    series.add(5, 0, 2)
    series.counts[2] = 2**32 - 1
    series.add(5, 0, 2)
    assert series.counts.typecode == "Q" and series.dense(0, 5, 1) == [(0, 0, 2**32)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(min_value=T0, max_value=T0 + 10 * 86400, allow_nan=False), st.integers(0, 2)),
        min_size=1,
        max_size=300,
    )
)
def test_timeline_buckets_match_a_direct_count(points):
    """However the width grows and whatever the order, each event lands in the
    bucket floor(ts / width) of the final width."""
    clock, series = Clock(), Series()
    for ts, column in points:
        i = clock.index(ts)
        series.add(i, clock.level, column)
    n = clock.hi - clock.lo + 1
    assert n <= BUCKETS
    got = series.dense(clock.level, clock.lo, n)
    expected = [[0, 0, 0] for _ in range(n)]
    for ts, column in points:
        expected[int(ts / clock.width) - clock.lo][column] += 1
    assert [list(row) for row in got] == expected


# -- HTML ---------------------------------------------------------------------------------

HOSTILE_HOST = "<script>alert(1)</script>.test"


def _html_log(path: Path) -> Path:
    events = []
    for i in range(120):
        t = T0 + i * 5
        events.append(event("api.example.test", 443, "allow", address="203.0.113.5", reason="allowed-name", ts=t))
        if i % 3 == 0:
            events.append(event("telemetry.vendor.example", 443, address="198.51.100.7", ts=t + 1))
        if i % 4 == 0:
            events.append(event(None, 8443, "block", address="203.0.113.99", reason="raw-ip", ts=t + 2))
        if 40 <= i < 80:
            events.append(event(HOSTILE_HOST, 80, reason="invalid-host", caller="<img src=x onerror=alert(2)>", ts=t))
    return write_log(path, events)


def test_html_is_self_contained_and_escapes_log_values(tmp_path, capsys):
    page = tmp_path / "report.html"
    code, _, _ = run(capsys, str(_html_log(tmp_path / "h.jsonl")), "--html", str(page))
    assert code == 0
    html = page.read_text()
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.test" in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    for external in ("http://", "https://", "//", "url(", "@import", "src=", "href="):
        assert external not in html.replace("&lt;img src=x", ""), external
    assert "default-src 'none'" in html  # and the browser would refuse any script anyway


def test_html_escapes_every_string_from_the_log():
    summary = Summary()
    marker = "<b>x</b>"
    summary.add({**event(marker, 1, caller=marker, reason=marker, rule=marker, mode=marker), "op": marker})
    summary.add({"event": marker, "ts": T0, "host": marker})
    summary.add({**event("a.test", 1), "address": marker})
    summary.finish()
    html = "".join(render_html(summary))
    assert marker not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-pings",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # belt and braces: no name resolves at all
        "--proxy-server=127.0.0.1:9",  # and anything that tried would hit a closed loopback port
        f"--user-data-dir={profile}",
    ]
    return subprocess.run(
        [shutil.which("chromium") or "chromium", *flags, *args], capture_output=True, timeout=180, check=False
    )


def _png_pixels(data: bytes) -> tuple[int, int, dict[bytes, int]]:
    """Width, height and a colour histogram of an 8-bit RGB(A) PNG (no Pillow needed)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, bpp = 8, [], 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and ctype in (2, 6)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    histogram: dict[bytes, int] = {}
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            else:
                break
        for x in range(0, stride, bpp):
            pixel = bytes(line[x : x + 3])
            histogram[pixel] = histogram.get(pixel, 0) + 1
        prev = line
    return width, height, histogram


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not on PATH (apt-get install chromium)")
def test_html_renders_table_and_chart_in_headless_chromium(tmp_path, capsys):
    page = tmp_path / "report.html"
    data = report_json(capsys, str(_html_log(tmp_path / "h.jsonl")), "--html", str(page))
    url = page.as_uri()

    dom = _chromium("--dump-dom", url, profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    rendered = dom.stdout.decode()
    assert rendered.count('<tr class="dest ') == len(data["destinations"]) == 4
    assert '<svg id="timeline"' in rendered
    assert rendered.count('<g class="row ') == 1 + len(data["destinations"])
    for name in ("allow", "would-block", "block"):
        assert f'<rect class="bar {name}"' in rendered
    assert "<script" not in rendered and "&lt;script&gt;alert(1)&lt;/script&gt;.test" in rendered

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    if shot.exists():
        shot.unlink()
    result = _chromium(f"--screenshot={shot}", "--window-size=1280,1100", url, profile=tmp_path / "profile-png")
    assert result.returncode == 0 and shot.exists(), result.stderr.decode(errors="replace")[-2000:]
    width, height, histogram = _png_pixels(shot.read_bytes())
    assert (width, height) == (1280, 1100)
    for name, colour in COLORS.items():  # each series was painted, in solid bars
        assert histogram.get(bytes.fromhex(colour[1:]), 0) > 200, name
    print(f"screenshot: {shot}")
    shutil.copy(page, ARTIFACTS / "report.html")


def test_report_subcommand_is_wired_into_the_cli():
    parser = cli.build_parser()
    args = parser.parse_args(["report", "x.jsonl", "--suggest", "--wildcard-threshold", "5"])
    assert args.func.__module__ == "sockguard.report.cli"
    assert (args.suggest, args.wildcard_threshold, args.port_limit, args.progress) == (True, 5, 3, None)


def test_sinks_written_log_round_trips(tmp_path, capsys):
    """The writer the guard uses (Sinks) and the reader agree on the format."""
    path = tmp_path / "sinks.jsonl"
    sinks = Sinks(str(path))
    sinks.emit(event("a.example.test", 443, address="203.0.113.1"), "msg", 30)
    sinks.emit(event("a.example.test", 443, "allow", reason="allowed-name"), "msg", 20)
    sinks.close()
    os.sync()
    data = report_json(capsys, str(path))
    assert by_destination(data)["a.example.test:443"]["decisions"] == {"allow": 1, "would-block": 1, "block": 0}
