"""The ``resolver`` setting, the ``[resolver]`` table and ``SOCKGUARD_RESOLVER*`` variables.

Parsed here, apart from the pinned resolver itself (sockguard/resolver.py), so that reading a
configuration never loads the resolver and the resolver never imports the configuration.
"""

from __future__ import annotations

from sockguard.addresses import format_address, parse_ipv4_strict, parse_ipv6
from sockguard.errors import ConfigError
from sockguard.rules import format_host_port, split_host_port
from sockguard.values import unknown_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

DEFAULTS: dict[str, Any] = {
    "timeout": 2.0,  # seconds per query to one server
    "attempts": 2,  # rounds over the server list
    "max_ttl": 300,  # cap on how long a positive answer is cached (seconds)
    "negative_ttl": 5,  # cap on NXDOMAIN / no-data caching (seconds)
    "cache_size": 4096,  # entries; (name, type) each
}
_LIMITS: dict[str, tuple[type, float, float]] = {
    "timeout": (float, 0.001, 60.0),
    "attempts": (int, 1, 10),
    "max_ttl": (int, 0, 86400),
    "negative_ttl": (int, 0, 3600),
    "cache_size": (int, 0, 1_000_000),
}
ENV_PREFIX = "SOCKGUARD_RESOLVER_"


def parse_nameserver(text: str) -> tuple[str, int]:
    """``ADDR``, ``ADDR:PORT``, ``[IPV6]:PORT`` or ``dns://`` + any of those -> (canonical address, port).

    Numeric only: finding the resolver must not need a resolver. Raises ValueError naming the problem."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"nameserver {text!r}: expected an IP address, ADDR:PORT, [IPV6]:PORT or dns://ADDR[:PORT]")
    rest = text.strip()
    if "://" in rest:
        scheme, _, rest = rest.partition("://")
        if scheme.lower() != "dns":
            raise ValueError(f"nameserver {text!r}: only dns:// (plain DNS over UDP/TCP) is supported, not {scheme}://")
        rest = rest.rstrip("/")
    try:
        host, port_text = split_host_port(rest)
    except ValueError:
        raise ValueError(f"nameserver {text!r}: expected [IPV6]:PORT") from None
    if parse_ipv4_strict(host) is not None:
        address = format_address((4, parse_ipv4_strict(host)))  # type: ignore[arg-type]
    elif ":" in host and "%" not in host and parse_ipv6(host) is not None:
        address = format_address((6, parse_ipv6(host)))  # type: ignore[arg-type]
    else:
        raise ValueError(
            f"nameserver {text!r}: {host!r} is not an IP address (a nameserver must be numeric: "
            "a name would need a resolver to find the resolver)"
        )
    port = 53
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ValueError(f"nameserver {text!r}: port must be a number from 1 to 65535, got {port_text!r}")
        port = int(port_text)
    return address, port


def format_nameserver(server: tuple[str, int]) -> str:
    return format_host_port(*server)


def normalize_servers(value: object, source: str, key: str) -> list[str] | None:
    """``"system"`` (None) or a non-empty list of nameservers, each as canonical ``ADDR:PORT``. Raises ConfigError."""
    if value in ("system", "", None):
        return None
    servers = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(servers, list) or not servers or not all(isinstance(s, str) and s.strip() for s in servers):
        raise ConfigError(
            f'sockguard: {source}: {key} must be "system" or a list of nameservers, got {value!r}',
            source=source,
            key=key,
            value=value,
        )
    result = []
    for server in servers:
        if server.strip().lower() == "system":
            raise ConfigError(
                f'sockguard: {source}: {key}: "system" cannot be combined with nameservers (got {value!r})',
                source=source,
                key=key,
                value=value,
            )
        try:
            result.append(format_nameserver(parse_nameserver(server)))
        except ValueError as exc:
            raise ConfigError(f"sockguard: {source}: {key}: {exc}", source=source, key=key, value=server) from None
    return result


def _option(key: str, value: object, source: str, name: str) -> Any:
    kind, low, high = _LIMITS[key]
    number: Any = value
    if isinstance(value, str):
        try:
            number = kind(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or (kind is int and number != int(number)):
        number = None
    if number is None or not low <= number <= high:
        what = "a number of seconds" if kind is float else "a whole number"
        raise ConfigError(
            f"sockguard: {source}: {name} must be {what} from {low:g} to {high:g}, got {value!r}",
            source=source,
            key=name,
            value=value,
        )
    return kind(number)


def parse_table(table: Mapping[str, Any], source: str) -> tuple[list[str] | None, dict[str, Any]]:
    """The ``[resolver]`` table: ``servers`` plus options. Raises ConfigError."""
    known = ["servers", *DEFAULTS]
    options = {}
    for key, value in table.items():
        if key not in known:
            raise unknown_key(source, f"resolver.{key}", known, value)
        if key != "servers":
            options[key] = _option(key, value, source, f"resolver.{key}")
    if "servers" not in table:
        raise ConfigError(
            f'sockguard: {source}: [resolver] needs servers = [...] (or servers = "system")',
            source=source,
            key="resolver.servers",
        )
    return normalize_servers(table["servers"], source, "resolver.servers"), options


def parse_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``SOCKGUARD_RESOLVER_<OPTION>`` variables. A misspelt one is an error, not silently ignored."""
    options = {}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or not value.strip():
            continue
        key = var[len(ENV_PREFIX) :].lower()
        if key not in DEFAULTS:
            known = ", ".join(ENV_PREFIX + k.upper() for k in DEFAULTS)
            raise ConfigError(
                f"sockguard: environment: unknown variable {var} (known: SOCKGUARD_RESOLVER, {known})",
                source="environment",
                key=var,
                value=value,
            )
        options[key] = _option(key, value, "environment", var)
    return options
