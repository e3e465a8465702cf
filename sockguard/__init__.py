"""sockguard: a process-wide egress guard under every Python network library.

The public API is this module's ``__all__``; ``sockguard.lowlevel`` is the door for code that resolves or
connects outside Python's socket module, and ``sockguard.testing`` holds resets for test suites.

Import-light on purpose (the activation imports this package in every guarded process, before its program
runs): every name below loads its module on first use, the exceptions too (``sockguard.errors`` is not needed
to start); the ``TYPE_CHECKING`` block shows them to static tools.

PYTEST_DONT_REWRITE: sockguard is also a pytest plugin (entry point), so pytest marks this package for assertion
rewriting; under the activation (sitecustomize, ``sockguard run``) it was imported before pytest started, and
pytest would warn "Module already imported so cannot be rewritten", an error under ``filterwarnings = error``
(issue 11). It is production code: nothing here is to be rewritten.
"""

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from sockguard.alerts import on_alert
    from sockguard.api import check, check_url, guarded, install, reopen_log, status, uninstall
    from sockguard.errors import BreakerOpen, ConfigError, EgressBlocked, LookupBlocked
    from sockguard.events import correlation_id
    from sockguard.policy import Decision, Policy

__all__ = [
    "BreakerOpen",
    "ConfigError",
    "Decision",
    "EgressBlocked",
    "LookupBlocked",
    "Policy",
    "check",
    "check_url",
    "correlation_id",
    "guarded",
    "install",
    "on_alert",
    "reopen_log",
    "status",
    "uninstall",
]
__version__ = "0.1.0"

_LAZY = {
    "check": "sockguard.api",
    "check_url": "sockguard.api",
    "install": "sockguard.api",
    "uninstall": "sockguard.api",
    "guarded": "sockguard.api",
    "status": "sockguard.api",
    "reopen_log": "sockguard.api",
    "Policy": "sockguard.policy",
    "Decision": "sockguard.policy",
    "correlation_id": "sockguard.events",
    "on_alert": "sockguard.alerts",
    "ConfigError": "sockguard.errors",
    "EgressBlocked": "sockguard.errors",
    "LookupBlocked": "sockguard.errors",  # a socket.gaierror: built on first use (sockguard/errors.py)
    "BreakerOpen": "sockguard.errors",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sockguard' has no attribute {name!r}")
    __import__(module)  # (importlib itself would be one more module in every process that asks)
    value = globals()[name] = getattr(sys.modules[module], name)  # a plain attribute from now on
    return value
