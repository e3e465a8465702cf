"""Admitting the answers of an allowed lookup: each answer is decided as an address reached through the name.

Refused answers (internal addresses behind an allowed name, denied ranges) are logged and dropped; the rest
are remembered in the address-to-name map, so a connect to them is a connect for that name. Never an empty
answer in silence: if nothing is left, the lookup is refused with the reason. One implementation for the
socket-module wrappers and every resolver outside it (sockguard.lowlevel).
"""

from __future__ import annotations

from sockguard import addrmap
from sockguard.canonical import port_number
from sockguard.refusal import record_refused_answer, refuse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from sockguard.active import State
    from sockguard.policy import Decision


def admit(state: State, name: str, port: Any, infos: list[Any], address_index: int) -> list[Any]:
    """The admitted subset of ``infos``: addresses (``address_index`` -1) or getaddrinfo tuples (4)."""
    number = port_number(port)
    kept = []
    refused: tuple[Decision, str] | None = None
    logged: set[str] | None = None
    for info in infos:
        ip = info[address_index][0] if address_index >= 0 else info
        decision = state.answer(name, ip, number)
        if decision.allowed or state.mode == "monitor":
            kept.append(info)
            if addrmap.remember(ip, name):
                state.forget_address(ip)  # a cached raw-IP block for it is stale now
        if not decision.allowed:
            refused = (decision, ip)
            if logged is None:
                logged = set()
            if ip not in logged:  # one line per address, not per socket type getaddrinfo listed it for
                logged.add(ip)
                record_refused_answer(state, decision, name, number, ip, depth=2)
    if not kept and refused is not None:
        # Each refused answer is already in the log as a block of this lookup; the caller learns why.
        error = refuse(state, refused[0], "resolve", None, name, number, refused[1], depth=2, log=False)
        if error is not None:
            raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)
    return kept
