"""`sockguard audit`: scanners, classification, noise filters, output formats, exit codes, baseline.

Fixtures are data only: documentation addresses (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32),
private ranges, and .test/.example names. The audit never resolves or connects (asserted below).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockguard import cli
from sockguard.audit.auditor import Auditor, Progress
from sockguard.audit.findings import KINDS, Finding, findings_for
from sockguard.audit.scanners.base import Scalar, ScanError
from sockguard.audit.scanners.dotenv import scan_dotenv
from sockguard.audit.scanners.ini import scan_ini
from sockguard.audit.scanners.json import scan_json
from sockguard.audit.scanners.python import scan_python
from sockguard.audit.scanners.toml import scan_toml
from sockguard.audit.scanners.yaml import scan_yaml
from sockguard.policy import Policy

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Path(__file__).resolve().parent / "data" / "sarif-schema-2.1.0.json"


@pytest.fixture(autouse=True)
def clean_env(unconfigured: Path) -> None:
    """No sockguard config from the developer's shell or working directory leaks into a test."""


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))


def scan(
    root: Path,
    files: dict[str, str],
    *,
    allow: tuple[str, ...] = (),
    deny: tuple[str, ...] = (),
    include_tests: bool = False,
    allow_loopback: bool = True,
) -> tuple[list[Finding], Auditor]:
    write(root, files)
    auditor = Auditor(
        Policy(list(allow), list(deny), allow_loopback=allow_loopback), include_tests=include_tests, cwd=str(root)
    )
    return list(auditor.scan_paths([str(root)])), auditor


def one(findings: list[Finding], **match: object) -> Finding:
    hits = [f for f in findings if all(getattr(f, k) == v for k, v in match.items())]
    assert len(hits) == 1, (match, [(f.key, f.value, f.kind) for f in findings])
    return hits[0]


def where(root: Path, name: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """(line, column) of the nth occurrence of needle in a fixture file, both 1-based."""
    text = (root / name).read_text()
    start = -1
    for _ in range(nth + 1):
        start = text.index(needle, start + 1)
    line = text.count("\n", 0, start) + 1
    return line, start - (text.rfind("\n", 0, start) + 1) + 1


def run_cli(*argv: str) -> int:
    return cli.main(["audit", *argv])


# --- scanners --------------------------------------------------------------


def test_dotenv_incident_values_with_positions(tmp_path: Path) -> None:
    findings, _ = scan(
        tmp_path,
        {
            ".env": """
            # VPN_GATE_URL=http://203.0.113.99  (a comment is not a finding)
            VPN_GATE_URL=http://198.51.100.7/health
            CRYPTO_API_IP=198.51.100.23
            export DATABASE_URL="postgres://app:hunter2@db.internal.test:5432/app"
            API_BASE=https://api.example.test/v1 # trailing comment http://203.0.113.98
            MULTI="first line
            second http://10.1.2.3:8080/x"
            ESCAPED="http://192.0.2.5/\\tx"
            """
        },
    )
    assert len(findings) == 6
    vpn = one(findings, key="VPN_GATE_URL")
    assert (vpn.kind, vpn.severity, vpn.value, vpn.host, vpn.port) == (
        "raw-ip",
        "error",
        "http://198.51.100.7/health",
        "198.51.100.7",
        80,
    )
    assert (vpn.line, vpn.column) == where(tmp_path, ".env", "http://198.51.100.7")
    ip = one(findings, key="CRYPTO_API_IP")
    assert (ip.kind, ip.line, ip.column) == ("raw-ip", *where(tmp_path, ".env", "198.51.100.23"))
    db = one(findings, key="DATABASE_URL")
    assert db.kind == "unlisted-host" and db.severity == "warning"
    assert db.value == "postgres://app:***@db.internal.test:5432/app"  # the password never reaches a report
    assert (db.line, db.column) == where(tmp_path, ".env", "postgres://")
    assert one(findings, key="API_BASE").value == "https://api.example.test/v1"
    multi = one(findings, key="MULTI")
    assert (multi.kind, multi.detail) == ("internal-address", "private")
    assert (multi.line, multi.column) == where(tmp_path, ".env", "http://10.1.2.3")
    assert one(findings, key="ESCAPED").host == "192.0.2.5"
    assert "203.0.113.99" not in str(findings) and "203.0.113.98" not in str(findings)


def test_environment_scan_is_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("VPN_GATE_URL", "http://198.51.100.7/health")
    monkeypatch.setenv("SOCKGUARD_ALLOW", "api.example.test")  # sockguard's own settings are not findings
    assert run_cli("--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["findings"] == []
    assert run_cli("--env", "--format", "json") == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    env = [f for f in findings if f["key"] == "VPN_GATE_URL"]
    assert env and env[0]["path"] == "<environment>" and env[0]["scanner"] == "env"
    assert env[0]["classification"] == "raw-ip"
    assert not [f for f in findings if f["key"] and f["key"].startswith("SOCKGUARD_")]


def test_compose_environment_list_mapping_and_env_file(tmp_path: Path) -> None:
    findings, auditor = scan(
        tmp_path,
        {
            "docker-compose.yml": """
            services:
              web:
                image: "registry.example.test/app:1.2"
                env_file:
                  - svc/web.env
                  - path: svc/extra.env
                    required: false
                environment:
                  - METADATA_URL=http://169.254.169.254/latest/meta-data/
                  - "REDIS=redis://10.1.2.3:6379/0"
                  # - OLD=http://203.0.113.1
              worker:
                env_file: worker.env
                environment:
                  UPSTREAM: api.partner.example
                  ALL_PROXY: socks5://198.51.100.80:1080
                  LOG_LEVEL: debug
                healthcheck:
                  test: ["CMD", "curl", "-f", "http://localhost:8000/health"]
              broken:
                env_file: missing.env
            """,
            "svc/web.env": "CALLBACK=http://192.168.10.4:9000/cb\n",
            "svc/extra.env": "EXTRA=https://198.51.100.61/\n",
            "worker.env": "WORKER_PEER=203.0.113.70:7000\n",
        },
    )
    meta = one(findings, key="METADATA_URL")
    assert (meta.kind, meta.scanner, meta.path) == ("metadata", "compose", "docker-compose.yml")
    assert (meta.line, meta.column) == where(tmp_path, "docker-compose.yml", "http://169.254.169.254")
    redis = one(findings, key="REDIS")
    assert (redis.kind, redis.port) == ("internal-address", 6379)
    assert (redis.line, redis.column) == where(tmp_path, "docker-compose.yml", "redis://")
    assert one(findings, key="UPSTREAM").kind == "unlisted-host"
    assert one(findings, key="ALL_PROXY").kind == "proxy-variable"
    # env_file: list, long syntax and plain string, each scanned once as a .env file
    assert one(findings, key="CALLBACK").path == "svc/web.env"
    assert one(findings, key="EXTRA").kind == "raw-ip"
    assert one(findings, key="WORKER_PEER").port == 7000
    line = where(tmp_path, "docker-compose.yml", "missing.env")[0]
    assert ("docker-compose.yml", f"line {line}: env_file missing.env not found") in auditor.stats.problems
    assert not [f for f in findings if f.host in ("203.0.113.1", "localhost", "registry.example.test")]
    assert auditor.stats.files == 4  # each env file once, though the walk also reaches it


def test_kubernetes_container_env(tmp_path: Path) -> None:
    findings, _ = scan(
        tmp_path,
        {
            "deploy.yaml": """
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: app
            spec:
              template:
                spec:
                  containers:
                    - name: app
                      image: app:1.0
                      env:
                        - name: VPN_GATE_URL
                          value: "http://203.0.113.10"
                        - name: HTTP_PROXY
                          value: http://proxy.example.test:8080
                        - name: FROM_SECRET
                          valueFrom:
                            secretKeyRef: {name: s, key: url}
                        - name: LOG_LEVEL
                          value: debug
            ---
            apiVersion: v1
            kind: ConfigMap
            data:
              ENDPOINT: "https://10.20.30.40:8443/api"
            """
        },
    )
    vpn = one(findings, key="VPN_GATE_URL")
    assert (vpn.kind, vpn.scanner) == ("raw-ip", "k8s")
    assert (vpn.line, vpn.column) == where(tmp_path, "deploy.yaml", "http://203.0.113.10")
    proxy = one(findings, key="HTTP_PROXY")
    assert (proxy.kind, proxy.severity, proxy.detail) == ("proxy-variable", "error", "unlisted-host")
    assert one(findings, key="ENDPOINT").kind == "internal-address"
    assert len(findings) == 3


def test_toml_tables_arrays_inline_and_multiline(tmp_path: Path) -> None:
    findings, _ = scan(
        tmp_path,
        {
            "settings.toml": '''
            # url = "http://203.0.113.1"
            [service]
            url = "https://198.51.100.9/api"
            version = "1.2.3.4"
            hosts = [
              "db1.example.test:5432",  # primary
              "10.9.8.7:5432",
            ]
            [service."dotted.name"]
            inline = { endpoint = "https://api.example.test", nested = { callback = "http://172.16.5.5/cb" } }
            script = """
            curl http://198.51.100.30/ping
            """
            literal = 'http://[2001:db8::7]:8080/x'

            [tool.sockguard]
            deny = ["169.254.169.254"]
            ''',
            "sockguard.toml": 'allow = ["api.example.test:443"]\ndeny = ["198.51.100.0/24"]\n',
        },
    )
    url = one(findings, host="198.51.100.9")
    assert (url.key, url.line, url.column) == ("url", *where(tmp_path, "settings.toml", "https://198.51.100.9"))
    assert one(findings, host="db1.example.test").key == "hosts"
    assert one(findings, host="10.9.8.7").kind == "internal-address"
    assert one(findings, host="api.example.test").key == "endpoint"
    assert one(findings, host="172.16.5.5").key == "callback"
    script = one(findings, host="198.51.100.30")
    assert (script.line, script.column) == where(tmp_path, "settings.toml", "http://198.51.100.30")
    assert one(findings, host="2001:db8::7").port == 8080
    assert not [f for f in findings if f.host in ("203.0.113.1", "1.2.3.4", "169.254.169.254")]
    assert not [f for f in findings if f.path == "sockguard.toml"]  # the policy file itself


def test_invalid_toml_is_reported_not_guessed(tmp_path: Path) -> None:
    findings, auditor = scan(tmp_path, {"bad.toml": 'url = "http://198.51.100.1"\nurl = "dup"\n'})
    assert findings == []
    assert auditor.stats.problems and "not valid TOML" in auditor.stats.problems[0][1]


def test_yaml_block_flow_anchor_and_comments(tmp_path: Path) -> None:
    findings, _ = scan(
        tmp_path,
        {
            "app.yaml": """
            # endpoint: http://203.0.113.1
            defaults: &defaults
              timeout: 5
            service:
              <<: *defaults
              endpoint: https://api.example.test:8443/v1  # comment http://203.0.113.2
              mirrors: [ "http://198.51.100.40/", https://mirror.example.test ]
              peers: {primary: "10.0.0.5:7000", backup: 198.51.100.41:7000}
              startup: |
                echo start
                curl -s http://169.254.169.254/latest/meta-data/iam
              tagged: !!str http://192.0.2.9/
              'quoted key': "http://192.0.2.10/"
            """
        },
    )
    ep = one(findings, host="api.example.test")
    assert (ep.key, ep.port, ep.line, ep.column) == ("endpoint", 8443, *where(tmp_path, "app.yaml", "https://api"))
    assert one(findings, host="198.51.100.40").key == "mirrors"
    assert one(findings, host="mirror.example.test").port == 443
    assert one(findings, host="10.0.0.5").key == "primary"
    assert one(findings, host="198.51.100.41").key == "backup"
    meta = one(findings, host="169.254.169.254")
    assert (meta.key, meta.kind) == ("startup", "metadata")
    assert (meta.line, meta.column) == where(tmp_path, "app.yaml", "http://169.254.169.254")
    assert one(findings, host="192.0.2.9").key == "tagged"
    assert one(findings, host="192.0.2.10").key == "quoted key"
    assert not [f for f in findings if f.host.startswith("203.0.113")]


def test_yaml_scanner_agrees_with_pyyaml(tmp_path: Path) -> None:
    """Differential check: every single-line string PyYAML reads, the line scanner reads with the same keys."""
    yaml = pytest.importorskip("yaml")
    text = textwrap.dedent(
        """
        version: "3.9"
        services:
          api:
            image: app
            command: ["serve", "--bind", "0.0.0.0:8000"]
            environment:
              - A=1
              - "B=two words"
            labels:
              traefik.http.routers.api.rule: "Host(`api.example.test`)"
            deploy: {replicas: 2, mode: replicated}
          db:
            environment:
              POSTGRES_HOST: db.example.test
              EMPTY: ""
              QUOTED: 'it''s'
            healthcheck:
              test:
                - CMD-SHELL
                - pg_isready -h localhost
        x-list:
          - - nested
            - items
          - key: value
            other: "with # hash"
        """
    )

    def flat(node, keys, out):
        if isinstance(node, dict):
            for k, v in node.items():
                flat(v, (*keys, str(k)), out)
        elif isinstance(node, list):
            for v in node:
                if keys and keys[-1] == "environment" and isinstance(v, str) and "=" in v:
                    name, _, value = v.partition("=")
                    flat(value, (*keys, name), out)
                else:
                    flat(v, keys, out)
        elif isinstance(node, str):
            out.add((keys, node))

    expected: set = set()
    flat(yaml.safe_load(text), (), expected)
    got = {(s.keys, s.value) for s in scan_yaml(text) if isinstance(s, Scalar)}
    assert expected - got == set()


def test_json_nested_keys_positions_and_escapes(tmp_path: Path) -> None:
    findings, _ = scan(
        tmp_path,
        {
            "conf.json": """
            {
              "service": {
                "url": "http:\\/\\/[2001:db8::5]:8080\\/x",
                "oid": "2.5.4.3",
                "nested": [{"host": "cache.example.test"}, {"peer": "198.51.100.50:9000"}],
                "http://203.0.113.3/": "keys are not values"
              }
            }
            """,
            "package-lock.json": '{"resolved": "https://registry.example.test/x.tgz"}',
        },
    )
    v6 = one(findings, host="2001:db8::5")
    assert (v6.key, v6.port, v6.line) == ("url", 8080, 3)
    cache = one(findings, host="cache.example.test")
    assert (cache.key, cache.line, cache.column) == ("host", *where(tmp_path, "conf.json", "cache.example.test"))
    assert one(findings, host="198.51.100.50").key == "peer"
    assert len(findings) == 3  # no OID, no key, nothing from the lock file


def test_ini_sections_continuations_and_comments(tmp_path: Path) -> None:
    findings, _ = scan(
        tmp_path,
        {
            "app.ini": """
            [remote]
            ; endpoint = http://203.0.113.5
            # also a comment: http://203.0.113.6
            server = mq.example.test:5672
            mirrors =
                http://203.0.113.44/a
                https://api.example.test/b
            [pip]
            index-url: https://pypi.example.test/simple
            """
        },
    )
    assert one(findings, host="mq.example.test").key == "server"
    cont = one(findings, host="203.0.113.44")
    assert (cont.key, cont.line, cont.column) == ("mirrors", *where(tmp_path, "app.ini", "http://203.0.113.44"))
    assert one(findings, host="api.example.test").key == "mirrors"
    assert one(findings, host="pypi.example.test").key == "index-url"
    assert len(findings) == 4


PY_SOURCE = '''
"""Docstring: http://203.0.113.1/ is documentation."""
import logging
import os

# CALLBACK = "http://203.0.113.2/"
_CRYPTO_IP = os.getenv("CRYPTO_API_IP", "198.51.100.17")
_USE_IP = os.getenv("USE_CRYPTO_IP") == "true"
REST_BASE = f"https://{_CRYPTO_IP}/exchange/v1" if _USE_IP else "https://api.example.test/exchange/v1"
API = "https://" + "api2.example.test" + "/v2"
BASE = "http://10.0.0.9"
STATUS_URL = BASE + "/status"
__version__ = "1.2.3.4"
HOST = "partner.example"
NAME = "service-name"


class Client:
    """Talks to http://203.0.113.4/."""

    endpoint = "https://172.16.0.10:8443"

    def connect(self, host="10.20.30.40", port=5432, user="app"):
        logging.info("connecting to http://203.0.113.77")
        print("see http://203.0.113.79")
        if host == "203.0.113.80":
            raise ValueError("bad http://203.0.113.78")
        path = f"https://{host}/{user}"
        return ("198.51.100.200", 443), path


def fetch(session, token):
    session.get(f"https://api3.example.test/items?token={token}")
    session.get("http://web:8000/")  # one-label names in code are placeholders
    requests_proxies = {"https": "http://198.51.100.99:3128"}
    doc = "see https://docs.example.org/page for details"
    cmd = "curl -s http://169.254.169.254/latest/meta-data/"
    return requests_proxies, doc, cmd
'''


def test_python_constants_fstrings_and_module_constants(tmp_path: Path) -> None:
    findings, _ = scan(tmp_path, {"app.py": PY_SOURCE})
    found = {(f.key, f.value, f.kind) for f in findings}
    assert found == {
        ("CRYPTO_API_IP", "198.51.100.17", "raw-ip"),
        ("REST_BASE", "https://198.51.100.17/exchange/v1", "raw-ip"),  # f-string through a module constant
        ("REST_BASE", "https://api.example.test/exchange/v1", "unlisted-host"),
        ("API", "https://api2.example.test/v2", "unlisted-host"),  # concatenation
        ("BASE", "http://10.0.0.9", "internal-address"),
        ("STATUS_URL", "http://10.0.0.9/status", "internal-address"),
        ("HOST", "partner.example", "unlisted-host"),  # a bare name where the key says "host"
        ("endpoint", "https://172.16.0.10:8443", "internal-address"),
        ("host", "10.20.30.40", "internal-address"),  # a parameter default
        ("host", "203.0.113.80", "raw-ip"),  # compared with a host variable
        (None, "198.51.100.200:443", "raw-ip"),  # (host, port) tuple
        (None, "https://api3.example.test/items?token=***", "unlisted-host"),  # secrets in queries are masked
        ("https", "http://198.51.100.99:3128", "proxy-variable"),  # proxies={"https": ...}
        ("cmd", "http://169.254.169.254/latest/meta-data/", "metadata"),  # an IP in a command line
    }
    const = one(findings, value="198.51.100.17")
    assert (const.line, const.column) == where(tmp_path, "app.py", "198.51.100.17")
    fstring = one(findings, value="https://198.51.100.17/exchange/v1")
    assert (fstring.line, fstring.column) == where(tmp_path, "app.py", 'f"https://{_CRYPTO_IP}')
    assert (one(findings, key="HOST").line, one(findings, key="HOST").column) == where(
        tmp_path, "app.py", "partner.example"
    )


def test_python_bytes_and_keyword_hosts(tmp_path: Path) -> None:
    source = """
    import socket
    ADDR = b"169.254.169.254"
    conn = socket.create_connection(address=("198.51.100.5", 8443))
    client = Client(server_hostname="api.example.test", base_url="https://198.51.100.6:9443")
    """
    findings, _ = scan(tmp_path, {"low.py": source})
    assert {(f.key, f.value, f.kind) for f in findings} == {
        ("ADDR", "169.254.169.254", "metadata"),
        ("address", "198.51.100.5:8443", "raw-ip"),
        ("server_hostname", "api.example.test", "unlisted-host"),
        ("base_url", "https://198.51.100.6:9443", "raw-ip"),
    }


def test_python_positions_count_lines_like_the_parser(tmp_path: Path) -> None:
    """A form feed (old sources use them) is no line break for ast, though str.splitlines() says it is."""
    (tmp_path / "m.py").write_text('X = 1\n\x0c\nY = "é"\nURL = "http://198.51.100.3/"\n', encoding="utf-8")
    (tmp_path / "latin.py").write_bytes(b'# -*- coding: latin-1 -*-\nS = "\xe9\xe9"; U = "http://198.51.100.4/"\n')
    findings, _ = scan(tmp_path, {})
    assert [(f.path, f.line, f.column) for f in findings] == [("latin.py", 2, 16), ("m.py", 4, 8)]


def test_python_unparseable_file_is_reported(tmp_path: Path) -> None:
    findings, auditor = scan(tmp_path, {"broken.py": 'URL = "http://198.51.100.1/"\ndef (:\n'})
    assert findings == []
    assert "not valid Python" in auditor.stats.problems[0][1]


_FUZZ_TOKENS = [*"ab_-.:/@=#[]{}\"'\\|>&*!% \t\n,;$()1290xfF", "://", "http", "- ", "198.51.100.7", '"""', "'''"]
_FUZZ_TEXT = st.lists(st.sampled_from(_FUZZ_TOKENS), max_size=80).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_FUZZ_TEXT, key=st.text(max_size=12))
def test_scanners_never_crash_on_odd_input(text: str, key: str) -> None:
    """Whatever a file holds, a scanner yields scalars or raises ScanError, and findings_for copes."""
    policy = Policy(["api.example.test"])
    for scanner in (
        scan_dotenv,
        scan_ini,
        scan_yaml,
        scan_json,
        scan_toml,
        lambda t: scan_python(t.encode(), t),
    ):
        try:
            items = list(scanner(text))
        except ScanError:
            continue
        for item in items:
            if isinstance(item, Scalar):
                item.keys = (*item.keys, key)
                for finding in findings_for(policy, item, "f", "fuzz", lambda s, t: (s.line, s.column)):
                    assert finding.kind in KINDS


# --- classification --------------------------------------------------------

CLASSES = """
RAW=http://198.51.100.7/
PRIVATE=http://10.1.1.1/
LINKLOCAL=http://169.254.10.10/
CGNAT=http://100.64.1.1/
ULA=http://[fd12:3456::1]/
META_V4=http://169.254.169.254/
META_V6=http://[fd00:ec2::254]/
META_NAME=http://metadata.google.internal/computeMetadata/v1/
ALIBABA=100.100.100.200
UNLISTED=https://unlisted.example.test/
ALLOWED=https://api.example.test/v1
ALLOWED_PORT=https://svc.example.test/
WRONG_PORT=http://svc.example.test/
ALLOWED_NET=http://203.0.113.20/
DENIED=https://bad.example.test/
LOOPBACK=http://127.0.0.1:8080/
LOCALHOST=http://localhost:8080/
HTTPS_PROXY=http://proxy.example.test:3128
ALL_PROXY=http://allowed-proxy.example.test:3128
NO_PROXY=10.0.0.0/8,.example.test,198.51.100.7
"""


def test_every_classification(tmp_path: Path) -> None:
    findings, _ = scan(
        tmp_path,
        {".env": CLASSES},
        allow=("api.example.test", "svc.example.test:443", "203.0.113.0/24", "allowed-proxy.example.test"),
        deny=("bad.example.test",),
    )
    got = {f.key: (f.kind, f.severity, f.detail, f.rule) for f in findings}
    assert got == {
        "RAW": ("raw-ip", "error", None, None),
        "PRIVATE": ("internal-address", "error", "private", None),
        "LINKLOCAL": ("internal-address", "error", "link-local", None),
        "CGNAT": ("internal-address", "error", "cgnat", None),
        "ULA": ("internal-address", "error", "unique-local", None),
        "META_V4": ("metadata", "error", "metadata", None),
        "META_V6": ("metadata", "error", "metadata", None),
        "META_NAME": ("metadata", "error", "metadata", None),
        "ALIBABA": ("metadata", "error", "metadata", None),
        "UNLISTED": ("unlisted-host", "warning", None, None),
        "ALLOWED": ("allowlisted", "note", None, "api.example.test"),
        "ALLOWED_PORT": ("allowlisted", "note", None, "svc.example.test:443"),  # https -> port 443
        "WRONG_PORT": ("unlisted-host", "warning", None, None),  # http -> port 80, rule is :443 only
        "ALLOWED_NET": ("allowlisted", "note", None, "203.0.113.0/24"),
        "DENIED": ("denied", "error", None, "bad.example.test"),
        "HTTPS_PROXY": ("proxy-variable", "error", "unlisted-host", None),
        "ALL_PROXY": ("proxy-variable", "warning", "allowlisted", "allowed-proxy.example.test"),
    }  # loopback is allowed by the default policy: not a finding; NO_PROXY lists exclusions


def test_one_label_names_only_where_a_host_is_expected(tmp_path: Path) -> None:
    env = """
    DB_HOST=postgres
    CACHE=redis://cache:6379/0
    PARTITION_ENDPOINT=aws-global
    MODE=standalone
    """
    findings, _ = scan(tmp_path, {".env": env, "app.py": 'DB_HOST = "postgres"\nURL = "http://web:8000/"\n'})
    assert sorted((f.path, f.key, f.host) for f in findings) == [
        (".env", "CACHE", "cache"),
        (".env", "DB_HOST", "postgres"),
    ]


def test_several_destinations_in_one_config_value(tmp_path: Path) -> None:
    env = """
    KAFKA_BROKERS=kafka1:9092,kafka2.example.test:9092
    PG_DSN=host=db port=5432 dbname=app
    INSTALL=pip install --proxy=proxy1:3128 -i https://pypi.example.test/simple pkg
    NAME_SERVERS=Replace these with the servers that are in your zone
    """
    findings, _ = scan(tmp_path, {".env": env})
    got = sorted((f.key, f.value, f.kind) for f in findings)
    assert got == [
        ("INSTALL", "https://pypi.example.test/simple", "unlisted-host"),
        ("INSTALL", "proxy1:3128", "proxy-variable"),
        ("KAFKA_BROKERS", "kafka1:9092", "unlisted-host"),
        ("KAFKA_BROKERS", "kafka2.example.test:9092", "unlisted-host"),
        ("PG_DSN", "db", "unlisted-host"),
    ]
    assert one(findings, value="kafka2.example.test:9092").column == where(tmp_path, ".env", "kafka2")[1]


def test_loopback_is_a_finding_when_the_policy_blocks_it(tmp_path: Path) -> None:
    findings, _ = scan(tmp_path, {".env": "LOCAL=http://127.0.0.1:8080/\n"}, allow_loopback=False)
    assert [(f.kind, f.detail) for f in findings] == [("internal-address", "loopback")]


def test_classification_follows_config_file_and_flags(tmp_path: Path, capsys) -> None:
    write(tmp_path, {".env": "A=https://api.example.test/\nB=https://other.example.test/\n"})
    write(tmp_path, {"sockguard.toml": 'allow = ["api.example.test"]\n'})
    assert run_cli("--format", "json") == 0  # only a warning left: the default --fail-on is error
    doc = json.loads(capsys.readouterr().out)
    assert {f["key"]: f["classification"] for f in doc["findings"]} == {"A": "allowlisted", "B": "unlisted-host"}
    assert doc["policy"]["source"].endswith("sockguard.toml")
    assert run_cli("--format", "json", "--allow", "other.example.test") == 0
    kinds = {f["key"]: f["classification"] for f in json.loads(capsys.readouterr().out)["findings"]}
    assert kinds == {"A": "allowlisted", "B": "allowlisted"}
    assert run_cli("--format", "json", "--deny", "api.example.test") == 1
    kinds = {f["key"]: f["classification"] for f in json.loads(capsys.readouterr().out)["findings"]}
    assert kinds["A"] == "denied"
    write(tmp_path, {"other.toml": 'allow = ["other.example.test"]\n'})
    assert run_cli("--format", "json", "--config", "other.toml") == 0
    kinds = {f["key"]: f["classification"] for f in json.loads(capsys.readouterr().out)["findings"]}
    assert kinds == {"A": "unlisted-host", "B": "allowlisted"}


# --- noise -----------------------------------------------------------------


def test_noise_filters(tmp_path: Path) -> None:
    findings, _ = scan(
        tmp_path,
        {
            ".env": """
            APP_VERSION=1.2.3.4
            BIND=0.0.0.0
            LISTEN=[::]:8080
            NETWORK=10.0.0.0
            TEMPLATE=http://${API_HOST}:${PORT}/v1
            FORMAT=http://%(host)s:%(port)d/
            JINJA=http://{{ host }}/x
            TRACEBACK=config.py:12
            SCHEMA=http://www.w3.org/2001/XMLSchema
            HELP_LINK=https://docs.example.test/guide
            DOC_PAGE=https://docs.example.test/page.html#section
            """,
            "pyproject.toml": """
            [project]
            name = "x"
            version = "1.2.3.4"
            [project.urls]
            Homepage = "https://www.example.test"
            """,
            "schema.json": '{"$schema": "https://json-schema.example.test/draft/2020-12/schema", "oid": "1.3.6.1"}',
            "api.json": """
            {"pagination": {"DescribeDBProxies": {"input_token": "Marker", "result_key": "DBProxies"}},
             "documentation": {"auto": "https://docs.example.test/modes"},
             "modes": {"retry": "<p>See <a href=\\"https://docs.example.test/retry\\">retries</a></p>"}}
            """,
            "oids.py": """
            from cryptography.x509 import ObjectIdentifier
            COMMON_NAME = ObjectIdentifier("2.5.4.3")
            SAN_OID = "2.5.29.17"
            __version__ = "2.5.4.3"
            VERSION_INFO = Version("1.2.3.4")
            __url__ = "https://project.example.test"
            SCHEMA = "https://schemas.example.test/v1"
            DEFAULT_DOCS_LINK = "https://docs.example.test/index"
            """,
            "tests/test_client.py": 'URL = "http://198.51.100.1/"\n',
            "pkg/test_thing.py": 'URL = "http://198.51.100.2/"\n',
            "pkg/conftest.py": 'URL = "http://198.51.100.3/"\n',
            "fixtures/.env": "URL=http://198.51.100.4/\n",
        },
    )
    assert findings == []


def test_tests_are_scanned_on_request(tmp_path: Path) -> None:
    files = {
        "tests/test_client.py": 'URL = "http://198.51.100.1/"\n',
        "pkg/conftest.py": 'U = "http://198.51.100.3/"\n',
    }
    findings, _ = scan(tmp_path, files, include_tests=True)
    assert sorted(f.host for f in findings) == ["198.51.100.1", "198.51.100.3"]


def test_explicit_file_is_scanned_even_in_a_tests_dir(tmp_path: Path) -> None:
    write(tmp_path, {"tests/.env": "URL=http://198.51.100.4/\n", "notes.txt": "http://198.51.100.5/\n"})
    auditor = Auditor(Policy([]), cwd=str(tmp_path))
    findings = list(auditor.scan_paths([str(tmp_path / "tests" / ".env"), str(tmp_path / "notes.txt")]))
    assert [f.host for f in findings] == ["198.51.100.4"]
    assert auditor.stats.problems == [("notes.txt", "not a file type audit reads (.env, .py, .toml, .yaml, ...)")]


def test_exclude_globs(tmp_path: Path, capsys) -> None:
    write(
        tmp_path,
        {
            "build/lib/app.py": 'U = "http://198.51.100.1/"\n',
            "deploy/prod.env": "U=http://198.51.100.2/\n",
            "deploy/dev.env": "U=http://198.51.100.3/\n",
        },
    )
    assert run_cli("--format", "json", "--exclude", "build", "--exclude", "deploy/dev.*") == 1
    assert [f["host"] for f in json.loads(capsys.readouterr().out)["findings"]] == ["198.51.100.2"]


def test_virtualenvs_and_vcs_dirs_are_skipped(tmp_path: Path) -> None:
    files = {
        "venv2/pyvenv.cfg": "home = /usr\n",
        "venv2/lib/x.py": 'U = "http://198.51.100.1/"\n',
        ".git/config.ini": "url = http://198.51.100.2/\n",
        "node_modules/a/package.json": '{"u": "http://198.51.100.3/"}',
        "src/app.py": 'U = "http://198.51.100.4/"\n',
    }
    findings, _ = scan(tmp_path, files)
    assert [f.host for f in findings] == ["198.51.100.4"]


# --- output formats --------------------------------------------------------

MIXED = """
VPN_GATE_URL=http://198.51.100.7/health
UPSTREAM_HOST=partner.example.test
API=https://api.example.test/v1
"""


def test_text_output(tmp_path: Path, capsys) -> None:
    write(tmp_path, {".env": MIXED})
    assert run_cli("--allow", "api.example.test") == 1
    out = capsys.readouterr().out
    assert "SOCKGUARD AUDIT" in out and "SUMMARY" in out
    assert ".env:1:14: error[raw-ip] VPN_GATE_URL=http://198.51.100.7/health" in out
    assert ".env:2:15: warning[unlisted-host] UPSTREAM_HOST=partner.example.test" in out
    assert ".env:3:5: note[allowlisted] API=https://api.example.test/v1" in out
    assert "allowed by rule 'api.example.test'" in out
    assert "findings: 1 error, 1 warning, 1 note" in out
    assert "scanned 1 files (1 dotenv)" in out


def test_json_output(tmp_path: Path, capsys) -> None:
    write(tmp_path, {".env": MIXED})
    assert run_cli("--format", "json", "--allow", "api.example.test") == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"] == {"error": 1, "warning": 1, "note": 1, "suppressed": 0}
    assert doc["stats"]["files"] == 1 and doc["stats"]["by_scanner"] == {"dotenv": 1}
    first = doc["findings"][0]
    assert {k: first[k] for k in ("path", "line", "column", "key", "value", "classification", "severity")} == {
        "path": ".env",
        "line": 1,
        "column": 14,
        "key": "VPN_GATE_URL",
        "value": "http://198.51.100.7/health",
        "classification": "raw-ip",
        "severity": "error",
    }
    assert doc["findings"][2]["rule"] == "api.example.test"
    assert len(first["fingerprint"]) == 32


def test_sarif_output_validates_against_the_schema(tmp_path: Path, capsys) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    write(tmp_path, {".env": MIXED, "sub dir/app.py": 'BASE = "http://10.0.0.9"\n'})
    os.environ["VPN_PROXY_URL"] = "http://198.51.100.8/"
    try:
        assert run_cli("--format", "sarif", "--env", "--allow", "api.example.test") == 1
    finally:
        del os.environ["VPN_PROXY_URL"]
    log = json.loads(capsys.readouterr().out)
    jsonschema.Draft4Validator(schema).validate(log)
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert "raw-ip" in rule_ids and run["tool"]["driver"]["name"] == "sockguard"
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.as_uri() + "/"
    by_key = {r["properties"]["key"]: r for r in run["results"]}
    raw = by_key["VPN_GATE_URL"]
    assert raw["ruleId"] == "raw-ip" and rule_ids[raw["ruleIndex"]] == "raw-ip" and raw["level"] == "error"
    loc = raw["locations"][0]["physicalLocation"]
    assert loc == {
        "artifactLocation": {"uri": ".env", "uriBaseId": "%SRCROOT%"},
        "region": {"startLine": 1, "startColumn": 14},
    }
    assert by_key["BASE"]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "sub%20dir/app.py"
    assert by_key["API"]["level"] == "note"
    env = by_key["VPN_PROXY_URL"]["locations"][0]
    assert env == {
        "logicalLocations": [
            {"name": "VPN_PROXY_URL", "kind": "variable", "fullyQualifiedName": "environment.VPN_PROXY_URL"}
        ]
    }
    assert all(len(r["partialFingerprints"]["sockguard/v1"]) == 32 for r in run["results"])
    # the validator does reject a broken log, so the check above means something
    raw["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(schema).validate(log)


def test_output_file(tmp_path: Path, capsys) -> None:
    write(tmp_path, {".env": MIXED})
    assert run_cli("--format", "sarif", "-o", "out.sarif") == 1
    assert capsys.readouterr().out == ""
    assert json.loads((tmp_path / "out.sarif").read_text())["version"] == "2.1.0"


# --- exit codes ------------------------------------------------------------


def test_exit_codes(tmp_path: Path, capsys) -> None:
    write(tmp_path, {".env": "UPSTREAM_HOST=partner.example.test\n"})
    assert run_cli() == 0  # a warning does not fail by default
    assert run_cli("--fail-on", "warning") == 1
    assert run_cli("--fail-on", "note") == 1
    assert run_cli("--min-severity", "error", "--fail-on", "warning") == 0  # dropped entirely
    write(tmp_path, {".env": "URL=http://198.51.100.7/\n"})
    assert run_cli() == 1
    assert run_cli("--fail-on", "never") == 0
    write(tmp_path, {".env": "LOG_LEVEL=debug\n"})
    assert run_cli("--fail-on", "note") == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "files", "message"),
    [
        (["--allow", "http://x.example.test"], {}, "bad rule"),
        (["--deny", "*"], {}, "bad rule"),
        (["missing-dir"], {}, "missing-dir: no such file or directory"),
        (["--config", "nope.toml"], {}, "--config nope.toml: no such file"),
        ([], {"sockguard.toml": "mode = 'loud'\n"}, "mode must be one of"),
        (["--baseline", "nope.json"], {}, "baseline nope.json does not exist"),
        (["--baseline", "bad.json"], {"bad.json": "{"}, "is not valid JSON"),
        (["--baseline", "bad.json"], {"bad.json": '{"version": 9, "findings": []}'}, "expected {'version': 1"),
        (["--baseline", "bad.json"], {"bad.json": '{"version": 1, "findings": [{"count": 1}]}'}, "entry 0"),
    ],
)
def test_usage_errors_exit_2_with_a_message(tmp_path: Path, capsys, argv, files, message) -> None:
    write(tmp_path, files)
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sockguard audit: ") and message in err


def test_bad_format_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        run_cli("--format", "xml")
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# --- baseline --------------------------------------------------------------


def test_baseline_round_trip_survives_line_shifts(tmp_path: Path, capsys) -> None:
    write(tmp_path, {".env": "A=http://198.51.100.7/\nB=http://198.51.100.8/\nB=http://198.51.100.8/\n"})
    assert run_cli("--write-baseline", "baseline.json") == 0
    assert "wrote 3 findings to baseline.json" in capsys.readouterr().err
    doc = json.loads((tmp_path / "baseline.json").read_text())
    assert doc["version"] == 1 and sorted(e["count"] for e in doc["findings"]) == [1, 2]
    assert run_cli("--baseline", "baseline.json") == 0
    assert "(3 suppressed by the baseline)" in capsys.readouterr().out
    # lines move, nothing new: still clean
    write(tmp_path, {".env": "# moved\n\nB=http://198.51.100.8/\nA=http://198.51.100.7/\nB=http://198.51.100.8/\n"})
    assert run_cli("--baseline", "baseline.json") == 0
    capsys.readouterr()
    # a third copy of a known finding and a new value are both reported
    write(tmp_path, {".env": "A=http://198.51.100.7/\nB=http://198.51.100.8/\nB=http://198.51.100.8/\n"})
    with open(tmp_path / ".env", "a") as fh:
        fh.write("B=http://198.51.100.8/\nC=http://198.51.100.9/\n")
    assert run_cli("--baseline", "baseline.json", "--format", "json") == 1
    doc = json.loads(capsys.readouterr().out)
    assert [(f["key"], f["line"]) for f in doc["findings"]] == [("B", 4), ("C", 5)]
    assert doc["summary"]["suppressed"] == 3


def test_baseline_fingerprint_depends_on_value_file_and_kind(tmp_path: Path) -> None:
    findings, _ = scan(tmp_path, {"a/.env": "U=http://198.51.100.7/\n", "b/.env": "U=http://198.51.100.7/\n"})
    assert len({f.fingerprint for f in findings}) == 2
    moved, _ = scan(tmp_path, {"a/.env": "\n\nU=http://198.51.100.7/\n"})
    assert one(moved, path="a/.env").fingerprint == one(findings, path="a/.env").fingerprint


# --- command line, progress, safety -----------------------------------------


def test_cli_module_entry_point(tmp_path: Path) -> None:
    write(tmp_path, {".env": MIXED})
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_")}
    proc = subprocess.run(
        [sys.executable, "-m", "sockguard", "audit", "--format", "json", "."],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["summary"]["error"] == 1
    assert proc.stderr == ""  # no progress when stderr is not a terminal
    helptext = subprocess.run(
        [sys.executable, "-m", "sockguard", "audit", "--help"], env=env, capture_output=True, text=True, timeout=120
    )
    assert helptext.returncode == 0
    assert "Find risky destinations" in helptext.stdout and "--write-baseline" in helptext.stdout


def test_progress_goes_to_stderr_when_asked(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {f"m{i}.env": f"U=http://198.51.100.{i}/\n" for i in range(1, 4)})
    monkeypatch.setattr(Progress, "update", _eager_update(Progress.update))
    assert run_cli("--progress", "--format", "json") == 1
    captured = capsys.readouterr()
    assert "sockguard audit: 1 files, 1 findings" in captured.err
    assert json.loads(captured.out)["summary"]["error"] == 3  # stdout stays clean JSON


def _eager_update(update):
    def eager(self, stats, findings, path):
        self.last = float("-inf")  # no throttling in the test
        update(self, stats, findings, path)

    return eager


def test_audit_never_resolves_or_connects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    calls: list[str] = []

    def refuse(name):
        def fail(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"audit called socket.{name}")

        return fail

    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "create_connection"):
        monkeypatch.setattr(socket, name, refuse(name))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    write(tmp_path, {".env": CLASSES, "app.py": PY_SOURCE})
    assert run_cli("--env", "--format", "sarif") == 1
    capsys.readouterr()
    assert calls == []
