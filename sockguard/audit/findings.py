"""From scalars to findings: pull destinations out of a value, drop the noise, and classify
what is left with the policy (``Policy.check_name``; this module adds no address logic).

Forms: URLs with a network scheme, ``host:port`` and ``[v6]:port`` tokens, IP literals, and bare
host names where the key says the value is a host (``DB_HOST``, ``server``, ``*_PROXY``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from sockguard import policy as _p
from sockguard.addresses import METADATA_NAMES, parse_address, parse_ipv4_strict, parse_ipv6, split_zone
from sockguard.audit.scanners.base import HOLE, Scalar
from sockguard.display import unicode_text
from sockguard.errors import InvalidHost
from sockguard.rules import normalize_host

SEVERITIES = ("note", "warning", "error")
#: Characters of a value (and key) shown in a report; longer ones are cut there, never skipped.
MAX_SHOWN = 400
RANK = {name: i for i, name in enumerate(SEVERITIES)}

#: Classification -> (default severity, one-line description). Stable ids: they are SARIF rule ids
#: and part of every baseline fingerprint.
KINDS: dict[str, tuple[str, str]] = {
    "metadata": ("error", "cloud metadata address or name"),
    "internal-address": ("error", "internal address (private, link-local, CGNAT, ...) written as an IP literal"),
    "raw-ip": ("error", "raw public IP address not covered by an IP/CIDR rule"),
    "denied": ("error", "destination matches a deny rule"),
    "proxy-variable": ("error", "proxy setting: traffic through it bypasses per-host name checks"),
    "unlisted-host": ("warning", "host name not in the allowlist"),
    "allowlisted": ("note", "destination allowed by a rule"),
}

#: Schemes whose authority is a network host. Unknown schemes (file, s3, sqlite...) are skipped.
DEFAULT_PORTS: dict[str, int | None] = {
    "http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21, "ftps": 990, "sftp": 22, "ssh": 22, "scp": 22,
    "telnet": 23, "smtp": 25, "smtps": 465, "submission": 587, "imap": 143, "imaps": 993, "pop3": 110,
    "pop3s": 995, "ldap": 389, "ldaps": 636, "redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671,
    "mqtt": 1883, "mqtts": 8883, "mongodb": 27017, "postgres": 5432, "postgresql": 5432, "mysql": 3306,
    "mariadb": 3306, "mssql": 1433, "sqlserver": 1433, "oracle": 1521, "clickhouse": 8123, "cassandra": 9042,
    "couchdb": 5984, "elasticsearch": 9200, "opensearch": 9200, "kafka": 9092, "nats": 4222, "memcached": 11211,
    "zookeeper": 2181, "etcd": 2379, "consul": 8500, "vault": 8200, "socks": 1080, "socks4": 1080,
    "socks4a": 1080, "socks5": 1080, "socks5h": 1080, "rtsp": 554, "rtmp": 1935, "sip": 5060, "xmpp": 5222,
    "git": 9418, "svn": 3690, "rsync": 873, "nntp": 119, "irc": 6667, "ircs": 6697, "tcp": None, "udp": None,
    "tls": None, "ssl": None, "grpc": None, "grpcs": 443, "dns": 53, "gopher": 70, "coap": 5683, "stomp": 61613,
}  # fmt: skip

#: Host names that are identifiers, not destinations (XML namespaces, JSON-schema ids).
NAMESPACE_SITES = frozenset(
    {"www.w3.org", "w3.org", "json-schema.org", "purl.org", "schemas.xmlsoap.org", "schemas.openxmlformats.org"}
    | {"schemas.microsoft.com", "xmlns.com", "ns.adobe.com", "relaxng.org", "www.opengis.net", "docbook.org"}
    | {"schemas.android.com", "www.xfa.org", "www.openarchives.org", "json.schemastore.org"}
)

#: File extensions that make `name.ext` a file, not a host, outside a URL.
_EXTENSIONS = (
    "py pyc pyi pyx pxd txt json yml yaml toml cfg ini conf md rst html htm js ts css c h cc cpp hpp so dll "
    "exe png jpg jpeg gif svg ico zip gz tgz bz2 xz tar whl egg log csv xml sh bat ps1 pem crt key lock db "
    "sqlite tmp bak out env in sql rb go rs java class jar mo po pot pdf doc docx xls dat bin lst spec "
    "pkl npy npz pth pt onnx"
)
FILE_EXTENSIONS = frozenset(_EXTENSIONS.split(" "))

_URL = re.compile(r"(?<![\w+.-])([A-Za-z][A-Za-z0-9+.-]{0,30})://([^\s/?#\"'<>`\\|^{}]*)([^\s\"'<>`\\]*)")
_MARKUP_LINK = re.compile(r"""(?:href|src)\s*=\s*["']?$|\]\($""", re.IGNORECASE)
_TOKEN = re.compile(r"[^\s,;\"'()<>|`]+")
_HOSTPORT = re.compile(r"(\[[0-9A-Fa-f:.%\w-]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")
_SECRET_PARAM = re.compile(r"(?i)(token|key|secret|pass|pwd|sig|signature|auth|credential|session)")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")

HOST_WORDS = frozenset(
    {"host", "hostname", "hosts", "server", "servers", "endpoint", "endpoints", "addr", "address", "domain"}
    | {"fqdn", "upstream", "broker", "brokers", "peer", "peers", "ip"}
)
DOC_WORDS = frozenset(
    {"homepage", "documentation", "docs", "doc", "issues", "tracker", "changelog", "funding"}
    | {"license", "wiki", "donate", "help", "link", "links", "guide", "manual", "rtd", "issue", "readme"}
    | {"tutorial", "faq", "bug", "bugs"}
)
#: Keys whose URL value is an identifier (JSON schema, JSON-LD, XML namespaces), never fetched as such.
ID_KEYS = frozenset({"$id", "$schema", "$ref", "id", "@id", "@context", "@type", "@vocab", "xmlns", "namespace"})
#: Package metadata dunders (``__url__``, ``__uri__``): links for people, not destinations.
DOC_DUNDERS = frozenset({"url", "uri", "homepage", "author", "email", "license", "download"})


class Target(NamedTuple):
    offset: int  # where in the scalar's value the destination starts
    text: str  # as written
    host: str
    port: int | None
    form: str  # "url", "host-port", "ip", "host"
    proxy: bool = False  # named as a proxy inside the value (`--proxy=host:3128`)


@dataclass(slots=True)
class Finding:
    kind: str  # a key of KINDS
    severity: str
    path: str  # as displayed, "<environment>" for the process environment
    line: int
    column: int
    key: str | None
    value: str  # the destination as written, credentials masked
    host: str
    port: int | None
    reason: str  # the policy's decision reason
    rule: str | None  # the allow/deny rule that decided, if any
    detail: str | None  # address category, or what a proxy points at
    message: str
    scanner: str
    fingerprint: str = ""

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "key": self.key,
            "value": self.value,
            "host": self.host,
            "port": self.port,
            "classification": self.kind,
            "severity": self.severity,
            "rule": self.rule,
            "reason": self.reason,
            "detail": self.detail,
            "message": self.message,
            "scanner": self.scanner,
            "fingerprint": self.fingerprint,
        }


@lru_cache(maxsize=8192)
def words(key: str) -> tuple[str, ...]:
    """``VPN_GATE_URL`` -> vpn gate url; ``httpsProxy`` -> https proxy."""
    return tuple(w.lower() for w in _WORDS.findall(key))


class Context(NamedTuple):
    key: str | None  # the innermost name, reported with the finding
    host_key: bool  # the value is declared to be a host
    any_label: bool  # ... and may be a one-label name (DB_HOST=postgres); a domain or endpoint has dots
    proxy: bool
    no_proxy: bool
    version: bool  # version or OID context: dotted quads there are not addresses
    docs: bool  # metadata links (homepage, documentation...)


_PROXY_ENTRY = frozenset(
    {"http", "https", "all", "ftp", "socks", "socks4", "socks5", "ws", "wss", "url", "uri", "host", "hostname"}
    | {"server", "address", "addr", "endpoint"}
)


@lru_cache(maxsize=8192)
def context(keys: tuple[str, ...]) -> Context:
    names = [k for k in keys if k and not k.endswith("()")]
    calls = [k for k in keys if k.endswith("()")]
    key = names[-1] if names else None
    last = words(key) if key else []
    proxy = no_proxy = version = False
    # A proxy setting is the key itself (HTTPS_PROXY) or an entry of a proxy table (proxies={"https": ...});
    # a proxy word further out (an API operation "DescribeDBProxies") says nothing about this value.
    for i, name in enumerate(names[-2:], start=2 - len(names[-2:])):
        w = words(name)
        entry = i == 0 and 0 < len(w) <= 2 and w[-1] in ("proxy", "proxies") and bool(last) and last[-1] in _PROXY_ENTRY
        if ("proxy" in w or "proxies" in w) and (i == 1 or entry):
            if (w and w[0] == "no") or {"bypass", "exclude", "ignore", "except"} & set(w):
                no_proxy = True
            else:
                proxy = True
    for name in [*names[-2:], *calls[-1:]]:
        ws = set(words(name))
        if ws & {"version", "versions", "oid", "oids"} or {"object", "identifier"} <= ws:
            version = True
    parent = set(words(names[-2])) if len(names) > 1 else set()
    docs = bool((set(last) | parent) & DOC_WORDS) or any("urls" in words(n) for n in names[:-1])
    docs = docs or key in ID_KEYS or (bool(last) and last[-1] in ("schema", "xmlns", "namespace"))
    if key and key.startswith("__") and key.endswith("__") and set(last) & DOC_DUNDERS:
        docs = True
    host_key = bool(last) and last[-1] in HOST_WORDS
    any_label = host_key and last[-1] not in ("domain", "fqdn", "endpoint", "endpoints")
    return Context(key, host_key, any_label, proxy, no_proxy, version, docs)


def _name_ok(host: str, *, single_label: bool, file_like: bool) -> bool:
    """A plausible DNS name (already normalised)."""
    if host in METADATA_NAMES:
        return True
    if "." not in host:
        return single_label
    labels = host.split(".")
    tld = labels[-1]
    if not (tld.isalpha() or tld.startswith("xn--")) or len(tld) < 2:
        return False
    if any(not label or label[0] == "-" or label[-1] == "-" for label in labels):
        return False
    return not (file_like and ("_" in host or tld in FILE_EXTENSIONS))


def _host(text: str) -> str | None:
    """Normalised host, brackets removed; None if it cannot be a host."""
    if text.startswith("["):
        if not text.endswith("]"):
            return None
        text = text[1:-1]
    if not text or HOLE in text:
        return None
    try:
        return normalize_host(text)
    except InvalidHost:
        return None


def _ip_literal(token: str) -> str | None:
    """A plainly written IP address (dotted quad, or IPv6 with digits), else None."""
    if parse_ipv4_strict(token) is not None:
        return token
    if token.count(":") >= 2 and any(c.isdigit() for c in token):
        head = split_zone(token)[0]
        if parse_ipv6(head) is not None:
            return token.lower()
    return None


def _port(text: str) -> int | None:
    if text.isdigit() and 0 < int(text) <= 65535:
        return int(text)
    return None


def extract(value: str, ctx: Context, lang: str, pair: bool = False) -> Iterator[Target]:
    """Destinations written in one value."""
    code = lang == "python"
    prose = code and any(c.isspace() for c in value.strip())
    taken: list[tuple[int, int]] = []
    for m in _URL.finditer(value):
        scheme = m.group(1).lower()
        known = [s for s in scheme.split("+") if s in DEFAULT_PORTS]
        authority = m.group(2)
        if not known or not authority:
            continue
        taken.append(m.span())
        text = (authority + m.group(3)).rstrip(".,;:!?)]}'")
        at = authority.rfind("@")
        for part in authority[at + 1 :].split(","):  # mongodb://a:27017,b:27017/db
            hp = _HOSTPORT.fullmatch(part)
            if hp is not None:
                host, port = _host(hp.group(1)), _port(hp.group(2))
            elif part.count(":") == 1:  # host:${PORT} and other templated ports
                host, port = _host(part.partition(":")[0]), None
            else:
                host, port = _host(part), DEFAULT_PORTS[known[-1]]  # git+ssh: the transport decides
            if host is None or (":" in host and parse_address(host) is None):
                continue
            if parse_address(host) is None and not _name_ok(host, single_label=not code, file_like=False):
                continue
            link = prose or _MARKUP_LINK.search(value, 0, m.start()) is not None
            if link and parse_address(host) is None and host not in METADATA_NAMES:
                continue  # a link in a sentence or in markup (href=, markdown) is documentation
            yield Target(m.start(), f"{m.group(1)}://{text}", host, port, "url")
    if prose:
        return
    for m in _TOKEN.finditer(value):
        start, end = m.span()
        if any(a < end and start < b for a, b in taken):
            continue
        token = m.group().rstrip(".:")
        offset = start
        whole = token == value.strip()  # the value is this one token
        host_key, any_label, proxy = ctx.host_key, ctx.any_label, ctx.proxy
        if "=" in token:  # host=10.0.0.5 (libpq), --proxy=host:3128
            name, _, token = token.rpartition("=")
            offset += len(name) + 1
            sub = context((name,))
            whole = sub.host_key or sub.proxy  # `host=db`: the sub-key says what the token is
            host_key, any_label, proxy = host_key or sub.host_key, any_label or sub.any_label, proxy or sub.proxy
        if not token or HOLE in token or (code and token != value.strip()):
            continue  # in code only a whole string is a destination
        single = not code and (any_label or proxy)
        ip = _ip_literal(token)
        if ip is not None:
            yield Target(offset, token, ip, None, "ip", proxy)
            continue
        hp = _HOSTPORT.fullmatch(token)
        if hp is not None and (port := _port(hp.group(2))) is not None:
            host = _host(hp.group(1))
            if host is None:
                continue
            if parse_address(host) is not None and _ip_literal(host) is None:
                continue  # "1.2:80" and other loose numerals are not written as addresses
            if parse_address(host) is None and not _name_ok(host, single_label=single, file_like=True):
                continue
            yield Target(offset, token, host, port, "host-port", proxy)
            continue
        if (host_key or proxy) and ":" not in token:
            host = _host(token)
            if (
                host is not None
                and parse_address(host) is None
                # one-label names only as the whole value: in a sentence every word is one
                and _name_ok(host, single_label=single and whole, file_like=True)
            ):
                yield Target(offset, token, host, None, "host", proxy)


def redact(text: str) -> str:
    """Mask a password in userinfo and secret-looking query parameters."""
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/@\s]*)@", text)
    if m and ":" in m.group(2):
        user = m.group(2).split(":", 1)[0]
        text = f"{m.group(1)}{user}:***@{text[m.end() :]}"
    if "?" in text:
        head, _, query = text.partition("?")
        parts = []
        for item in query.split("&"):
            name, eq, _ = item.partition("=")
            parts.append(f"{name}=***" if eq and _SECRET_PARAM.search(name) else item)
        text = head + "?" + "&".join(parts)
    return text.replace(HOLE, "{…}")


def noise(target: Target, ctx: Context) -> bool:
    """Targets that are not destinations: versions, OIDs, bind-all, networks, namespaces, doc links."""
    addr = parse_address(target.host)
    if addr is not None:
        if target.form != "url" and ctx.version:
            return True
        if addr[1] == 0:  # 0.0.0.0 / :: bind to every interface
            return True
        # x.y.z.0 written alone names a network (or is a version such as 1.0.0.0)
        return target.form == "ip" and addr[0] == 4 and addr[1] & 0xFF == 0
    if target.form != "url":
        return False
    if target.host in NAMESPACE_SITES or ctx.docs:
        return True
    # A fragment is never sent to a server: a URL with one is a page for people to read.
    return "#" in target.text


def classify(policy: _p.Policy, target: Target, proxy: bool) -> tuple[str, _p.Decision] | None:
    """(kind, decision) for a target, or None when it is no finding (loopback, not a host)."""
    decision = policy.check_name(target.host, target.port)
    reason = decision.reason
    if reason == _p.INVALID:
        return None
    if proxy:
        return "proxy-variable", decision
    if decision.allowed:
        return None if reason == _p.LOOPBACK else ("allowlisted", decision)
    if reason == _p.DENIED:
        return "denied", decision
    if reason == _p.METADATA or decision.detail == "metadata":
        return "metadata", decision
    if reason in (_p.RAW_IP, _p.INTERNAL):
        return ("internal-address" if decision.detail else "raw-ip"), decision
    return "unlisted-host", decision


def describe(kind: str, target: Target, decision: _p.Decision, policy: _p.Policy) -> tuple[str, str, str | None]:
    """(severity, message, detail) for a classified target."""
    where = target.host if target.port is None else policy.suggest(target.host, target.port) or target.host
    if kind == "proxy-variable":
        inner = classify(policy, target, proxy=False)
        inner_kind = inner[0] if inner else "loopback"
        if decision.allowed:
            message = (
                f"proxy at {where} ({inner_kind}): the guard sees only the proxy, every destination behind it "
                "is unchecked; prefer direct connections to allowlisted hosts"
            )
            return "warning", message, inner_kind
        message = f"proxy at {where} is not allowed ({decision.explain()}) and hides the real destinations"
        return "error", message, inner_kind
    severity = KINDS[kind][0]
    if kind == "allowlisted":
        return severity, f"{where} allowed by rule {decision.rule!r}", None
    if kind == "denied":
        return severity, f"{where} matches deny rule {decision.rule!r}", None
    if kind == "metadata":
        what = decision.detail if decision.reason != _p.METADATA else "metadata name"
        return severity, f"{target.host} is a cloud metadata endpoint ({what})", "metadata"
    if kind == "internal-address":
        message = f"internal address {target.host} ({decision.detail}); allow it only with an IP/CIDR rule {where!r}"
        return severity, message, decision.detail
    if kind == "raw-ip":
        return severity, f"raw IP address {target.host}: use an allowlisted DNS name (or rule {where!r})", None
    return severity, f"{target.host} is not in the allowlist (rule to allow it: {where!r})", None


def fingerprint(kind: str, path: str, key: str | None, value: str) -> str:
    """Stable across line shifts: classification, file, key and value; not the position."""
    data = "\x1f".join((kind, path, key or "", value)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:32]


def findings_for(policy: _p.Policy, scalar: Scalar, path: str, scanner: str, position) -> Iterator[Finding]:
    """Findings in one scalar; ``position(scalar, target)`` -> (line, column)."""
    value = scalar.value
    if not value:
        return
    if scalar.lang == "python" and "." not in value and ":" not in value and value not in METADATA_NAMES:
        return  # fast path: no URL, address or dotted name can be in it
    ctx = context(scalar.keys)
    if ctx.no_proxy:
        return
    if scalar.keys[:2] == ("tool", "sockguard"):  # sockguard's own allow/deny lists
        return
    for target in extract(scalar.value, ctx, scalar.lang, scalar.pair):
        if noise(target, ctx):
            continue
        classified = classify(policy, target, ctx.proxy or target.proxy)
        if classified is None:
            continue
        kind, decision = classified
        severity, message, detail = describe(kind, target, decision, policy)
        value = redact(target.text)
        line, column = position(scalar, target)
        key = None if ctx.key is None else unicode_text(clip(ctx.key))
        yield Finding(
            kind, severity, path, line, column, key, unicode_text(clip(value)), target.host, target.port,
            decision.reason, decision.rule, detail, unicode_text(message), scanner,
            fingerprint(kind, path, ctx.key, value),
        )  # fmt: skip


def clip(text: str, limit: int = MAX_SHOWN) -> str:
    """A value as reported: a long one is cut (its fingerprint still covers all of it)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…(+{len(text) - limit} characters)"
