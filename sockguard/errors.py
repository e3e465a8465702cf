"""The whole error hierarchy, in one place.

Import-light on purpose: this module loads in every guarded process (sitecustomize), so it imports only
``errno``. Every other module raises these; none defines its own exception classes.
"""

from __future__ import annotations

import errno


class EgressBlocked(OSError):
    """Raised instead of a lookup, connect or send that the policy blocks.

    An ``OSError`` (errno ``EACCES``) so every client's normal connection-error
    handling applies: urllib3 wraps it in ``NewConnectionError``, httpx in
    ``ConnectError``, aiohttp in ``ClientConnectorError``.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        port: int | None = None,
        address: str | None = None,
        reason: str = "",
        rule: str | None = None,
        operation: str = "",
        caller: str | None = None,
        suggestion: str | None = None,
    ) -> None:
        super().__init__(errno.EACCES, message)
        self.host = host
        self.port = port
        self.address = address
        self.reason = reason
        self.rule = rule
        self.operation = operation
        self.caller = caller
        self.suggestion = suggestion

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self):  # keep attributes across pickling (multiprocessing, xdist)
        return (_rebuild, (self.strerror, self.__dict__.copy()))


def _rebuild(message: str, attrs: dict) -> EgressBlocked:
    exc = EgressBlocked.__new__(EgressBlocked)
    OSError.__init__(exc, errno.EACCES, message)
    exc.__dict__.update(attrs)
    return exc


class ConfigError(ValueError):
    """A configuration problem; the message names the source, key and value."""

    def __init__(self, message: str, *, source: str = "", key: str = "", value: object = None) -> None:
        super().__init__(message)
        self.source = source
        self.key = key
        self.value = value


class RuleError(ValueError):
    """A rule that cannot be parsed; the message names the rule and the problem."""


class InvalidHost(ValueError):
    """A host that can never be a DNS name or an address (NUL, spaces, failed IDNA, ...)."""


class ResolverFailure(Exception):
    """No pinned nameserver gave a usable answer (time-outs, SERVFAIL, refused...)."""
