"""Enforcement: adapts socket calls and audit events to policy decisions.

Two layers, one decision each:

* The audit hook (the floor) checks every lookup *name* before DNS and every
  connect/sendto/sendmsg *address* before the syscall, whatever called it.
* Python wrappers on the ``socket`` module do what audit events cannot: record
  which name each resolved address came from (so a connect to it is known to
  be for an allowed name), drop internal answers, and resolve hostname tuples
  passed to ``connect``/``sendto`` through the guard before C would resolve them
  itself (C's lookup raises no event and its DNS query would already be out).

Decisions are cached per policy; the caches and the address-to-name map are
plain dicts (atomic under the GIL: no lock on the hot path) with hard bounds.
"""

from __future__ import annotations

import _socket
import _thread
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sockguard import _hook
from sockguard.addresses import format_address, parse_address, unwrap_routable
from sockguard.errors import ConfigError, EgressBlocked
from sockguard.events import Sinks, decision_event, find_caller, make_event
from sockguard.policy import (
    BREAKER_OPEN,
    CONFIG_ERROR,
    DENIED,
    FAMILY,
    INTERNAL,
    INVALID,
    METADATA,
    PINNED_RESOLVER,
    RATE_LIMITED,
    RAW_IP,
    SCAN_PATTERN,
    UNIX,
    Decision,
    Policy,
)
from sockguard.rules import InvalidHost, normalize_host

AF_INET = _socket.AF_INET
AF_INET6 = _socket.AF_INET6
AF_UNIX = getattr(_socket, "AF_UNIX", -1)
AF_NETLINK = getattr(_socket, "AF_NETLINK", -1)
_family_of = _socket.socket.family.__get__  # C getter: no enum conversion
_type_of = _socket.socket.type.__get__
_INET = (AF_INET, AF_INET6)

NUMERIC_OK = Decision(True, "numeric-host")
_CACHE_MAX = 8192
_RESOLVED_MAX = 65536
_NUMERIC_MAX = 4096

#: address string (as getaddrinfo returned it) -> names it was resolved from
_resolved: dict[str, tuple[str, ...]] = {}
#: host strings seen in connect/sendto tuples that are already canonical IPs
_numeric: set[Any] = set()

_load_lock = _thread.allocate_lock()
_emitting = _thread._local()


class State:
    """One policy in force, with its caches. Replaced whole, never mutated in
    place, so a thread always sees one consistent policy."""

    __slots__ = (
        "addrs",
        "answers",
        "blocks",
        "breaker",
        "error",
        "mode",
        "names",
        "policy",
        "resolver",
        "settings",
        "sinks",
    )

    def __init__(
        self,
        policy: Policy,
        mode: str = "enforce",
        sinks: Sinks | None = None,
        *,
        error: str | None = None,
        settings: Any = None,
        breaker: Any = None,
        resolver: Any = None,
    ) -> None:
        self.policy = policy
        self.mode = mode
        self.sinks = sinks if sinks is not None else Sinks(None)
        self.error = error
        self.settings = settings
        self.breaker = breaker
        self.resolver = resolver  # sockguard.resolver.Resolver in pinned mode, else None (the system resolver)
        self.names: dict[tuple[Any, Any], tuple[Decision, str | None]] = {}
        self.addrs: dict[Any, dict[Any, Decision]] = {}
        self.answers: dict[tuple[str, str, int | None], Decision] = {}
        self.blocks: dict[Any, tuple[str | None, str, str]] = {}  # see _block_text

    # -- decisions (cached) ------------------------------------------------

    def lookup(self, host: Any, port: Any) -> tuple[Decision, str | None]:
        """Decision for a lookup, and the normalised name (None if numeric)."""
        key = (host, port)
        found = self.names.get(key)
        if found is None:
            found = self._lookup(host, _port_number(port))
            if len(self.names) >= _CACHE_MAX:
                self.names.clear()
            self.names[key] = found
        return found

    def _lookup(self, host: Any, port: int | None) -> tuple[Decision, str | None]:
        if self.error is not None:
            return Decision(False, CONFIG_ERROR, None, self.error), None
        try:
            name = normalize_host(host)
        except InvalidHost as exc:
            return Decision(False, INVALID, None, str(exc)), None
        if parse_address(name) is not None:
            # No DNS leaves for a numeric host (servers resolve "0.0.0.0" to
            # bind): the connect or send decides on the address.
            return NUMERIC_OK, None
        return self.policy.check_name(name, port), name

    def address(self, host: Any, port: Any) -> Decision:
        ports = self.addrs.get(host)
        if ports is not None:
            found = ports.get(port)
            if found is not None:
                return found
        decision = self._address(host, _port_number(port))
        if ports is None:
            if len(self.addrs) >= _CACHE_MAX:
                self.addrs.clear()
            ports = self.addrs[host] = {}
        if len(ports) < 1024:
            ports[port] = decision
        return decision

    def _address(self, host: Any, port: int | None) -> Decision:
        if self.error is not None:
            return Decision(False, CONFIG_ERROR, None, self.error)
        addr = parse_address(host) if isinstance(host, str) else None
        if addr is None:
            # A hostname reached C without the wrappers: C has resolved it
            # already (no event fires for that). Decide on the name, and put
            # the wrappers back if someone replaced them.
            _wrappers_bypassed(host)
            return self._lookup(host, port)[0]
        decision = self.policy.check_address(addr, port)
        if decision.reason == RAW_IP:
            names = _resolved.get(host) or _resolved.get(format_address(addr))
            if not names and unwrap_routable(addr) != addr:  # ::ffff:a.b.c.d reaches the IPv4 host a.b.c.d
                names = _resolved.get(format_address(unwrap_routable(addr)))
            if names:
                for name in names:
                    by_name = self.policy.check_address(addr, port, name)
                    if by_name.allowed:
                        return by_name
                return by_name
        return decision

    def answer(self, name: str, ip: str, port: int | None) -> Decision:
        key = (name, ip, port)
        found = self.answers.get(key)
        if found is None:
            addr = parse_address(ip)
            if addr is None:
                found = Decision(False, INVALID, None, f"resolver returned {ip!r}")
            else:
                found = self.policy.check_address(addr, port, name)
            if len(self.answers) >= _CACHE_MAX:
                self.answers.clear()
            self.answers[key] = found
        return found


_bypass_reported = False


def _wrappers_bypassed(host: Any) -> None:
    global _bypass_reported
    module = sys.modules.get("socket")
    if module is None:
        return
    replaced = not getattr(getattr(module.socket, "connect", None), "__sockguard__", False)
    if replaced:
        patch_socket_module(module)
    if not _bypass_reported:
        _bypass_reported = True
        why = (
            "socket.socket.connect had been replaced; sockguard re-applied its wrapper"
            if replaced
            else ("the hostname was passed to _socket directly")
        )
        sys.stderr.write(
            f"sockguard: warning: a connect/sendto with hostname {_text(host)!r} reached the C layer, which resolved "
            f"it before any check ({why}). Pass addresses from socket.getaddrinfo instead.\n"
        )


def _port_number(port: Any) -> int | None:
    if port.__class__ is int:
        return port
    if isinstance(port, (str, bytes)) and port.isdigit():
        return int(port)
    return None


# -- loading -----------------------------------------------------------------

_state: State | None = None


def current() -> State:
    state = _state
    if state is None:
        with _load_lock:
            state = _state
            if state is None:
                state = _load_from_environment()
                _activate(state)
    return state


def _load_from_environment() -> State:
    try:
        from sockguard.config import load_settings

        settings = load_settings()
        return state_from_settings(settings)
    except ConfigError as exc:
        return fail_closed(str(exc))
    except Exception as exc:  # never let a loader bug turn enforcement off
        return fail_closed(f"unexpected error loading the configuration: {exc!r}")


def state_from_settings(settings: Any, *, observer: Any = None) -> State:
    """The one constructor of a :class:`State` from :class:`~sockguard.config.Settings` (runtime, API and
    pytest plugin alike). ``observer`` is called with every event this state emits."""
    sinks = Sinks(settings.log, observer)
    policy = settings.build_policy()
    breaker = None
    # On by default (docs/breaker.md): its defaults never trip a healthy service.
    if settings.mode != "off" and settings.breaker.get("enabled", True):
        from sockguard.breaker import Breaker

        breaker = Breaker.from_settings(settings.breaker, sinks=sinks, mode=settings.mode, names=_resolved.get)
    resolver = None
    if settings.mode != "off" and settings.resolver:  # pinned mode (docs/resolver.md); dnspython loads at first use
        from sockguard.resolver import Resolver

        resolver = Resolver.from_settings(settings, sinks)
    return State(policy, settings.mode, sinks, settings=settings, breaker=breaker, resolver=resolver)


def fail_closed(message: str) -> State:
    try:
        sys.stderr.write(f"{message}\nsockguard: blocking all network traffic until the configuration is fixed\n")
    except Exception:
        pass
    return State(Policy(allow_loopback=False), "enforce", Sinks(None), error=message)


def _activate(state: State) -> None:
    global _state
    _state = state
    if state.mode == "off":
        _hook.set_handlers({})
    else:
        _hook.set_handlers(_HANDLERS)
        _hook.install_audit_hook()
        _hook.when_imported("socket", patch_socket_module)


def install(state: State) -> State | None:
    """Put ``state`` in force process-wide; returns the previous one."""
    with _load_lock:
        previous = _state
        _activate(state)
    return previous


def restore(previous: State | None) -> None:
    """Undo :func:`install`: back to the previous state, or to the start-up
    configuration (sitecustomize), or off."""
    global _state
    with _load_lock:
        if previous is not None:
            _activate(previous)
        elif _hook.activated_at_startup:
            _state = None  # back to the environment's policy, loaded lazily
            _hook.set_lazy_handlers()
        else:
            _activate(State(Policy(), "off"))


@contextmanager
def applied(state: State) -> Iterator[State]:
    previous = install(state)
    try:
        yield state
    finally:
        restore(previous)


def _after_fork_in_child() -> None:
    global _load_lock
    _load_lock = _thread.allocate_lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- reporting ---------------------------------------------------------------


def _protocol(sock: Any) -> str:
    if sock is None:
        return "dns"
    if sock.__class__ is str:  # a connect made by C code outside the socket module (check_connect)
        return sock
    try:
        kind = _type_of(sock) & 0xF
    except Exception:
        return "?"
    return _PROTOCOLS.get(kind) or str(kind)


_PROTOCOLS = {1: "tcp", 2: "udp", 3: "raw"}


def _destination(host: Any, port: Any) -> str:
    text = host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)
    if port is None:
        return text
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def _suggestion(state: State, decision: Decision, host: Any, port: Any, address: str | None) -> str | None:
    reason = decision.reason
    if reason == DENIED or reason in (
        INVALID,
        FAMILY,
        CONFIG_ERROR,
        UNIX,
        BREAKER_OPEN,
        SCAN_PATTERN,
        RATE_LIMITED,
        PINNED_RESOLVER,
    ):
        return None
    number = _port_number(port)
    if reason == INTERNAL:
        return state.policy.suggest(None, number, address)
    name = host.decode("ascii", "replace") if isinstance(host, bytes) else host
    try:
        name = normalize_host(name)
    except (InvalidHost, TypeError):
        pass
    if reason == METADATA:
        return state.policy.suggest(name, None)
    return state.policy.suggest(name, number, address)


def block_message(
    operation: str,
    decision: Decision,
    host: Any,
    port: Any,
    address: str | None,
    caller: str | None,
    suggestion: str | None,
    mode: str,
) -> str:
    before, after = _block_parts(operation, decision, host, port, address, suggestion, mode)
    return f"{before}{caller or 'unknown code'}{after}"


def _block_parts(
    operation: str, decision: Decision, host: Any, port: Any, address: str | None, suggestion: str | None, mode: str
) -> tuple[str, str]:
    """The block message before and after the caller."""
    verb = {"connect": "connection", "send": "datagram", "resolve": "DNS lookup"}.get(operation, operation)
    head = "would block" if mode == "monitor" else "blocked"
    dest = _destination(host, port) if host is not None else _destination(address, port)
    via = f" ({address})" if address and host is not None and address != host else ""
    text = f"sockguard {head} {verb} to {dest}{via}: {decision.explain()}"
    if decision.rule and decision.reason == DENIED:
        text += f" (deny rule {decision.rule!r})"
    text += "; called from "
    after = "."
    if decision.reason == DENIED:
        after += " To allow it, remove or narrow that deny rule."
    elif decision.reason == CONFIG_ERROR:
        after += " Fix the configuration to restore traffic."
    elif suggestion:
        after += f" To allow it, add the rule {suggestion!r} (SOCKGUARD_ALLOW, --allow, or allow in sockguard.toml)."
    return text, after


def _block_text(
    state: State, decision: Decision, operation: str, host: Any, port: Any, address: str | None
) -> tuple[str | None, str, str]:
    """Suggestion and message parts (around the caller) for a block, cached per state: a retry loop
    against a blocked destination pays for the suggestion and the formatting once."""
    key: Any = (operation, decision, host, port, address)
    try:
        found = state.blocks.get(key)
    except TypeError:  # an unhashable host (bytearray): no cache
        key = found = None
    if found is None:
        suggestion = _suggestion(state, decision, host, port, address)
        found = (suggestion, *_block_parts(operation, decision, host, port, address, suggestion, state.mode))
        if key is not None:
            if len(state.blocks) >= 1024:
                state.blocks.clear()
            state.blocks[key] = found
    return found


def report(
    state: State,
    decision: Decision,
    operation: str,
    sock: Any,
    host: Any,
    port: Any,
    address: str | None,
    *,
    log: bool = True,
    fail: bool = True,
    depth: int = 2,
) -> None:
    """Log a decision; raise EgressBlocked for a block in enforce mode. ``depth``: where
    find_caller starts (frames known to be sockguard's need not be looked at)."""
    if decision.allowed:
        sinks = state.sinks
        if not sinks.wants_allow() or getattr(_emitting, "active", False):
            return
        caller = find_caller(depth)
        text = _text(host)
        fixed = (operation, _protocol(sock), text, _port_number(port), address, "allow", decision.reason,
                 decision.rule, decision.detail, state.mode)  # fmt: skip
        if sinks.beyond_file(20):
            message = f"sockguard allowed {operation} to {_destination(text or address, port)}"
            _emit(state, decision_event(fixed, caller), message, 20)
        else:  # the JSON-lines file alone: no event dict, no message text, and a file write cannot recurse
            sinks.write_decision(fixed, caller)
        return
    caller = find_caller(depth)
    suggestion, before, after = _block_text(state, decision, operation, host, port, address)
    message = f"{before}{caller or 'unknown code'}{after}"
    monitor = state.mode == "monitor"
    if log and not getattr(_emitting, "active", False) and state.sinks.wants(30):
        event = make_event(
            operation=operation,
            protocol=_protocol(sock),
            host=_text(host),
            port=_port_number(port),
            address=address,
            decision="would-block" if monitor else "block",
            reason=decision.reason,
            rule=decision.rule,
            mode=state.mode,
            caller=caller,
            detail=decision.detail,
        )
        _emit(state, event, message, 30)
    if fail and operation == "resolve" and state.breaker is not None:
        state.breaker.lookup_blocked(host, port, decision)  # a retry loop on a blocked name alerts too
    if fail and not monitor:
        raise EgressBlocked(
            message,
            host=_text(host),
            port=_port_number(port),
            address=address,
            reason=decision.reason,
            rule=decision.rule,
            operation=operation,
            caller=caller,
            suggestion=suggestion,
        )


def _text(host: Any) -> str | None:
    if host is None or isinstance(host, str):
        return host
    if isinstance(host, (bytes, bytearray)):
        return bytes(host).decode("ascii", "replace")
    return str(host)


def _emit(state: State, event: dict[str, Any], message: str, level: int) -> None:
    # A log handler that itself uses the network (syslog over UDP, HTTP) is
    # still checked, but its own decisions are not logged again (no recursion).
    _emitting.active = True
    try:
        state.sinks.emit(event, message, level)
    except Exception:
        pass
    finally:
        _emitting.active = False


# -- audit-hook handlers (the floor) ------------------------------------------


def _check_socket(args: tuple[Any, ...], operation: str = "connect") -> None:
    """The ``socket.connect`` audit handler itself (one Python call fewer on every connect); sends come
    through _on_sendto/_on_sendmsg."""
    sock = args[0]
    address = args[1]
    state = _state or current()
    try:
        family = _family_of(sock)
    except Exception:
        family = -1
    if family in _INET:
        # Hot path: an IPv4 address tuple *is* the breaker's (host, port) key, and a healthy destination is
        # one whose cached decision was allowed in this State: one set lookup, no tuple built.
        breaker = state.breaker
        if (
            breaker is not None
            and operation == "connect"
            and address in breaker.healthy
            and not state.sinks.wants_allow()
        ):
            return
        host = address[0]
        port = address[1]
        ports = state.addrs.get(host)  # State.address's cache hit, inlined: this runs on every connect
        decision = ports.get(port) if ports is not None else None
        if decision is None:
            decision = state.address(host, port)
        if not decision.allowed and state.resolver is not None and state.resolver.owns(host, port):
            return  # the pinned resolver's own query to its nameserver (sockguard/resolver.py)
        if (
            breaker is not None
            and operation == "connect"
            and not (decision.allowed and (host, port) in breaker.healthy)  # before_connect's fast path, inlined
        ):
            decision = breaker.before_connect(host, port, decision, sock)
        if not decision.allowed or state.sinks.wants_allow():
            names = _resolved.get(host) if host.__class__ is str else None
            if names:
                report(state, decision, operation, sock, names[0], port, host, depth=_HOOK_DEPTH)
            elif isinstance(host, str) and (host in _numeric or parse_address(host) is not None):
                report(state, decision, operation, sock, None, port, host, depth=_HOOK_DEPTH)
            else:
                report(state, decision, operation, sock, host, port, None, depth=_HOOK_DEPTH)
    elif family == AF_UNIX:
        if not state.policy.allow_unix:
            report(state, Decision(False, UNIX), operation, sock, _text(address), None, None)
    elif family != AF_NETLINK:
        report(state, Decision(False, FAMILY, None, str(family)), operation, sock, repr(address), None, None)


# find_caller depth for report() from _check_socket: past report, _check_socket, _hook._audit (for sends
# find_caller walks past _on_sendto/_on_sendmsg itself).
_HOOK_DEPTH = 4

_on_connect = _check_socket


def _on_sendto(args: tuple[Any, ...]) -> None:
    _check_socket(args, "send")


def _on_sendmsg(args: tuple[Any, ...]) -> None:
    if args[1] is not None:
        _check_socket(args, "send")


def _on_lookup(host: Any, port: Any) -> None:
    state = _state or current()
    decision, name = state.lookup(host, port)
    if not decision.allowed:
        report(state, decision, "resolve", None, host, port, None)
    elif name is not None and state.resolver is not None:
        # Pinned mode: the wrappers never give C a name, so this lookup bypassed them (_socket called directly,
        # or a reference to the unpatched function) and would ask the system resolver.
        report(state, _PINNED_BYPASS, "resolve", None, host, port, None)


def _on_getaddrinfo(args: tuple[Any, ...]) -> None:
    if args[0] is not None:
        _on_lookup(args[0], args[1])


def _on_gethostbyname(args: tuple[Any, ...]) -> None:
    _on_lookup(args[0], None)


def _on_gethostbyaddr(args: tuple[Any, ...]) -> None:
    host = args[0]
    # A reverse lookup of an address is a PTR query; a *name* here is resolved
    # forwards first, so it is checked like any other lookup.
    if not (isinstance(host, str) and parse_address(host) is not None):
        _on_lookup(host, None)
    else:
        state = _state or current()
        if state.resolver is not None:  # the PTR query would go to the system resolver
            report(state, _PINNED_REVERSE, "resolve", None, host, None, None)


_PINNED_BYPASS = Decision(
    False,
    PINNED_RESOLVER,
    None,
    "a C-level lookup would ask the system resolver, but the resolver is pinned; only socket.getaddrinfo, "
    "gethostbyname and gethostbyname_ex answer names in pinned mode",
)
_PINNED_REVERSE = Decision(
    False, PINNED_RESOLVER, None, "a reverse (PTR) lookup would ask the system resolver, but the resolver is pinned"
)


_child_warnings: set[str] = set()


def _on_child(argv: Any, env: Any, executable: Any) -> None:
    """A guarded process starting a Python that will not be guarded (-I/-E/-S, env without our PYTHONPATH):
    say so once per command (docs/children.md). Never blocks and never breaks process creation."""
    state = _state or current()
    if state.mode == "off" or len(_child_warnings) >= 256:
        return
    try:
        from sockguard.runner import child_warning

        message = child_warning(argv, env, executable)
        if message is None or message in _child_warnings:
            return
        _child_warnings.add(message)
        event = make_event(
            operation="spawn",
            protocol="process",
            host=None,
            port=None,
            address=None,
            decision="warn",
            reason="unguarded-child",
            rule=None,
            mode=state.mode,
            caller=find_caller(3),
            detail=message,
            kind="unguarded-child",
        )
        _emit(state, event, message, 30)
    except Exception:
        pass


_HANDLERS: dict[str, _hook.Handler] = {
    "socket.connect": _on_connect,
    "socket.sendto": _on_sendto,
    "socket.sendmsg": _on_sendmsg,
    "socket.getaddrinfo": _on_getaddrinfo,
    "socket.gethostbyname": _on_gethostbyname,
    "socket.gethostbyaddr": _on_gethostbyaddr,
    "subprocess.Popen": lambda args: _on_child(args[1], args[3], args[0]),  # (executable, args, cwd, env)
    "os.exec": lambda args: _on_child(args[1], args[2], args[0]),  # (path, args, env)
    "os.posix_spawn": lambda args: _on_child(args[1], args[2], args[0]),  # (path, argv, env)
    "os.system": lambda args: _on_child(args[0], None, None),  # (command,)
}


# -- socket-module wrappers -------------------------------------------------------


def _resolve_results(state: State, name: str, port: Any, infos: list[Any], address_index: int) -> list[Any]:
    """Drop answers the policy refuses (internal addresses behind an allowed
    name, denied ranges), remember the rest as coming from ``name``."""
    number = _port_number(port)
    kept = []
    refused: tuple[Decision, str] | None = None
    for info in infos:
        ip = info[address_index][0] if address_index >= 0 else info
        decision = state.answer(name, ip, number)
        if decision.allowed or state.mode == "monitor":
            kept.append(info)
            _remember(ip, name, state)
        if not decision.allowed:
            refused = (decision, ip)
            report(state, decision, "resolve", None, name, number, ip, fail=False)
    if not kept and refused is not None:
        # Never an empty answer in silence: the caller learns why (each refused
        # answer is already in the log as a block of this lookup).
        report(state, refused[0], "resolve", None, name, number, refused[1], log=False)
    return kept


def _remember(ip: str, name: str, state: State) -> None:
    names = _resolved.get(ip)
    if names is not None and name in names:
        return
    _resolved[ip] = (name,) if names is None else ((*names, name))[-4:]
    state.addrs.pop(ip, None)  # a cached raw-IP block for it is stale now
    if len(_resolved) > _RESOLVED_MAX:
        _evict()


def _evict() -> None:
    if not _evict_lock.acquire(False):
        return
    try:
        for key in list(_resolved)[: _RESOLVED_MAX // 8]:
            _resolved.pop(key, None)
    except RuntimeError:  # another thread resized it mid-copy; try next time
        pass
    finally:
        _evict_lock.release()


_evict_lock = _thread.allocate_lock()


# -- resolvers outside the socket module (c-ares, dnspython, gevent: sockguard/integrations.py) --


def check_lookup(host: Any, port: Any = None, *, log_allowed: bool = True) -> str | None:
    """Decide a lookup that a resolver outside the socket module is about to send (c-ares, dnspython,
    gevent's resolvers): raises EgressBlocked before the query leaves. Returns the normalised name for
    :func:`admit_answers`, or None when there is nothing to admit (numeric host, guard off)."""
    state = _state or current()
    if state.mode == "off":
        return None
    decision, name = state.lookup(host, port)
    if not decision.allowed:
        report(state, decision, "resolve", None, host, port, None)
    elif log_allowed and name is not None and state.sinks.wants_allow():
        report(state, decision, "resolve", None, name, port, None)
    return name


def admit_answers(name: str, port: Any, addresses: Iterable[str]) -> list[str]:
    """The answers such a resolver gave for ``name`` that the policy admits, remembered as reached through
    ``name`` so that connects to them are allowed, as after ``socket.getaddrinfo``. Refused ones (internal,
    denied) are logged and dropped; raises EgressBlocked if none is left."""
    return _admit(name, port, list(addresses), -1)


def admit_addrinfo(name: str, port: Any, infos: Iterable[Any]) -> list[Any]:
    """:func:`admit_answers` for ``getaddrinfo``-shaped results: the admitted tuples, kept whole."""
    return _admit(name, port, list(infos), 4)


def _admit(name: str, port: Any, found: list[Any], address_index: int) -> list[Any]:
    state = _state or current()
    if state.mode == "off" or not found:
        return found
    return _resolve_results(state, name, port, found, address_index)


def check_connect(address: str, port: Any, protocol: str = "tcp") -> None:
    """Decide a connect that C code outside the socket module will make to ``address`` (libpq, libuv), before
    it gets the address: like the audit hook's decision, including addresses remembered from allowed names."""
    state = _state or current()
    if state.mode == "off":
        return
    decision = state.address(address, port)
    if not decision.allowed or state.sinks.wants_allow():
        names = _resolved.get(address)
        report(state, decision, "connect", protocol, names[0] if names else None, port, address)


#: Libraries that resolve or connect outside the socket module: sockguard/integrations.py patches each one
#: when it is imported (that module itself loads only then).
INTEGRATIONS = (
    "asyncio.base_events",
    "pycares",
    "aiohttp.resolver",
    "gevent.resolver",
    "gevent.resolver.thread",
    "gevent.resolver.blocking",
    "gevent.resolver.ares",
    "gevent._socket3",
    "uvloop",
    "psycopg.connection",
    "psycopg.connection_async",
    "dns.query",
    "dns.asyncquery",
    "dns.resolver",
    "dns.asyncresolver",
)
_integrations_registered = False


def _register_integrations() -> None:
    global _integrations_registered
    if not _integrations_registered:
        _integrations_registered = True
        for name in INTEGRATIONS:
            _hook.when_imported(name, _integrate)


def _integrate(module: Any) -> None:
    from sockguard import integrations

    integrations.patch(module)


def patch_socket_module(module: Any) -> None:
    """Wrap the socket module's resolver functions and socket methods.

    Idempotent; safe after ``importlib.reload(socket)`` (the post-import hook
    runs again and re-wraps the fresh functions)."""
    _register_integrations()
    if getattr(module.getaddrinfo, "__sockguard__", False):
        # Functions still ours; the class methods may have been put back by
        # someone holding the originals (pytest-socket does, per test).
        _patch_socket_class(module.socket, module.getaddrinfo)
        return
    original_getaddrinfo = module.getaddrinfo
    original_gethostbyname = module.gethostbyname
    original_gethostbyname_ex = module.gethostbyname_ex

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        state = _state or current()
        if host is None or state.mode == "off":
            return original_getaddrinfo(host, port, family, type, proto, flags)
        decision, name = state.lookup(host, port)
        if not decision.allowed:
            report(state, decision, "resolve", None, host, port, None)
        if name is None:  # numeric: resolve the canonical spelling, never DNS
            return original_getaddrinfo(_canonical(host), port, family, type, proto, flags)
        if state.sinks.wants_allow():
            report(state, decision, "resolve", None, name, port, None)
        if state.resolver is not None:  # pinned: only the configured nameservers answer (sockguard/resolver.py)
            infos = state.resolver.getaddrinfo(name, port, family, type, proto, flags)
        else:
            infos = original_getaddrinfo(host, port, family, type, proto, flags)
        return _resolve_results(state, name, port, infos, 4)

    def gethostbyname(host):
        state = _state or current()
        if state.mode == "off":
            return original_gethostbyname(host)
        decision, name = state.lookup(host, None)
        if not decision.allowed:
            report(state, decision, "resolve", None, host, None, None)
        if name is None:
            return original_gethostbyname(_canonical(host))
        ip = original_gethostbyname(host) if state.resolver is None else state.resolver.gethostbyname(name)
        return _resolve_results(state, name, None, [ip], -1)[0]

    def gethostbyname_ex(host):
        state = _state or current()
        if state.mode == "off":
            return original_gethostbyname_ex(host)
        decision, name = state.lookup(host, None)
        if not decision.allowed:
            report(state, decision, "resolve", None, host, None, None)
        if name is None:
            return original_gethostbyname_ex(_canonical(host))
        if state.resolver is None:
            hostname, aliases, ips = original_gethostbyname_ex(host)
        else:
            hostname, aliases, ips = state.resolver.gethostbyname_ex(name)
        return hostname, aliases, _resolve_results(state, name, None, list(ips), -1)

    for wrapper, original in (
        (getaddrinfo, original_getaddrinfo),
        (gethostbyname, original_gethostbyname),
        (gethostbyname_ex, original_gethostbyname_ex),
    ):
        install_wrapper(module, wrapper, original)
    _patch_socket_class(module.socket, getaddrinfo)


def install_wrapper(owner: Any, wrapper: Any, original: Any) -> None:
    """Put ``wrapper`` in place of ``original`` on a module or class, marked so a
    second patch is recognised and the original stays reachable."""
    wrapper.__sockguard__ = True
    wrapper.__wrapped__ = original
    wrapper.__doc__ = original.__doc__
    setattr(owner, wrapper.__name__, wrapper)


def _canonical(host: Any) -> Any:
    """``host`` with a numeric address in its canonical spelling (memoised for str hosts: every
    getaddrinfo of an IP literal, as urllib3 and httpx do per connection, asks)."""
    if host.__class__ is not str:
        return _canonical_uncached(host)
    found = _canonicals.get(host)
    if found is None:
        found = _canonical_uncached(host)
        if len(_canonicals) >= _NUMERIC_MAX:
            _canonicals.clear()
        _canonicals[host] = found
    return found


_canonicals: dict[str, Any] = {}


def _canonical_uncached(host: Any) -> Any:
    try:
        addr = parse_address(normalize_host(host))
    except (InvalidHost, TypeError):
        return host
    if addr is None or (isinstance(host, str) and "%" in host):
        return host
    return format_address(addr)


_SOL_SOCKET = _socket.SOL_SOCKET
_SO_ERROR = _socket.SO_ERROR


def _connect_outcome(sock: Any, address: Any, outcome: Any) -> None:
    state = _state
    if state is not None and state.breaker is not None:
        state.breaker.after_connect(sock, address, outcome)


def _patch_socket_class(cls: Any, guarded_getaddrinfo: Any) -> None:
    if getattr(cls.connect, "__sockguard__", False):
        return
    original_connect = cls.connect
    original_connect_ex = cls.connect_ex
    original_sendto = cls.sendto
    original_sendmsg = getattr(cls, "sendmsg", None)
    original_getsockopt = cls.getsockopt

    def prepare(sock: Any, address: Any) -> Any:
        """Numeric hosts to their canonical form, hostnames resolved through
        the guard, so C never resolves a name itself."""
        try:
            family = _family_of(sock)
        except Exception:  # a Python class around _socket.socket (gevent's socket)
            family = getattr(sock, "family", -1)
        if family != AF_INET and family != AF_INET6:
            return address
        host = address[0]
        if host == "":
            host = "0.0.0.0" if family == AF_INET else "::"
        elif host == "<broadcast>":
            host = "255.255.255.255"
        canonical = _canonical(host)
        if isinstance(canonical, str) and parse_address(canonical.partition("%")[0]) is not None:
            if canonical == address[0]:
                if len(_numeric) >= _NUMERIC_MAX:
                    _numeric.clear()
                _numeric.add(canonical)
                return address
            return (canonical, *tuple(address[1:]))
        infos = guarded_getaddrinfo(host, address[1], family)
        sockaddr = infos[0][4]
        if family == AF_INET6 and len(address) > 2:
            return (sockaddr[0], address[1], *tuple(address[2:]))
        return sockaddr

    # The breaker learns how each connect ended: failures (and in-progress non-blocking connects)
    # always, successes only for destinations it watches (one truth test on the hot path).
    def connect(self, address):
        if address.__class__ is tuple and address and address[0] not in _numeric:
            address = prepare(self, address)
        try:
            result = original_connect(self, address)
        except OSError as exc:
            _connect_outcome(self, address, exc)
            raise
        breaker = _state.breaker if _state is not None else None
        if breaker is not None and breaker.watched:
            breaker.after_connect(self, address, 0)
        return result

    def connect_ex(self, address):
        if address.__class__ is tuple and address and address[0] not in _numeric:
            address = prepare(self, address)
        try:
            err = original_connect_ex(self, address)
        except OSError as exc:
            _connect_outcome(self, address, exc)
            raise
        breaker = _state.breaker if _state is not None else None
        if breaker is not None and (err or breaker.watched):
            breaker.after_connect(self, address, err)
        return err

    def getsockopt(self, level, optname, *buflen):
        # asyncio/trio learn a non-blocking connect's outcome from SO_ERROR: so does the breaker.
        value = original_getsockopt(self, level, optname, *buflen)
        if optname == _SO_ERROR and level == _SOL_SOCKET and not buflen:
            breaker = _state.breaker if _state is not None else None
            if breaker is not None and breaker.pending:
                breaker.connect_result(self, value)
        return value

    def sendto(self, data, flags_or_address, *rest):
        address = rest[0] if rest else flags_or_address
        if address.__class__ is tuple and address and address[0] not in _numeric:
            address = prepare(self, address)
            if rest:
                return original_sendto(self, data, flags_or_address, address)
            return original_sendto(self, data, address)
        return original_sendto(self, data, flags_or_address, *rest)

    def sendmsg(self, buffers, *args):
        if len(args) >= 3:
            address = args[2]
            if address.__class__ is tuple and address and address[0] not in _numeric:
                args = (args[0], args[1], prepare(self, address), *args[3:])
        return original_sendmsg(self, buffers, *args)

    for wrapper, original in (
        (connect, original_connect),
        (connect_ex, original_connect_ex),
        (sendto, original_sendto),
        (sendmsg, original_sendmsg),
        (getsockopt, original_getsockopt),
    ):
        # Skip methods still wrapped: pytest-socket puts back only ``connect``, and a
        # second wrapper would count every breaker failure twice.
        if original is None or getattr(original, "__sockguard__", False):
            continue
        install_wrapper(cls, wrapper, original)
