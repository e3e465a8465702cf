"""The policy of a stretch of the run (:class:`Rules`) and the scopes of the stack that puts one in force.

Rules are hashable: the plugin compiles one guard State per Rules and reuses it (sockguard/pytest_plugin/stack.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import pytest

# --- policies -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rules:
    """One policy for a stretch of the run. Hashable: compiled guard states are cached per Rules."""

    mode: str = "enforce"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    allow_loopback: bool = True
    allow_unix: bool = True
    # pytest-socket's semantics (sockguard/pytest_plugin/compat.py): socket creation refused (AF_UNIX too unless
    # allow_unix) during a test's set-up and call, and the allow list as pytest-socket shows it in its errors
    # (None: no pytest-socket host list in force).
    block_create: bool = False
    hosts_shown: tuple[str, ...] | None = None

    def refined(
        self,
        *,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        mode: str | None = None,
        allow_loopback: bool | None = None,
        allow_unix: bool | None = None,
    ) -> Rules:
        """These rules plus more allow/deny rules, with the scalars that are given replaced."""
        return dataclasses.replace(
            self,
            mode=self.mode if mode is None else mode,
            allow=self.allow + tuple(r for r in dict.fromkeys(allow) if r not in self.allow),
            deny=self.deny + tuple(r for r in dict.fromkeys(deny) if r not in self.deny),
            allow_loopback=self.allow_loopback if allow_loopback is None else allow_loopback,
            allow_unix=self.allow_unix if allow_unix is None else allow_unix,
        )

    def settings(self) -> Any:
        from sockguard.config import Settings

        return Settings(
            mode=self.mode,
            allow=list(self.allow),
            deny=list(self.deny),
            allow_loopback=self.allow_loopback,
            allow_unix=self.allow_unix,
            source="pytest plugin",
        )

    def describe(self) -> str:
        if self.mode == "off":
            return "off"
        return (
            f"{self.mode}; allow: {', '.join(self.allow) or '-'}; deny: {', '.join(self.deny) or '-'}; "
            f"loopback {'allowed' if self.allow_loopback else 'blocked'}; "
            f"AF_UNIX {'allowed' if self.allow_unix else 'blocked'}"
            + ("; socket creation blocked" if self.block_create else "")
        )


DEFAULT = Rules()
OFF = Rules(mode="off")

# --- the policy stack -----------------------------------------------------------------------------------


class _Scope:
    """One stretch of the run with its own policy; ``changes`` come from the ``sockguard`` fixture."""

    __slots__ = ("changes", "nodeid", "rules", "static", "swallowed", "when", "where")

    def __init__(self, rules: Rules, nodeid: str, when: str, where: str) -> None:
        self.rules = rules
        self.nodeid = nodeid
        self.when = when
        self.where = where
        self.changes: list[Callable[[Rules], Rules]] = []
        self.static: tuple[str, ...] = ()  # fixture names the test requested up front
        self.swallowed = "fail"

    def effective(self) -> Rules:
        rules = self.rules
        for change in self.changes:
            rules = change(rules)
        return rules


#: The scope of a test's own phases (None: sockguard leaves the test alone), made at its set-up.
_ITEM_SCOPE = pytest.StashKey["_Scope | None"]()
