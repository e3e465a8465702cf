"""Rule syntax and host normalisation (pure: no sockets, no I/O).

One syntax everywhere (config files, environment, CLI flags, pytest plugin)::

    api.example.com            exact host, any port
    *.example.com              any subdomain at any depth, not the apex
    host:443  host:8000-8100   port-scoped (also *.example.com:443)
    203.0.113.7  10.0.0.0/8    IP and CIDR rules
    2001:db8::1  [2001:db8::/32]:443  [::1]:8080   IPv6 (brackets to add a port)
"""

from __future__ import annotations

from typing import NamedTuple

from sockguard.addresses import Address, format_address, parse_address, parse_ipv6, parse_network, split_zone

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_DIGITS = frozenset("0123456789")


class RuleError(ValueError):
    """A rule that cannot be parsed; the message names the rule and the problem."""


class Rule(NamedTuple):
    text: str  # as written, for messages and logs
    kind: str  # "name", "wildcard", "cidr"
    host: str  # normalised name, wildcard suffix (no "*."), or formatted network
    version: int  # 4 / 6 for cidr rules, 0 for names
    network: int  # cidr rules: network as int
    prefix: int  # cidr rules: prefix length
    ports: tuple[int, int] | None  # inclusive port range, None = any

    def allows_port(self, port: int | None) -> bool:
        # An unknown port (a lookup before connect) matches any rule: the port is
        # checked again at connect time.
        return self.ports is None or port is None or self.ports[0] <= port <= self.ports[1]


class InvalidHost(ValueError):
    """A host that can never be a DNS name or an address (NUL, spaces, ...)."""


def normalize_host(host: str | bytes | bytearray) -> str:
    """The host exactly as the socket layer will send it to the resolver.

    CPython encodes ``str`` hosts with the ``idna`` codec (IDNA 2003 with
    nameprep: fullwidth and circled characters fold to ASCII), so matching runs
    on that encoding; a homograph becomes its own ``xn--`` label and cannot match
    an ASCII rule. Case and one trailing dot are folded. Raises InvalidHost,
    also for a numeric host with a trailing dot ("127.0.0.1."): the C library
    does not take that as an address but sends it to DNS as a name.
    """
    if isinstance(host, (bytes, bytearray)):
        try:
            text = bytes(host).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidHost(f"non-ASCII bytes in host {bytes(host)!r}") from None
    elif isinstance(host, str):
        if host.isascii():
            text = host
        else:
            try:
                text = host.encode("idna").decode("ascii")
            except UnicodeError as exc:
                raise InvalidHost(f"host {host!r} fails IDNA encoding ({exc})") from None
    else:
        raise InvalidHost(f"host must be str or bytes, not {type(host).__name__}")
    if ":" in text:  # only an IPv6 literal, optionally with a zone, has a colon
        addr_text, zone = split_zone(text)
        if parse_ipv6(addr_text) is None or ("%" in text and not _valid_zone(zone)):
            raise InvalidHost(f"host {host!r} contains ':' but is not an IPv6 address (with an optional %zone)")
        return addr_text.lower() + text[len(addr_text) :]
    text = text.lower()
    if text.endswith("."):
        text = text[:-1]
        if parse_address(text) is not None:
            raise InvalidHost(f"host {host!r} is a numeric address with a trailing dot, which is looked up in DNS")
    if not text or len(text) > 253 or not _NAME_CHARS.issuperset(text):
        bad = sorted({c for c in text if c not in _NAME_CHARS})
        detail = f"characters {bad!r}" if bad else "length"
        raise InvalidHost(f"host {host!r} is not a valid DNS name ({detail})")
    for label in text.split("."):
        if not label or len(label) > 63:
            raise InvalidHost(f"host {host!r} has an empty or over-long label")
    return text


def _valid_zone(zone: str) -> bool:
    return bool(zone) and zone.isascii() and zone.isprintable() and not any(c in zone for c in " %/")


def host_address(normalised: str) -> Address | None:
    """The address a normalised host names, if it is numeric in any spelling."""
    return parse_address(normalised)


def _parse_ports(text: str, rule: str) -> tuple[int, int]:
    lo_text, dash, hi_text = text.partition("-")
    if not _is_number(lo_text) or (dash and not _is_number(hi_text)):
        raise RuleError(f"rule {rule!r}: port {text!r} must be N or N-M")
    lo = int(lo_text)
    hi = int(hi_text) if dash else lo
    if not 0 < lo <= hi <= 65535:
        raise RuleError(f"rule {rule!r}: port range {text!r} must lie within 1-65535, low to high")
    return lo, hi


def _is_number(text: str) -> bool:
    # ASCII only (fullwidth digits pass str.isdigit()) and short (int() caps digits).
    return 0 < len(text) <= 5 and _DIGITS.issuperset(text)


def parse_rule(text: str) -> Rule:
    """Parse one rule; RuleError names the rule and what is wrong with it."""
    if not isinstance(text, str):
        raise RuleError(f"rule must be a string, not {type(text).__name__}: {text!r}")
    raw = text.strip()
    if not raw:
        raise RuleError("empty rule")
    if "://" in raw:
        raise RuleError(f"rule {raw!r}: looks like a URL; write the host (and port), e.g. 'api.example.com:443'")
    ports: tuple[int, int] | None = None
    body = raw
    if raw.startswith("["):
        close = raw.find("]")
        if close < 0:
            raise RuleError(f"rule {raw!r}: missing ']'")
        body, rest = raw[1:close], raw[close + 1 :]
        if ":" not in body:
            raise RuleError(f"rule {raw!r}: brackets are only for IPv6 addresses, write 'host:port'")
        if rest:
            if not rest.startswith(":"):
                raise RuleError(f"rule {raw!r}: expected ':PORT' after ']'")
            ports = _parse_ports(rest[1:], raw)
    elif raw.count(":") == 1:
        body, port_text = raw.split(":")
        ports = _parse_ports(port_text, raw)
    if "/" in body and not (":" in body or _looks_numeric(body.split("/")[0])):
        raise RuleError(f"rule {raw!r}: a path is not part of a rule; write the host (and port)")
    if ":" in body or _looks_numeric(body):
        try:
            version, network, prefix = parse_network(body)
        except ValueError as exc:
            raise RuleError(f"rule {raw!r}: {exc}") from None
        shown = format_address((version, network)) + ("" if prefix == (32 if version == 4 else 128) else f"/{prefix}")
        return Rule(raw, "cidr", shown, version, network, prefix, ports)
    wildcard = body.startswith("*.")
    name = body[2:] if wildcard else body
    if "*" in name:
        raise RuleError(f"rule {raw!r}: '*' is only allowed as a leading '*.' label")
    try:
        host = normalize_host(name)
    except InvalidHost as exc:
        raise RuleError(f"rule {raw!r}: {exc}") from None
    if host_address(host) is not None:
        raise RuleError(f"rule {raw!r}: ambiguous numeric host; write the address as a.b.c.d")
    return Rule(raw, "wildcard" if wildcard else "name", host, 0, 0, 0, ports)


def _looks_numeric(body: str) -> bool:
    head = body.split("/")[0]
    return "/" in body or (bool(head) and all(c in "0123456789." for c in head))


def split_rules(text: str) -> list[str]:
    """Rules from an environment value: comma- and/or whitespace-separated."""
    return [part for part in text.replace(",", " ").split() if part]
