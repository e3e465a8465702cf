"""Rule syntax and host normalisation (pure: no sockets, no I/O).

One syntax everywhere (config files, environment, CLI flags, pytest plugin)::

    api.example.com            exact host, any port
    *.example.com              any subdomain at any depth, not the apex
    host:443  host:8000-8100   port-scoped (also *.example.com:443)
    203.0.113.7  10.0.0.0/8    IP and CIDR rules
    2001:db8::1  [2001:db8::/32]:443  [::1]:8080   IPv6 (brackets to add a port)
"""

from __future__ import annotations

from collections import _tuplegetter  # type: ignore[attr-defined]  # (namedtuple's field getter, in C)

from sockguard.addresses import format_address, parse_address, parse_ipv6, parse_network, split_zone
from sockguard.errors import InvalidHost, RuleError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")

#: A port whose value the guard cannot know (an object the C layer converted itself, seen only afterwards by the
#: audit hook). It satisfies only port-less allow rules and meets every port-scoped deny rule. ``None`` is different:
#: a port *not given* (a lookup before the connect), which any rule allows, since the connect is decided again
#: with its real port. (Not -1: that is ``None`` in the native library's policy, native/sg_policy.c, where every
#: port is known.)
UNKNOWN_PORT = -2
_DIGITS = frozenset("0123456789")


class Rule(tuple):  # type: ignore[type-arg]
    """One parsed rule: the tuple ``(text, kind, host, version, network, prefix, ports)``, with named fields.

    ``text`` as written (for messages and logs); ``kind`` "name", "wildcard" or "cidr"; ``host`` the normalised
    name, the wildcard suffix (no "*.") or the formatted network; ``version`` 4/6 for cidr rules, 0 for names;
    ``network``/``prefix`` the cidr as ints; ``ports`` an inclusive (low, high) range or None for any port.

    Written out instead of ``collections.namedtuple``, which compiles a ``__new__`` from source text when it makes
    the class (~75 µs of every guarded process's first socket use; ``typing.NamedTuple`` would import ``typing``).
    It behaves as that namedtuple would: same fields, equality, repr, pickling and ``_replace``.
    """

    __slots__ = ()
    _fields = ("text", "kind", "host", "version", "network", "prefix", "ports")

    def __new__(
        cls, text: str, kind: str, host: str, version: int, network: int, prefix: int, ports: tuple[int, int] | None
    ) -> Rule:
        return tuple.__new__(cls, (text, kind, host, version, network, prefix, ports))

    if TYPE_CHECKING:
        text: str
        kind: str
        host: str
        version: int
        network: int
        prefix: int
        ports: tuple[int, int] | None
    else:
        text = _tuplegetter(0, "the rule as written")
        kind = _tuplegetter(1, '"name", "wildcard" or "cidr"')
        host = _tuplegetter(2, "the normalised name, the wildcard suffix or the formatted network")
        version = _tuplegetter(3, "4 or 6 for a cidr rule, 0 for a name")
        network = _tuplegetter(4, "a cidr rule's network, as an int")
        prefix = _tuplegetter(5, "a cidr rule's prefix length")
        ports = _tuplegetter(6, "an inclusive (low, high) port range, or None for any port")

    def __repr__(self) -> str:
        return "Rule(" + ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self, strict=True)) + ")"

    def __getnewargs__(self) -> tuple[object, ...]:  # (pickling calls __new__ with the fields)
        return tuple(self)

    def _replace(self, **changes: object) -> Rule:
        values = dict(zip(self._fields, self, strict=True))
        values.update(changes)
        return Rule(**values)  # type: ignore[arg-type]

    def allows_port(self, port: int | None) -> bool:
        """Whether an *allow* rule covers ``port``: a port not given (None, a lookup before the connect) matches
        any rule, as the connect is decided again with its port; :data:`UNKNOWN_PORT` matches only a rule
        without ports (the rules' ports are 1-65535)."""
        return self.ports is None or port is None or self.ports[0] <= port <= self.ports[1]


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
    try:
        body, port_text = split_host_port(raw)
    except ValueError as exc:
        raise RuleError(f"rule {exc}") from None
    if raw.startswith("[") and ":" not in body:
        raise RuleError(f"rule {raw!r}: brackets are only for IPv6 addresses, write 'host:port'")
    ports = None if port_text is None else _parse_ports(port_text, raw)
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
    if parse_address(host) is not None:
        raise RuleError(f"rule {raw!r}: ambiguous numeric host; write the address as a.b.c.d")
    return Rule(raw, "wildcard" if wildcard else "name", host, 0, 0, 0, ports)


def _looks_numeric(body: str) -> bool:
    head = body.split("/")[0]
    return "/" in body or (bool(head) and all(c in "0123456789." for c in head))


def split_rules(text: str) -> list[str]:
    """Rules from an environment value: comma- and/or whitespace-separated."""
    return [part for part in text.replace(",", " ").split() if part]


def compile_rules(texts: Iterable[str], where: str) -> list[Rule]:
    """Parse many rules, prefixing an error with where they came from (file and key, variable, flag)."""
    if isinstance(texts, (str, bytes)):  # would silently become one rule per character
        raise RuleError(f"{where}: expected a list of rules, got the string {texts!r}")
    parsed = []
    for text in texts:
        try:
            parsed.append(parse_rule(text))
        except RuleError as exc:
            raise RuleError(f"{where}: {exc}") from None
    return parsed


def split_host_port(text: str) -> tuple[str, str | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address -> (host, port text or None).

    The one host:port splitter (rules, nameservers, ``sockguard check`` targets). The port is returned as
    text for the caller to validate in its own terms. Raises ValueError for a malformed bracket."""
    if text.startswith("["):
        host, closed, tail = text[1:].partition("]")
        if not closed:
            raise ValueError(f"{text!r}: missing ']'")
        if not tail:
            return host, None
        if not tail.startswith(":"):
            raise ValueError(f"{text!r}: expected ':PORT' after ']'")
        return host, tail[1:]
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, None


def format_host_port(host: object, port: object) -> str:
    """``host:port``, ``[v6]:port``, or the host alone when the port is None (messages, logs, suggestions)."""
    text = bytes(host).decode("ascii", "replace") if isinstance(host, (bytes, bytearray)) else str(host)
    if port is None:
        return text
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"
