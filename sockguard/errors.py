"""The whole error hierarchy, in one place.

Import-light on purpose: this module loads in every guarded process (sitecustomize), so it imports only
``errno``; :class:`LookupBlocked` derives from ``socket.gaierror`` and is built on first use (module
``__getattr__``), when ``_socket`` is loaded anyway. Every other module raises these; none defines its own
exception classes.

A refusal keeps the class of the error the client would meet without the guard, so existing error handling
and retry code keep working unchanged:

* a blocked **connect or send** is :class:`EgressBlocked` itself: an ``OSError`` with errno ``EACCES``;
* a blocked **lookup** is :class:`LookupBlocked`: also a ``socket.gaierror`` (errno ``EAI_FAIL``), so every
  client classifies it as a name-resolution failure (urllib3's ``NameResolutionError``, aiohttp's
  ``ClientConnectorDNSError``, ``except socket.gaierror`` fall-backs);
* a connect the **breaker** fails fast is a :class:`BreakerOpen` of the class the destination last failed with:
  ``ConnectionRefusedError`` after refusals (:class:`BreakerOpenRefused`), ``TimeoutError`` after time-outs,
  ... with that errno (``EACCES`` when it was the policy that refused the destination).
"""

from __future__ import annotations

import errno
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class EgressBlocked(OSError):
    """Raised instead of a lookup, connect or send that the policy blocks.

    An ``OSError`` (errno ``EACCES``) so every client's normal connection-error
    handling applies: urllib3 wraps it in ``NewConnectionError``, httpx in
    ``ConnectError``, aiohttp in ``ClientConnectorError``. Subclasses keep the
    class a client expects for lookups (:class:`LookupBlocked`) and for
    connects the breaker fails fast (:class:`BreakerOpen`).
    """

    #: errno when none is given: the one a refused connect or send carries.
    default_errno: int = errno.EACCES

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
        code: int | None = None,
    ) -> None:
        super().__init__(self.default_errno if code is None else code, message)
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

    def __reduce__(self) -> Any:  # keep class, errno and attributes across pickling (multiprocessing, xdist)
        return (_rebuild, (self.strerror, self.__dict__.copy(), type(self), self.errno))


def _rebuild(message: str, attrs: dict, cls: type[EgressBlocked] = EgressBlocked, code: int | None = None) -> Any:
    if not (isinstance(cls, type) and issubclass(cls, EgressBlocked)):  # a pickle names only our classes
        cls = EgressBlocked
    return build_error(cls, code, message, attrs.copy())


_new_error = OSError.__new__
_init_error = OSError.__init__


def build_error(cls: type[EgressBlocked], code: int | None, message: str, attrs: dict[str, Any]) -> Any:
    """The exception ``cls(message, code=code, **attrs)`` gives (``EgressBlocked.__init__``: ``OSError``'s errno and
    message, then the attributes in ``attrs``' order, which must be ``__init__``'s), without the keyword call:
    sockguard.refusal builds one per refused attempt. ``attrs`` becomes the exception's ``__dict__``."""
    exc = _new_error(cls)
    _init_error(exc, cls.default_errno if code is None else code, message)
    exc.__dict__ = attrs
    return exc


class BreakerOpen(EgressBlocked):
    """A connect the retry-storm breaker failed fast (reason ``breaker-open``): nothing was sent.

    Its errno is the one the destination's last attempt failed with (``EACCES`` when the policy blocked it),
    so ``exc.errno == errno.ECONNREFUSED`` checks keep working; the subclasses below add the matching
    built-in class. :func:`breaker_open_class` picks one.
    """


class BreakerOpenRefused(BreakerOpen, ConnectionRefusedError):
    """Failed fast after the destination refused connections: a ``ConnectionRefusedError``."""

    default_errno = errno.ECONNREFUSED


class BreakerOpenTimeout(BreakerOpen, TimeoutError):
    """Failed fast after connects to the destination timed out: a ``TimeoutError``."""

    default_errno = errno.ETIMEDOUT


class BreakerOpenReset(BreakerOpen, ConnectionResetError):
    """Failed fast after connects were reset: a ``ConnectionResetError``."""

    default_errno = errno.ECONNRESET


class BreakerOpenAborted(BreakerOpen, ConnectionAbortedError):
    """Failed fast after connects were aborted: a ``ConnectionAbortedError``."""

    default_errno = errno.ECONNABORTED


_BREAKER_CLASSES: dict[int, type[BreakerOpen]] = {
    errno.ECONNREFUSED: BreakerOpenRefused,
    errno.ETIMEDOUT: BreakerOpenTimeout,
    errno.ECONNRESET: BreakerOpenReset,
    errno.ECONNABORTED: BreakerOpenAborted,
}


def breaker_open_class(code: int) -> type[BreakerOpen]:
    """The class for a fast failure that replaces a connect failing with ``code``: the built-in class
    ``OSError(code, ...)`` would have (unreachable hosts and networks have none: plain ``BreakerOpen``)."""
    return _BREAKER_CLASSES.get(code, BreakerOpen)


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


#: The ``gaierror`` errno of a blocked lookup: ``EAI_FAIL`` ("Non-recoverable failure in name resolution").
#: Not ``EAI_NONAME`` ("Name or service not known"): that claims the name does not exist, which is false, and
#: code that treats a missing name specially (negative caches, "try the next host" fall-backs, typo
#: diagnostics) would be misled. Not ``EAI_AGAIN`` ("Temporary failure in name resolution"): retry code
#: retries it, and a policy block is not temporary. ``EAI_FAIL`` says what happened: the name was not
#: resolved, and asking again will not change that. (-4 on Linux, glibc and musl alike.)
LOOKUP_ERRNO = -4

if TYPE_CHECKING:
    from _socket import gaierror

    class LookupBlocked(EgressBlocked, gaierror):
        """See :func:`_lookup_blocked_class`."""


def _lookup_blocked_class() -> type[EgressBlocked]:
    import _socket

    global LOOKUP_ERRNO
    LOOKUP_ERRNO = getattr(_socket, "EAI_FAIL", LOOKUP_ERRNO)

    class LookupBlocked(EgressBlocked, _socket.gaierror):
        """A blocked lookup: both :class:`EgressBlocked` and ``socket.gaierror`` (errno ``EAI_FAIL``, see
        :data:`LOOKUP_ERRNO`), as a failed ``getaddrinfo`` is. ``args`` is ``(errno, message)`` like every
        gaierror's; ``str()`` is the message."""

        default_errno = LOOKUP_ERRNO

    LookupBlocked.__qualname__ = "LookupBlocked"  # pickled by reference: sockguard.errors.LookupBlocked
    return LookupBlocked


# The package names these lazily (sockguard/__init__.py: nothing loads this module at start-up). Once it is loaded,
# they are plain attributes of the package: ``except sockguard.EgressBlocked:`` is one attribute read, never a call
# (a Python call is where a signal handler's exception can land).
_package = sys.modules.get("sockguard")
if _package is not None:
    _package.EgressBlocked = EgressBlocked  # type: ignore[attr-defined]
    _package.ConfigError = ConfigError  # type: ignore[attr-defined]
    _package.BreakerOpen = BreakerOpen  # type: ignore[attr-defined]


def __getattr__(name: str) -> Any:
    """``LookupBlocked`` is built on first use: ``socket.gaierror`` lives in ``_socket``, which a guarded
    process that never touches the network must not load at start-up."""
    if name == "LookupBlocked":
        cls = globals()["LookupBlocked"] = _lookup_blocked_class()
        return cls
    raise AttributeError(f"module 'sockguard.errors' has no attribute {name!r}")
