"""Refusing: the block message, the rule that would allow the destination, and the exception.

Every enforcement point reads ``raise refuse(...)`` or, where monitor mode must let the call go on (None)::

    error = refuse(...)
    if error is not None:
        raise (error, error := None)[0]

Recording the decision and refusing are one step here, and the raise stays visible where the call is stopped. The last
line lets go of the local before the exception leaves (the tuple holds the exception, the local becomes None, then the
tuple's first item is raised): its traceback holds the raising frame, so a frame that still held the exception would
make a cycle, and the cycle would keep that frame, every other frame of the traceback (the caller's too) and their
locals (sockets, buffers) alive until a garbage collection, instead of freeing them once the caller has handled the
refusal (tests/test_refusal_frames.py). One line, no helper: a helper that raised would add its own frame to every
refusal's traceback. Caught exceptions kept in a list, to raise or chain later, are let go in a ``finally`` for the
same reason. Messages are cached per State, so a retry loop against a blocked destination pays for the suggestion and
the formatting once.
"""

from __future__ import annotations

from sockguard import errors
from sockguard.caller import find_caller
from sockguard.canonical import port_number
from sockguard.errors import BreakerOpen, EgressBlocked, InvalidHost, breaker_open_class, build_error
from sockguard.events import emit, emitting, host_text, make_event, protocol
from sockguard.policy import (
    BREAKER_OPEN,
    CONFIG_ERROR,
    CONFIG_UNAVAILABLE,
    DENIED,
    FAMILY,
    INTERNAL,
    INVALID,
    METADATA,
    PINNED_RESOLVER,
    RATE_LIMITED,
    RAW_SOCKET,
    REVERSE_LOOKUP,
    SCAN_PATTERN,
    SEARCH_LIST,
    SOURCE_ROUTE,
    UNIX,
    UNVERIFIED,
)
from sockguard.rules import UNKNOWN_PORT, format_host_port, normalize_host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from sockguard.active import State
    from sockguard.policy import Decision

#: Reasons no allow rule can fix (a deny rule, a broken configuration, the breaker, ...).
_NO_SUGGESTION = frozenset((DENIED, INVALID, FAMILY, CONFIG_ERROR, CONFIG_UNAVAILABLE, UNIX, BREAKER_OPEN,
                            SCAN_PATTERN, RATE_LIMITED, PINNED_RESOLVER, UNVERIFIED, RAW_SOCKET, SOURCE_ROUTE,
                            SEARCH_LIST, REVERSE_LOOKUP))  # fmt: skip
_VERBS = {"connect": "connection", "send": "datagram", "resolve": "DNS lookup", "socket": "a raw socket",
          # request-level decisions (sockguard/http/checks.py)
          "host-header": "HTTP request (Host header)", "proxy-request": "HTTP request through a proxy",
          "tunnel": "proxy tunnel (CONNECT)", "sni": "TLS handshake (SNI)"}  # fmt: skip
_NO_DESTINATION = frozenset(("socket", "setsockopt"))
_MESSAGES_MAX = 1024
#: Where the runtime takes an allow rule, as the block message says it (a host such as the pytest plugin names its own).
ALLOW_WHERE = "SOCKGUARD_ALLOW, --allow, or allow in sockguard.toml"


def suggestion(state: State, decision: Decision, host: Any, port: Any, address: str | None) -> str | None:
    """The narrowest rule that would allow this destination under ``state``'s policy, or None."""
    reason = decision.reason
    if reason in _NO_SUGGESTION:
        return None
    number = port_number(port)
    if reason == INTERNAL:
        return state.policy.suggest(None, number, address)
    name = host_text(host)
    try:
        name = normalize_host(name)  # type: ignore[arg-type]
    except (InvalidHost, TypeError):
        pass
    if reason == METADATA:
        return state.policy.suggest(name, None)
    return state.policy.suggest(name, number, address)


def _message_parts(
    operation: str, decision: Decision, host: Any, port: Any, address: str | None, rule_hint: str | None, mode: str
) -> tuple[str, str]:
    """The block message before and after the caller."""
    verb = _VERBS.get(operation, operation)
    head = "would block" if mode == "monitor" else "blocked"
    shown = None if port == UNKNOWN_PORT else port
    dest = format_host_port(host, shown) if host is not None else format_host_port(address, shown)
    if port == UNKNOWN_PORT:
        dest += " (port unknown: C read it through __index__ itself)"
    via = f" ({address})" if address and host is not None and address != host else ""
    if operation in _NO_DESTINATION:  # a socket that was never created, an option that was never set
        text = f"sockguard {head} {verb} ({dest}): {decision.explain()}"
    else:
        text = f"sockguard {head} {verb} to {dest}{via}: {decision.explain()}"
    if decision.rule and decision.reason == DENIED:
        text += f" (deny rule {decision.rule!r})"
    text += "; called from "
    after = "."
    if decision.reason == DENIED:
        after += " To allow it, remove or narrow that deny rule."
    elif decision.reason == CONFIG_ERROR:
        after += " Fix the configuration to restore traffic."
    elif rule_hint:
        after += f" To allow it, add the rule {rule_hint!r} ({ALLOW_WHERE})."
    return text, after


def _cached_parts(
    state: State, decision: Decision, operation: str, host: Any, port: Any, address: str | None
) -> tuple[str | None, str, str]:
    key: Any = (operation, decision, host, port, address)
    try:
        found = state.blocks.get(key)
    except TypeError:  # an unhashable host (bytearray): no cache
        key = found = None
    if found is None:
        hint = suggestion(state, decision, host, port, address)
        found = (hint, *_message_parts(operation, decision, host, port, address, hint, state.mode))
        if key is not None:
            if len(state.blocks) >= _MESSAGES_MAX:
                state.blocks.clear()
            state.blocks[key] = found
    return found


def refuse(
    state: State,
    decision: Decision,
    operation: str,
    sock: Any,
    host: Any,
    port: Any,
    address: str | None,
    *,
    depth: int = 1,
    log: bool = True,
    replaces: int | None = None,
) -> EgressBlocked | None:
    """Record a refused decision and return the exception to raise (None in monitor mode, where the call goes
    on and the event says would-block). ``depth``: frames of sockguard above the caller's search start;
    ``log=False`` when the event is already in the log (the last refused answer of a lookup); ``replaces``:
    the errno of the failure a ``breaker-open`` refusal stands in for (the exception keeps its class)."""
    caller = find_caller(depth + 1)
    hint, before, after = _cached_parts(state, decision, operation, host, port, address)
    message = f"{before}{caller or 'unknown code'}{after}"
    monitor = state.mode == "monitor"
    if log and not emitting() and state.sinks.wants(30):
        event = make_event(
            operation=operation,
            protocol=protocol(sock),
            host=host_text(host),
            port=port_number(port),
            address=address,
            decision="would-block" if monitor else "block",
            reason=decision.reason,
            rule=decision.rule,
            mode=state.mode,
            caller=caller,
            detail=decision.detail,
        )
        emit(state.sinks, event, message, 30)
    if operation == "resolve" and state.breaker is not None:
        state.breaker.lookup_blocked(host, port, decision)  # a retry loop on a blocked name alerts too
    if monitor:
        return None
    # What ``cls(message, code=..., host=..., ...)`` builds (errors.EgressBlocked.__init__: OSError's errno and
    # message, then the attributes in this order), at a quarter of the cost of the keyword call.
    error = build_error(
        _error_class(operation, decision, replaces),
        replaces if decision.reason == BREAKER_OPEN else None,
        message,
        {
            "host": host_text(host),
            "port": port_number(port),
            "address": address,
            "reason": decision.reason,
            "rule": decision.rule,
            "operation": operation,
            "caller": caller,
            "suggestion": hint,
        },
    )
    return error if state.translate is None else state.translate(error, sock)


def _error_class(operation: str, decision: Decision, replaces: int | None) -> type[EgressBlocked]:
    """The class a client expects (sockguard/errors.py): a lookup error for a lookup, the replaced failure's
    class for a connect the breaker fails fast, else ``EgressBlocked`` (EACCES)."""
    if operation == "resolve":
        return errors.LookupBlocked
    if decision.reason == BREAKER_OPEN:
        return BreakerOpen if replaces is None else breaker_open_class(replaces)
    return EgressBlocked


def record_refused_answer(
    state: State, decision: Decision, name: str, port: Any, address: str, *, depth: int = 1
) -> None:
    """Log one answer dropped from an allowed lookup (internal or denied address); nothing is raised: the other
    answers may still be used."""
    caller = find_caller(depth + 1)
    if emitting() or not state.sinks.wants(30):
        return
    _hint, before, after = _cached_parts(state, decision, "resolve", name, port, address)
    event = make_event(
        operation="resolve",
        protocol="dns",
        host=name,
        port=port_number(port),
        address=address,
        decision="would-block" if state.mode == "monitor" else "block",
        reason=decision.reason,
        rule=decision.rule,
        mode=state.mode,
        caller=caller,
        detail=decision.detail,
    )
    emit(state.sinks, event, f"{before}{caller or 'unknown code'}{after}", 30)
