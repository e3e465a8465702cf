"""``sockguard check`` reads URLs the way the clients do (issue 17, item 11).

* The client models in ``sockguard.urls`` agree with the real libraries (urllib.request + http.client,
  requests + urllib3, httpx) on the shared table of tricky URLs (``tests/url_cases.py``) and on URLs
  generated from the pieces that make them tricky.
* ``sockguard check`` gives each case its verdict, never crashes, and exits 2 for a URL no client can use.
* The runtime agrees: inside the lab network namespace every client is driven with each URL under the
  same rules, and what the guard did (from its decision log) is what check predicted for that client:
  never a connection where check said blocked, never a block where check said allowed.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockguard import cli, urls
from sockguard.policy import Policy
from tests.url_cases import ALLOW, CASES

DEFAULT = {"http": 80, "https": 443}


def real_urllib(url: str) -> tuple[str, int] | None:
    try:
        request = urllib.request.Request(url)
        if not request.host:
            return None
        cls = http.client.HTTPSConnection if request.type == "https" else http.client.HTTPConnection
        conn = cls(request.host)
    except Exception:
        return None
    return _wrapped(conn.host, conn.port)


def real_requests(url: str) -> tuple[str, int] | None:
    requests = pytest.importorskip("requests")
    urllib3 = pytest.importorskip("urllib3")
    try:
        prepared = requests.Request("GET", url).prepare()
        parsed = urllib3.util.parse_url(prepared.url)
    except Exception:
        return None
    host = parsed.host.strip("[]") if parsed.host.startswith("[") else parsed.host
    return host, parsed.port or DEFAULT[parsed.scheme]


def real_httpx(url: str) -> tuple[str, int] | None:
    httpx = pytest.importorskip("httpx")
    try:
        parsed = httpx.URL(url)
    except Exception:
        return None
    if not parsed.raw_host:
        return None
    port = parsed.port or DEFAULT.get(parsed.scheme)
    return _wrapped(parsed.raw_host.decode(), port)


def _wrapped(host: str, port: int | None) -> tuple[str, int | None] | None:
    """The port getaddrinfo really uses: glibc keeps the low 16 bits of the decimal service string (the
    runtime test below sees it connect there); beyond a C long the socket module refuses."""
    if port is None or 0 <= port <= 65535:
        return host, port
    return (host, port & 0xFFFF) if -(2**63) <= port < 2**63 else None


REAL = {"urllib": real_urllib, "requests": real_requests, "httpx": real_httpx}


def assert_models_agree(url: str) -> None:
    for attempt in urls.attempts(url):
        got = None if attempt.host is None else (attempt.host, attempt.port)
        assert got == REAL[attempt.client](url), (url, attempt)


@pytest.mark.parametrize("case", CASES, ids=[c.url for c in CASES])
def test_models_agree_with_the_real_clients_on_the_table(case):
    assert_models_agree(case.url)


PIECES = {
    "scheme": ["http://", "https://", "HTTP://", " http://", "http:\\\\", "http:", "http:/", "\thttp://"],
    "userinfo": ["", "", "user@", "a:b@", "evil.test\\@", "x%40y@", "api.allowed.test:80@", "@", "a@b@"],
    "host": [
        "api.allowed.test",
        "evil.test",
        "straße.allowed.test",
        "\uff41pi.test",
        "a\u3002b.test",
        "%65vil.test",
        "%2e.test",
        "%",
        "198.51.100.7",
        "3325256711",
        "0x7f.1",
        "[::1]",
        "[fe80::1%25eth0]",
        "[::1",
        "a b",
        "a\tb",
        "xn--strae-oqa.test",
        "\u0430pi.test",
        "a\u200db.test",
        "A.B.",
        "*.test",
        ".test",
        "",
        "[v1.x]",
        "1.2.3.999",
        "a\u2100b",
    ],
    "port": ["", "", ":80", ":+80", ":0080", ":99999", ":", ":8a", ":-1", ": 80", ":65535"],
    "rest": ["/", "", "/p?q#f", "#@evil.test", "?@evil.test", "\\@evil.test", " ", "/%2f"],
}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(*(st.sampled_from(PIECES[k]) for k in ("scheme", "userinfo", "host", "port", "rest")))
def test_models_agree_with_the_real_clients_on_generated_urls(scheme, userinfo, host, port, rest):
    assert_models_agree(scheme + userinfo + host + port + rest)


@pytest.fixture
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("SOCKGUARD_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SOCKGUARD_ALLOW_LOOPBACK", "0")  # as in the table
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _check(*targets: str) -> int:
    argv = ["check", "--format", "json"]
    for rule in ALLOW:
        argv += ["--allow", rule]
    return cli.main([*argv, "--", *targets])


@pytest.mark.parametrize("case", CASES, ids=[c.url for c in CASES])
def test_check_gives_each_tricky_url_its_verdict(clean, capsys, case):
    code = _check(case.url)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if case.verdict == "error":
        assert code == 2 and "no client can use this URL" in err, (out, err)
        return
    assert code == (0 if case.verdict == "allowed" else 1), (case.why, out, err)
    assert json.loads(out)[0]["allowed"] is (case.verdict == "allowed")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=40), st.sampled_from(["", "http://", "https://", "redis://", "x:"]))
def test_check_never_crashes(clean, capsys, text, prefix):
    code = _check(prefix + text)
    _, err = capsys.readouterr()
    assert code in (0, 1, 2) and "Traceback" not in err


def test_text_output_shows_how_each_client_reads_a_url(clean, capsys):
    assert cli.main(["check", "--allow", "api.allowed.test", "http://evil.test\\@api.allowed.test/"]) == 1
    out = capsys.readouterr().out
    assert "BLOCKED (not-allowed)" in out
    assert "requests: evil.test:80 BLOCKED" in out and "httpx: api.allowed.test:80 allowed" in out


def test_hosts_and_ports_outside_urls(clean, capsys):
    assert cli.main(["check", "--allow", "api.allowed.test:443", "api.allowed.test:443", "[2001:db8::1]:443"]) == 1
    assert cli.main(["check", "api.allowed.test:99999"]) == 2
    assert cli.main(["check", "[::1"]) == 2
    assert "missing ']'" in capsys.readouterr().err


def test_idna_2008_unknown_counts_as_blocked(monkeypatch):
    """Without the idna package the IDNA 2008 name a client would use is unknown: check does not guess."""
    import builtins

    real_import = builtins.__import__

    def no_idna(name, *args, **kwargs):
        if name == "idna":
            raise ImportError("no idna")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_idna)
    verdict = urls.decide(Policy(["strasse.allowed.test", "xn--strae-oqa.allowed.test"]), "http://straße.allowed.test/")
    assert not verdict.decision.allowed and "idna package is not installed" in (verdict.decision.detail or "")


# --- the runtime agrees, client by client ------------------------------------------------------------------------


def _drive(client: str, url: str) -> None:
    if client == "urllib":
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        opener.open(url, timeout=2).read()
    elif client == "requests":
        import requests

        with requests.Session() as session:
            session.trust_env = False
            session.get(url, timeout=2, allow_redirects=False)
    else:
        import httpx

        with httpx.Client(trust_env=False, timeout=2) as session:
            session.get(url)


def _outcome(log: Path) -> str:
    """ "blocked" (the guard refused something), "connected" (an allowed connect or send), "resolved" (an allowed
    lookup only) or "silent" (the client never reached the socket layer)."""
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    decisions = [e for e in events if e.get("event", "decision") == "decision"]
    if any(e["decision"] == "block" for e in decisions):
        return "blocked"
    # A connect to port 99999 is decided (the audit event comes first) but fails in the socket module at once.
    if any(e["op"] in ("connect", "send") and 0 <= (e.get("port") or 0) <= 65535 for e in decisions):
        return "connected"
    return "resolved" if decisions else "silent"


@pytest.mark.parametrize("case", CASES, ids=[c.url for c in CASES])
def test_the_runtime_does_to_each_client_what_check_predicts(netlab, tmp_path, monkeypatch, case):
    import sockguard

    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    netlab.dns.set("api.allowed.test", A=["198.51.100.10"])
    netlab.dns.set("strasse.allowed.test", A=["198.51.100.10"])
    for attacker in ("evil.test", "xn--strae-oqa.allowed.test", "xn--pi-7kc.allowed.test"):
        netlab.dns.set(attacker, A=["203.0.113.10"])
    good = netlab.tcp("198.51.100.10", 80, http=True)
    evil = netlab.tcp("203.0.113.10", 80, http=True)
    verdict = urls.decide(Policy(list(ALLOW), allow_loopback=False), case.url)
    for (attempt, predicted), n in zip(verdict.results, range(len(verdict.results)), strict=True):
        log = tmp_path / f"{n}.jsonl"
        with sockguard.guarded(allow=list(ALLOW), allow_loopback=False, log=str(log)):
            try:
                _drive(attempt.client, case.url)
            except Exception:
                pass
        outcome = _outcome(log)
        where = (case.url, attempt, predicted, outcome)
        if predicted is None:  # the client refuses the URL: it must not reach the network
            assert outcome != "connected", where
        elif predicted.allowed:
            assert outcome != "blocked", where
        else:  # check says blocked: the runtime blocks, or the client never gets that far (check is stricter)
            assert outcome in ("blocked", "silent"), where
    assert evil.accepted == 0, case.url  # nothing reached the attacker's host
    del good
