"""sockguard: a process-wide egress guard under every Python network library.

Import-light on purpose: the public API below loads its modules on first use.
"""

from __future__ import annotations

from sockguard.errors import ConfigError, EgressBlocked

__all__ = [
    "ConfigError",
    "Decision",
    "EgressBlocked",
    "Policy",
    "check",
    "check_url",
    "correlation_id",
    "guarded",
    "install",
    "on_alert",
    "status",
    "uninstall",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("check", "check_url", "install", "uninstall", "guarded", "status"):
        from sockguard import api

        return getattr(api, name)
    if name in ("Policy", "Decision"):
        from sockguard import policy as _policy

        return getattr(_policy, name)
    if name == "correlation_id":
        from sockguard.events import correlation_id

        return correlation_id
    if name == "on_alert":
        from sockguard.breaker import on_alert

        return on_alert
    raise AttributeError(f"module 'sockguard' has no attribute {name!r}")
