"""Which host and port a URL makes each major client connect to, for ``sockguard check`` and
:func:`sockguard.check_url`.

A URL is not one destination: the clients parse it differently, and the name a client hands to the socket
is what the guard decides on. Measured on requests 2.32 / urllib3 2.x, httpx 0.27-0.28, CPython 3.11-3.13's
urllib, the disagreements that matter (docs/check.md has the full table):

* ``http://evil.test\\@api.example/``: urllib3 (requests) ends the authority at the backslash and connects
  to ``evil.test``; httpx reads ``evil.test\\`` as userinfo and connects to ``api.example``; urllib hands
  ``evil.test\\@api.example`` to the resolver, which refuses it.
* ``http://user@evil.test/``: requests and httpx drop the userinfo; urllib keeps it in the host (and fails).
* ``http://straße.example/``: urllib hands the Unicode name to the socket, which encodes it with IDNA 2003
  (``strasse.example``); urllib3 and httpx encode with IDNA 2008 (the ``idna`` package) to
  ``xn--strae-oqa.example``: another DNS name, possibly someone else's.
* ``http://%65vil.test/``: urllib and requests percent-decode the host (``evil.test``), httpx does not.
* ``http://\\uff41pi.example/`` (a fullwidth a): urllib's socket folds it to ``api.example`` (nameprep); urllib3 and
  httpx refuse it.
* ports: urllib takes ``+80``, httpx too; urllib3 refuses them; port 99999 fails at the socket.

:func:`attempts` models each client from its source (urllib.request + http.client, urllib3.util.url.parse_url
as requests calls it, httpx._urlparse), without importing any of them (``tests/test_urls.py`` compares the
models with the real libraries). ``check_url`` then decides on every name a client would look up and calls
the URL allowed only if all of them are allowed: the strictest reading wins.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import unquote

from sockguard.addresses import parse_ipv4_strict, parse_ipv6, split_zone
from sockguard.policy import INVALID, Decision

TYPE_CHECKING = False
if TYPE_CHECKING:
    from sockguard.policy import Policy

DEFAULT_PORTS: dict[str, int] = {
    "http": 80,
    "https": 443,
    "ws": 80,
    "wss": 443,
    "ftp": 21,
    "smtp": 25,
    "smtps": 465,
    "redis": 6379,
    "rediss": 6379,
    "postgres": 5432,
    "postgresql": 5432,
    "mysql": 3306,
    "amqp": 5672,
    "amqps": 5671,
    "mongodb": 27017,
    "ldap": 389,
    "ldaps": 636,
}
HTTP_CLIENTS = ("urllib", "requests", "httpx")
#: Schemes the HTTP clients take; any other scheme is read the way urllib.parse (most drivers) reads it.
HTTP_SCHEMES = frozenset({"http", "https"})


class Attempt(NamedTuple):
    """What one client does with a URL: the host and port it hands to the socket, or why it refuses."""

    client: str
    host: str | None  # None: the client raises before any socket call (``error`` says why)
    port: int | None
    error: str | None = None
    unknown: bool = False  # the outcome cannot be computed here (no ``idna`` package): count it as blocked
    host_header: str | None = None  # a Host header that may name another host (urllib sends the URL's text)


class UrlError(ValueError):
    """Not a URL at all (not a string)."""


class UrlVerdict(NamedTuple):
    """The decision for a URL, and how each client reads it."""

    decision: Decision  # the strictest: blocked if any client would be blocked
    results: list[tuple[Attempt, Decision | None]]  # None: that client refuses the URL (nothing is sent)
    usable: bool  # some client can use the URL; False is a malformed URL (``sockguard check`` exits 2)

    def disagreement(self) -> bool:
        """Whether the clients reach different destinations (worth showing one line per client)."""
        hosts = {(a.host, a.port) for a, _ in self.results}
        return len(hosts) > 1


def decide(policy: Policy, url: str) -> UrlVerdict:
    """Decide on every (host, port) a client would hand to the socket; allowed only if all are allowed.
    A client that refuses the URL sends nothing and does not count, unless its answer cannot be computed
    here (:attr:`Attempt.unknown`), which counts as blocked."""
    results: list[tuple[Attempt, Decision | None]] = []
    for attempt in attempts(url):
        if attempt.unknown:
            results.append((attempt, Decision(False, INVALID, None, f"{attempt.client}: {attempt.error}")))
        elif attempt.host is None:
            results.append((attempt, None))
        else:
            decision = policy.check_name(attempt.host, attempt.port)
            if decision.allowed and attempt.host_header is not None:
                decision = _host_header(policy, attempt) or decision
            results.append((attempt, decision))
    decided = [(a, d) for a, d in results if d is not None]
    if not decided:
        why = "; ".join(f"{a.client}: {a.error}" for a, _ in results)
        return UrlVerdict(Decision(False, INVALID, None, f"no client can use this URL ({why})"), results, False)
    blocked = [d for _, d in decided if not d.allowed]
    if blocked:  # the block that names a real destination says most (over "not a valid host name")
        return UrlVerdict(next((d for d in blocked if d.reason != INVALID), blocked[0]), results, True)
    return UrlVerdict(decided[0][1], results, True)


def attempts(url: str) -> list[Attempt]:
    """One :class:`Attempt` per client that takes this URL's scheme."""
    if not isinstance(url, str):
        raise UrlError(f"a URL must be a string, not {type(url).__name__}")
    scheme = _scheme(url)
    if scheme in HTTP_SCHEMES:
        return [_urllib(url), _requests(url), _httpx(url)]
    return [_generic(url)]


def _scheme(url: str) -> str | None:
    m = re.match(r"\s*([A-Za-z][A-Za-z0-9+.-]*):", url)
    return m.group(1).lower() if m else None


def _default_port(scheme: str | None, port: int | None) -> int | None:
    if port is not None:
        return port
    return DEFAULT_PORTS.get(scheme or "")


def _host_header(policy: Policy, attempt: Attempt) -> Decision | None:
    """The decision the guard's HTTP layer makes on a Host header that names another host than the connection's
    (sockguard.http.checks: a value that does not parse is decided whole, as an invalid host); None if it names
    the connection's own host."""
    from sockguard.http.checks import authority, own_host_with_port_out_of_range, same_host

    host, port = authority(attempt.host_header)
    if not host or same_host(str(attempt.host), host):
        return None
    if port is None and own_host_with_port_out_of_range(host, str(attempt.host)):
        return None
    return policy.check_name(host, port if port is not None else attempt.port)


# --- urllib.request + http.client -----------------------------------------------------------------------------

_HTTP_CLIENT_BAD = re.compile("[\x00-\x20\x7f]")  # http.client._contains_disallowed_url_pchar_re


def _urllib(url: str) -> Attempt:
    """urllib.request.Request: strip, drop the fragment (last '#'), split scheme and ``//host`` (up to the
    first of /?#), percent-decode the host; http.client: no control characters or spaces, the port after
    the last ':' outside brackets (``int()``: '+80' is 80, '' the default), brackets removed."""
    client = "urllib"
    from urllib.parse import urlsplit

    try:
        urlsplit(url)  # Request() calls urlparse: brackets must pair, no NFKC tricks in the netloc
    except ValueError as exc:
        return Attempt(client, None, None, str(exc))
    text = url.strip()
    if text[:1] == "<" and text[-1:] == ">":
        text = text[1:-1].strip()
    if text[:4] == "URL:":
        text = text[4:].strip()
    text = text.rpartition("#")[0] if "#" in text else text
    m = re.match(r"([^/:]+):(.*)", text, re.DOTALL)
    if m is None:
        return Attempt(client, None, None, "unknown url type")
    scheme, rest = m.group(1).lower(), m.group(2)
    m = re.match(r"//([^/#?]*)(.*)", rest, re.DOTALL)
    host = header = unquote(m.group(1)) if m else ""
    if not host:
        return Attempt(client, None, None, "no host given")
    port: int | None = None
    i, j = host.rfind(":"), host.rfind("]")
    if i > j:
        text_port = host[i + 1 :]
        try:
            port = int(text_port)
        except ValueError:
            if text_port:
                return Attempt(client, None, None, f"nonnumeric port: {text_port!r}")
        host = host[:i]
    if host[:1] == "[" and host[-1:] == "]":
        host = host[1:-1]
    if _HTTP_CLIENT_BAD.search(host):  # http.client validates the host once the port is split off
        return Attempt(client, None, None, "URL can't contain control characters or spaces")
    # urllib.request sends the authority as written (percent-decoded) as the Host header; the guard's HTTP
    # layer decides a Host that names another host (or does not parse: ``host:+80``) on its own.
    return _socket_port(client, host, _default_port(scheme, port))._replace(host_header=header)


# --- requests (urllib3.util.url.parse_url, then requote_uri) --------------------------------------------------

_U3_SCHEME = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+-]*:|/)")
_U3_URI = re.compile(r"^(?:([a-zA-Z][a-zA-Z0-9+.-]*):)?(?://([^\\/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?$", re.DOTALL)
_U3_HEX = "[0-9A-Fa-f]{1,4}"
_U3_LS32 = f"(?:{_U3_HEX}:{_U3_HEX}|(?:[0-9]{{1,3}}\\.){{3}}[0-9]{{1,3}})"
_U3_IPV6_ALTS = [
    f"(?:{_U3_HEX}:){{6}}{_U3_LS32}",
    f"::(?:{_U3_HEX}:){{5}}{_U3_LS32}",
    f"(?:{_U3_HEX})?::(?:{_U3_HEX}:){{4}}{_U3_LS32}",
    f"(?:(?:{_U3_HEX}:)?{_U3_HEX})?::(?:{_U3_HEX}:){{3}}{_U3_LS32}",
    f"(?:(?:{_U3_HEX}:){{0,2}}{_U3_HEX})?::(?:{_U3_HEX}:){{2}}{_U3_LS32}",
    f"(?:(?:{_U3_HEX}:){{0,3}}{_U3_HEX})?::{_U3_HEX}:{_U3_LS32}",
    f"(?:(?:{_U3_HEX}:){{0,4}}{_U3_HEX})?::{_U3_LS32}",
    f"(?:(?:{_U3_HEX}:){{0,5}}{_U3_HEX})?::{_U3_HEX}",
    f"(?:(?:{_U3_HEX}:){{0,6}}{_U3_HEX})?::",
]
_U3_IPV6 = "(?:" + "|".join(_U3_IPV6_ALTS) + ")"
_U3_ZONE = r"(?:%25|%)(?:[" + "a-zA-Z0-9._~-" + r"]|%[a-fA-F0-9]{2})+"
_U3_IPV6_ADDRZ = r"\[" + _U3_IPV6 + r"(?:" + _U3_ZONE + r")?\]"
_U3_IPV4 = r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}"
_U3_REG_NAME = r"(?:[^\[\]%:/?#]|%[a-fA-F0-9]{2})*"
_U3_HOST_PORT = re.compile(
    f"^({_U3_REG_NAME}|{_U3_IPV4}|{_U3_IPV6_ADDRZ})(?::0*?(|0|[1-9][0-9]{{0,4}}))?$", re.UNICODE | re.DOTALL
)
_U3_IPV6_ADDRZ_RE = re.compile("^" + _U3_IPV6_ADDRZ + "$")
_U3_IPV4_RE = re.compile(r"^(?:0[xX][0-9a-fA-F]+|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]+|[0-9]+)){0,3}$")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _requests(url: str) -> Attempt:
    """requests: ``url.lstrip()``, urllib3's RFC 3986 parse (the authority ends at '\\' too; userinfo up to
    the last '@'; a port of at most five digits; no control character or space in the host; percent-encoded
    unreserved characters decoded, ``%65vil.test`` is ``evil.test``; each non-ASCII label IDNA 2008 encoded,
    strictly). Modelled on urllib3 2.8 (``urllib3.util.url.parse_url``) and requests 2.32 (``prepare_url``)."""
    client = "requests"
    text = url.lstrip()
    if not _U3_SCHEME.search(text):
        text = "//" + text
    m = _U3_URI.match(text)
    if m is None:  # pragma: no cover - the expression matches every string
        return Attempt(client, None, None, "not a URL")
    scheme, authority = m.group(1), m.group(2)
    scheme = scheme.lower() if scheme else None
    if scheme is None:
        return Attempt(client, None, None, "no scheme supplied")
    host_port = (authority or "").rpartition("@")[2]
    hp = _U3_HOST_PORT.fullmatch(host_port)
    if hp is None:
        return Attempt(client, None, None, f"{host_port!r} is not a valid host or port")
    host, port_text = hp.group(1), hp.group(2)
    port = int(port_text) if port_text else None
    if port is not None and not 0 <= port <= 65535:
        return Attempt(client, None, None, "port out of range")
    if not host:
        return Attempt(client, None, None, "no host supplied")
    if _HTTP_CLIENT_BAD.search(host):
        return Attempt(client, None, None, f"host {host!r} contains an invalid character")
    if _U3_IPV6_ADDRZ_RE.match(host):
        host = _u3_zone(host)
    elif not _U3_IPV4_RE.match(host):
        decoded = _u3_percent(host)
        if decoded is None:
            return Attempt(client, None, None, f"{host!r} is not a valid host")
        labels = []
        for label in decoded.split("."):
            if label.isascii():
                labels.append(re.sub(r"%[a-fA-F0-9]{2}", lambda p: p.group(0).upper(), label.lower()))
                continue
            encoded = _idna2008(label.lower(), std3=True)
            if encoded is None or isinstance(encoded, Unknown):
                return _idna_failure(client, label, encoded)
            labels.append(encoded)
        host = ".".join(labels)
        if host.startswith(("*", ".")):
            return Attempt(client, None, None, "URL has an invalid label")
    host = _unquote_unreserved(host)  # requests' requote_uri
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # urllib3.util.connection.create_connection
    return Attempt(client, host, _default_port(scheme, port))


def _u3_percent(host: str) -> str | None:
    """urllib3 2.8's host percent-decoding: unreserved characters decoded, other escapes kept (upper case);
    a lone '%' or an escaped control character is an error (None)."""
    out = []
    i = 0
    while i < len(host):
        c = host[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        code = host[i + 1 : i + 3]
        if len(code) < 2 or not all(x in "0123456789abcdefABCDEF" for x in code):
            return None
        char = chr(int(code, 16))
        if char < "\x20" or char == "\x7f":
            return None
        out.append(char if char in _UNRESERVED else "%" + code.upper())
        i += 3
    return "".join(out)


def _u3_zone(host: str) -> str:
    start = host.find("%")
    if start < 0:
        return host.lower()
    zone = host[start:-1]
    zone = zone[3:] if zone.startswith("%25") and zone != "%25" else zone[1:]
    return f"{host[:start].lower()}%{zone}]"


def _unquote_unreserved(text: str) -> str:
    parts = text.split("%")
    out = [parts[0]]
    for part in parts[1:]:
        code = part[:2]
        if len(code) == 2 and all(c in "0123456789abcdefABCDEF" for c in code):
            char = chr(int(code, 16))
            out.append(char + part[2:] if char in _UNRESERVED else "%" + part)
        else:
            out.append("%" + part)
    return "".join(out)


# --- httpx (httpx._urlparse) -----------------------------------------------------------------------------------

_HX_URL = re.compile(r"(?:(?P<scheme>([a-zA-Z][a-zA-Z0-9+.-]*)?):)?(?://(?P<authority>[^/?#]*))?")
_HX_AUTHORITY = re.compile(r"(?:(?P<userinfo>.*)@)?(?P<host>(\[.*\]|[^:@]*)):?(?P<port>.*)?")
_HX_IPV4_STYLE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$")
_HX_IPV6_STYLE = re.compile(r"^\[.*\]$")
_HX_SAFE = frozenset("!$&'()*+,;=" + '"`{}%|\\') | _UNRESERVED


def _httpx(url: str) -> Attempt:
    """httpx: no stripping, no ASCII control character anywhere; userinfo up to the last '@'; the host up
    to ':'; ASCII hosts lower-cased and percent-encoded but never decoded (so ``%65vil.test`` stays as it
    is), other hosts IDNA 2008 encoded; IP literals validated; any ``int()`` port."""
    client = "httpx"
    if len(url) > 65536:
        return Attempt(client, None, None, "URL too long")
    if any(c.isascii() and not c.isprintable() for c in url):
        return Attempt(client, None, None, "non-printable ASCII character in URL")
    m = _HX_URL.match(url)
    scheme = (m.group("scheme") or "").lower() if m else ""
    authority = (m.group("authority") or "") if m else ""
    am = _HX_AUTHORITY.match(authority)
    host = (am.group("host") or "") if am else ""
    port_text = am.group("port") if am else None
    if not host:
        return Attempt(client, None, None, "no host")
    if _HX_IPV4_STYLE.match(host):
        if parse_ipv4_strict(host) is None:
            return Attempt(client, None, None, f"invalid IPv4 address {host!r}")
    elif _HX_IPV6_STYLE.match(host):
        inner = host[1:-1]
        address, zone = split_zone(inner)
        if parse_ipv6(address) is None or ("%" in inner and (not zone or "/" in zone)):
            return Attempt(client, None, None, f"invalid IPv6 address {host!r}")
        host = inner
    elif host.isascii():
        host = "".join(c if c in _HX_SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in host.lower())
    else:
        encoded = _idna2008(host.lower(), std3=False, whole=True)
        if encoded is None or isinstance(encoded, Unknown):
            return _idna_failure(client, host, encoded)
        host = encoded
    port: int | None = None
    if port_text:
        try:
            port = int(port_text)
        except ValueError:
            return Attempt(client, None, None, f"invalid port {port_text!r}")
    if port is not None and port == DEFAULT_PORTS.get(scheme):
        port = None  # httpx drops a default port, from the URL and from the Host header
    # The Host header httpx sends: the host, and the port unless it is the default, as int() read it.
    header = None if port is None else (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return _socket_port(client, host, _default_port(scheme, port))._replace(host_header=header)


def _socket_port(client: str, host: str, port: int | None) -> Attempt:
    """urllib and httpx hand any ``int()`` port to ``socket.getaddrinfo``, which passes it to the C library
    as a decimal service string; glibc keeps its low 16 bits, so ``http://host:99999/`` connects to port
    34463 and ``:-1`` to 65535. A port beyond a C long fails in the socket module. The host stays a str: the
    socket encodes it (IDNA 2003), as normalize_host does."""
    if port is not None and not 0 <= port <= 65535:
        if not -(2**63) <= port < 2**63:
            return Attempt(client, None, None, "port out of range")
        port &= 0xFFFF
    return Attempt(client, host, port)


# --- any other scheme: urllib.parse -----------------------------------------------------------------------------


def _generic(url: str) -> Attempt:
    """Drivers for other schemes (redis, postgres, amqp, ...) mostly use urllib.parse.urlsplit."""
    from urllib.parse import urlsplit

    text = url if "//" in url else f"//{url}"
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return Attempt("url", None, None, str(exc))
    if not host:
        return Attempt("url", None, None, "no host in the URL")
    return Attempt("url", host, _default_port(parts.scheme.lower() or None, port))


# --- IDNA 2008 (the idna package, as urllib3 and httpx call it) -------------------------------------------------


class Unknown(str):
    """The IDNA 2008 form could not be computed (the idna package is missing)."""


def _idna2008(name: str, *, std3: bool, whole: bool = False) -> str | Unknown | None:
    """``idna.encode`` as urllib3 (one label, strict, STD3 rules) or httpx (the whole name) calls it; None if
    idna refuses the name (so does the client), :class:`Unknown` if the idna package is not installed."""
    try:
        import idna
    except ImportError:
        return Unknown("the idna package is not installed, so the IDNA 2008 form is unknown")
    try:
        if whole:
            return str(idna.encode(name).decode("ascii"))
        return str(idna.encode(name, strict=True, std3_rules=std3).decode("ascii"))
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def _idna_failure(client: str, label: str, result: str | None) -> Attempt:
    if isinstance(result, Unknown):
        return Attempt(client, None, None, str(result), unknown=True)
    return Attempt(client, None, None, f"{label!r} is not a valid IDNA 2008 name")
