"""pytest-socket's semantics, when sockguard handles its options, markers, fixtures and functions.

What a pytest-socket user sees stays the same (docs/pytest-plugin.md lists the few deliberate differences):

* **disable** (``--disable-socket``, ``disable_socket`` marker / fixture / function): creating a socket during a
  test's set-up or call raises ``SocketBlockedError`` ("A test tried to use socket.socket."), AF_UNIX too unless
  ``--allow-unix-socket``; so does any lookup ("... socket.getaddrinfo."). Refused here, in an audit hook
  (:func:`_audit`), before the socket() system call; sockguard's policy (nothing allowed) stays under it.
* **allow hosts** (``--allow-hosts``, ``allow_hosts`` marker, ``socket_allow_hosts``): connects outside the list
  raise ``SocketConnectBlockedError`` with pytest-socket's text and its rendering of the list. sockguard's stronger
  checks hold too: names refused before DNS, UDP, ``connect_ex``, ``_socket``, child processes.
* Every refusal's first line is pytest-socket's; sockguard's explanation (destination, reason, call site, the
  marker or option that would allow it) follows on the next lines. The errors are the ones of
  :mod:`sockguard.pytest_plugin.socket_api` (``EgressBlocked``, so ``OSError``), and they warn as pytest-socket's do.

The host list is parsed leniently, as pytest-socket does: ``10.0.0.0/notanumber`` is a (never matching) host
name, ``127.0.0.1/8`` is the network ``127.0.0.0/8``, names are resolved once per session and their addresses
allowed, and anything that is neither a list nor a string leaves connections unrestricted.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sockguard.errors import EgressBlocked
from sockguard.pytest_plugin.scopes import OFF, Rules
from sockguard.pytest_plugin.socket_api import (
    CREATE,
    LookupSocketBlockedError,
    LookupSocketConnectBlockedError,
    SocketBlockedError,
    SocketConnectBlockedError,
    connect_text,
    from_guard,
)
from sockguard.refusal import ALLOW_WHERE

#: Where a rule goes in a pytest run (replaces the runtime's SOCKGUARD_ALLOW / --allow in block messages).
NATIVE_WHERE = "--sockguard-allow, the sockguard_allow ini option, or @pytest.mark.sockguard(allow=[...])"
ENABLE_HINT = "@pytest.mark.enable_socket or the socket_enabled fixture allows everything"


# --- the policy transformations (pytest-socket's functions, as changes of Rules) ---------------------------


def disabled(rules: Rules | None, unix: bool) -> Rules:
    """``disable_socket(allow_unix_socket=unix)`` on top of ``rules``: socket creation refused, nothing allowed
    (a host list already in force stays, as pytest-socket's connect guard does). Mode and deny rules stay."""
    base = OFF if rules is None else rules
    return dataclasses.replace(
        base,
        mode="enforce" if base.mode == "off" else base.mode,
        allow=base.allow if base.hosts_shown is not None else (),
        allow_loopback=False,
        allow_unix=unix and (base.allow_unix or not base.block_create),  # a second disable never relaxes the first
        block_create=True,
    )


def enabled(rules: Rules | None) -> Rules:
    """``enable_socket()``: socket creation allowed again; a host list in force stays (pytest-socket's does)."""
    if rules is None or rules.hosts_shown is None:
        return OFF
    return dataclasses.replace(rules, block_create=False)


def allowed(rules: Rules | None, hosts: tuple[tuple[str, ...], tuple[str, ...]] | None, unix: bool) -> Rules | None:
    """``socket_allow_hosts(...)``: connections only to ``hosts`` (sockguard rules, pytest-socket's rendering);
    ``hosts`` None (not a list or a string) changes nothing."""
    if hosts is None:
        return rules
    base = OFF if rules is None else rules
    return dataclasses.replace(
        base,
        mode="enforce" if base.mode == "off" else base.mode,
        allow=hosts[0],
        allow_loopback=False,
        allow_unix=unix,
        hosts_shown=hosts[1],
    )


def parse_hosts(
    value: object, resolve: Callable[[str], tuple[str, ...]]
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """pytest-socket's host list as (sockguard allow rules, the list as pytest-socket shows it), or None when
    ``value`` is neither a string nor a list (pytest-socket then restricts nothing). Lenient like pytest-socket:
    an entry that is no network, address or usable name is kept for display and can never match."""
    from sockguard.errors import RuleError
    from sockguard.rules import parse_rule

    if isinstance(value, str):
        entries = value.split(",")
    elif isinstance(value, list):
        entries = [str(v) for v in value]
    else:
        return None
    rules: list[str] = []
    shown: list[str] = []
    for raw in entries:
        entry = raw.strip()
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                pass  # a host name that never matches, like pytest-socket's
            else:
                rules.append(str(network))
                shown.append(str(network))
                if network.is_loopback or network.overlaps(ipaddress.ip_network("127.0.0.0/8")):
                    rules.append("localhost")  # resolved from /etc/hosts: the lookup create_connection makes first
                continue
        try:
            ipaddress.ip_address(entry)
        except ValueError:
            addresses = resolve(entry) if entry else ()
            shown.append(entry if addresses == (entry,) else f"{entry} ({','.join(sorted(addresses))})")
            try:
                parse_rule(entry)
            except RuleError:
                pass
            else:
                rules.append(entry)
            rules.extend(a.partition("%")[0] for a in addresses)
        else:
            rules.append(entry)
            shown.append(entry)
            if ipaddress.ip_address(entry).is_loopback:
                rules.append("localhost")  # resolved from /etc/hosts: the lookup create_connection makes first
    return tuple(dict.fromkeys(rules)), tuple(sorted(shown))


# --- the exceptions a refusal raises under pytest ---------------------------------------------------------


def pytest_hint(message: str, rules: Rules) -> str:
    """sockguard's block message with the hint naming what allows it in a pytest run."""
    if rules.hosts_shown is None and not rules.block_create:
        return message.replace(ALLOW_WHERE, NATIVE_WHERE)
    head, sep, _ = message.partition(" To allow it, add the rule ")
    if not sep:
        return message
    return f"{head} To allow it, list the host in @pytest.mark.allow_hosts([...]) or --allow-hosts; {ENABLE_HINT}."


def translator(rules: Rules) -> Callable[[EgressBlocked, Any], EgressBlocked]:
    """The exception for a refusal under ``rules``: pytest-socket's class and first line when its semantics are
    in force, else sockguard's own; the hint names pytest's options either way (guard.state_from_settings)."""

    def translate(exc: EgressBlocked, sock: Any) -> EgressBlocked:
        try:
            return _translate(exc)
        except Warning:
            # filterwarnings = error made pytest-socket's warning an exception, which no ``except OSError`` cleanup
            # catches (socket.create_connection's): close the socket first, as pytest-socket does.
            if isinstance(sock, socket.socket):
                sock.close()
            raise

    def _translate(exc: EgressBlocked) -> EgressBlocked:
        detail = pytest_hint(str(exc), rules)
        attrs = exc.__dict__.copy()
        lookup = exc.operation == "resolve"
        if rules.hosts_shown is not None:
            host = None if exc.reason == "unix-socket" else (exc.host if lookup else exc.address or exc.host)
            cls: type[EgressBlocked] = LookupSocketConnectBlockedError if lookup else SocketConnectBlockedError
            attrs.update(_allowed=list(rules.hosts_shown), _host=host)
            return from_guard(cls, connect_text(rules.hosts_shown, host), detail, attrs)
        if rules.block_create:
            first = f"A test tried to use socket.{_lookup_function()}." if lookup else CREATE
            cls = LookupSocketBlockedError if lookup else SocketBlockedError
            return from_guard(cls, first, detail, attrs)
        if detail == str(exc):
            return exc
        new = type(exc).__new__(type(exc))
        OSError.__init__(new, exc.errno, detail)
        new.__dict__.update(attrs)
        return new

    return translate


def _lookup_function() -> str:
    """Which socket-module function the refused lookup came through (pytest-socket names it): the nearest
    ``gethostbyname`` or ``getaddrinfo`` frame of the socket module or sockguard's wrappers."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_name
        if name in ("gethostbyname", "gethostbyname_ex", "getaddrinfo"):
            return "gethostbyname" if name.startswith("gethostbyname") else "getaddrinfo"
        frame = frame.f_back  # type: ignore[assignment]
    return "getaddrinfo"


# --- socket creation (and lookups) refused while sockets are disabled --------------------------------------

#: The refusal in force: (allow AF_UNIX, describe the refusal and record it) or None. Set by the plugin for the
#: top of its stack (set-up and call of a test whose policy disables sockets).
_creating: tuple[bool, Callable[[str, str], str]] | None = None
_hooked = False


def refuse_creation(value: tuple[bool, Callable[[str, str], str]] | None) -> None:
    """Put a creation refusal in force (None: none). The audit hook is added at the first one (it cannot be
    removed: with nothing in force it returns at once)."""
    global _creating, _hooked
    _creating = value
    if value is not None and not _hooked:
        _hooked = True
        sys.addaudithook(_audit)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    creating = _creating
    if creating is None:
        return
    if event == "socket.__new__":
        family = args[1]
        if creating[0] and family == getattr(socket, "AF_UNIX", None):
            return
        name = getattr(socket.AddressFamily, "_value2member_map_", {}).get(family)
        what = f"a socket ({getattr(name, 'name', family)})"
        detail = creating[1](what, "socket")
        attrs = {"operation": "socket", "host": what, "reason": "socket-disabled"}
        raise from_guard(SocketBlockedError, CREATE, detail, attrs)
    if event in ("socket.getaddrinfo", "socket.gethostbyname"):
        first = f"A test tried to use {event}."
        host = args[0]
        what = f"a lookup of {host.decode(errors='replace') if isinstance(host, bytes) else host}"
        detail = creating[1](what, "resolve")
        attrs = {"operation": "resolve", "host": what, "reason": "socket-disabled"}
        raise from_guard(LookupSocketBlockedError, first, detail, attrs)


@contextmanager
def creation_allowed() -> Iterator[None]:
    """The plugin's own lookups (an allow_hosts name) while a test has sockets disabled."""
    global _creating
    saved, _creating = _creating, None
    try:
        yield
    finally:
        _creating = saved
