"""``sockguard report`` on HTTP request events: per host methods, status classes, latency percentiles, errors;
redirect chains with the refused hop named; text, JSON and HTML (issue 15)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sockguard.report.html import render_html
from sockguard.report.requests import MAX_SAMPLES, RequestSummary, percentile
from sockguard.report.summary import Summary
from sockguard.report.text import render_text
from tests.test_http_requests import ALLOWED, CALLS, REDIRECT, STATUSES, Requests, Web, guarded
from tests.test_http_requests import web as web


def request(**fields: Any) -> dict[str, Any]:
    event = {
        "event": "request", "ts": 1763748153.5, "pid": 7, "client": "urllib3", "method": "GET", "scheme": "https",
        "host": "api.test", "port": 443, "path": "/v1", "proxy": None, "address": "203.0.113.7", "rule": "api.test",
        "status": 200, "error": None, "reason": None, "duration_ms": 10.0, "redirect_hop": 0,
        "redirected_from": None, "caller": "app:main:3", "correlation_id": None,
    }  # fmt: skip
    event.update(fields)
    return event


def test_per_host_methods_classes_and_exact_percentiles() -> None:
    summary = RequestSummary()
    for i in range(1, 101):  # durations 1..100 ms: p50 = 50, p90 = 90, p99 = 99
        status = 503 if i % 10 == 0 else 404 if i % 10 == 1 else 200
        assert summary.add(request(duration_ms=float(i), status=status, method="POST" if i % 2 else "GET")) is None
    summary.add(request(host="other.test", status=None, error="ConnectError", reason=None, duration_ms=3.0))
    summary.finish()
    data = summary.to_json()
    first, second = data["hosts"]
    assert (first["host"], first["requests"], first["methods"]) == ("https://api.test", 100, {"GET": 50, "POST": 50})
    assert first["status_classes"] == {"2xx": 80, "4xx": 10, "5xx": 10}
    assert first["latency_ms"] == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}
    assert (second["host"], second["status_classes"], second["errors"]) == (
        "https://other.test", {"error": 1}, {"ConnectError": 1},
    )  # fmt: skip
    assert data["status_classes"] == {"2xx": 80, "4xx": 10, "5xx": 10, "error": 1}


def test_latencies_past_the_cap_are_a_uniform_sample() -> None:
    summary = RequestSummary()
    for i in range(3 * MAX_SAMPLES):
        summary.add(request(duration_ms=float(i % 1000)))
    host = summary.hosts["https://api.test"]
    assert len(host.latencies) == MAX_SAMPLES and host.timed == 3 * MAX_SAMPLES
    assert 450 <= host.latency()["p50"] <= 550  # the sample keeps the distribution
    assert host.to_json()["latency_sampled"] is True
    assert percentile([], 0.5) != percentile([], 0.5)  # NaN: no latency at all


def test_redirect_chains_are_rebuilt_and_the_refused_hop_named() -> None:
    summary = RequestSummary()
    start, middle, end = "http://a.test/start", "http://b.test:8081/next", "http://blocked.test/end"
    for pid in (1, 2):  # two processes following the same chain at once: kept apart by pid
        summary.add(request(pid=pid, scheme="http", host="a.test", port=80, path="/start", status=302))
    for pid in (1, 2):
        summary.add(request(pid=pid, scheme="http", host="b.test", port=8081, path="/next", status=302,
                            redirect_hop=1, redirected_from=start))  # fmt: skip
    for pid in (1, 2):
        for _retry in range(3):  # urllib3 retries the refused hop: one chain, not four
            summary.add(request(pid=pid, scheme="http", host="blocked.test", port=80, path="/end", status=None,
                                error="NewConnectionError", reason="not-allowed", redirect_hop=2,
                                redirected_from=middle))  # fmt: skip
    summary.add(request(pid=3, scheme="http", host="a.test", port=80, path="/start", status=302))  # not followed
    summary.finish()
    chains = {c["chain"]: c["count"] for c in summary.to_json()["redirect_chains"]}
    assert chains == {
        f"{start} 302 -> {middle} 302 -> {end} BLOCKED (not-allowed)": 2,
        f"{start} 302 -> (not followed)": 1,
    }
    assert summary.hosts["http://b.test:8081"].redirect_hops == 2


def test_hostile_log_text_is_escaped_in_text_and_html() -> None:
    summary = Summary()
    summary.add(request(host="evil\x1b[2J<b>.test", caller="app\nFAKE LINE"))
    summary.finish()
    text = render_text(summary, 30)
    assert "\x1b" not in text and "\\x1b[2J" in text and "\nFAKE LINE" not in text
    page = "".join(render_html(summary))
    assert "<b>.test" not in page and "&lt;b&gt;.test" in page and "app\\x0aFAKE LINE" in page
    assert "HTTP requests: 1" in page


def test_malformed_request_events_are_counted_not_fatal() -> None:
    summary = Summary()
    assert summary.add({"event": "request", "host": 5}) == "a request event without scheme, host and path strings"
    assert summary.add(request(port="443")) == "request event port '443' is not a number"
    assert summary.requests.requests == 0


def test_report_of_a_real_run(web: Web, tmp_path: Path) -> None:
    """A guarded run (requests: five requests on one connection, then a redirect chain ending at a blocked
    host) and ``sockguard report`` on its log: text, JSON and HTML agree."""
    client = Requests()
    with guarded(web):
        assert client.many(f"http://{ALLOWED}", CALLS) == STATUSES
        with pytest.raises(Exception):  # noqa: B017  (requests' ConnectionError around the refusal)
            client.follow(f"http://{REDIRECT}/start")
    html = tmp_path / "report.html"
    command = [sys.executable, "-m", "sockguard", "report", str(web.log), "--no-progress"]
    text = subprocess.run([*command, "--html", str(html)], capture_output=True, text=True, check=True).stdout
    assert "HTTP requests: 8 to 4 hosts (2xx 3, 3xx 2, 4xx 1, 5xx 1, blocked 1)" in text
    assert f"  http://{ALLOWED}  5 requests: 2xx 3, 4xx 1, 5xx 1" in text
    assert "methods GET 2, DELETE 1, POST 1, PUT 1" in text
    chain = (
        f"http://{REDIRECT}/start 302 -> http://{ALLOWED}:8081/next 302 -> "
        "http://blocked.test/end BLOCKED (not-allowed)"
    )
    assert f"        1  {chain}" in text
    data = json.loads(subprocess.run([*command, "--format", "json"], capture_output=True, text=True, check=True).stdout)
    hosts = {h["host"]: h for h in data["requests"]["hosts"]}
    assert hosts[f"http://{ALLOWED}"]["statuses"] == {"200": 2, "201": 1, "404": 1, "503": 1}
    assert hosts[f"http://{ALLOWED}"]["latency_ms"]["p50"] > 0
    assert data["requests"]["redirect_chains"] == [{"chain": chain, "count": 1}]
    page = html.read_text()
    assert "Redirect chains" in page and "BLOCKED (not-allowed)" in page and f"http://{ALLOWED}" in page
