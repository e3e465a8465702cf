"""``import pytest_socket`` when pytest-socket is not installed: its public names, served by sockguard.

Registered as ``sys.modules["pytest_socket"]`` for the length of a pytest run in which sockguard handles
pytest-socket's options (sockguard/pytest_plugin/__init__.py); when pytest-socket itself is installed, it owns
the name and this module is never registered. Written from pytest-socket's documentation and observed behaviour:

* :class:`SocketBlockedError` and :class:`SocketConnectBlockedError` take pytest-socket's constructor arguments,
  have its message texts as their first line and emit its ``UserWarning`` when made. They are
  :class:`~sockguard.errors.EgressBlocked` (an ``OSError``): ``pytest.raises(SocketBlockedError)`` and
  ``pytest.raises(OSError)`` both catch them, and they pickle as themselves. A blocked *lookup* raises a
  subclass that is also ``socket.gaierror``, like every sockguard lookup refusal.
* :func:`disable_socket`, :func:`enable_socket` and :func:`socket_allow_hosts` change the policy of the test
  in progress (or, called before any test, of the next one), as pytest-socket's do until the test's teardown.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from sockguard.errors import EgressBlocked, LookupBlocked

__all__ = [
    "SocketBlockedError",
    "SocketConnectBlockedError",
    "disable_socket",
    "enable_socket",
    "socket_allow_hosts",
]

CREATE = "A test tried to use socket.socket."


class SocketBlockedError(EgressBlocked):
    """A socket was created (or a lookup made) while sockets are disabled."""

    def __init__(self, msg: str = CREATE, *_args: Any, **_kwargs: Any) -> None:
        warnings.warn(msg, stacklevel=2)
        super().__init__(msg)


def connect_text(allowed: list[str] | tuple[str, ...], host: str | None) -> str:
    return f'A test tried to use socket.socket.connect() with host "{host}" (allowed: "{",".join(allowed)}").'


class SocketConnectBlockedError(EgressBlocked):
    """A connection to a host outside the allowed hosts."""

    def __init__(self, allowed: list[str], host: str | None, *_args: Any, **_kwargs: Any) -> None:
        self._allowed = allowed
        self._host = host
        msg = connect_text(allowed, host)
        warnings.warn(msg, stacklevel=2)
        super().__init__(msg, host=host)


class LookupSocketBlockedError(SocketBlockedError, LookupBlocked):  # type: ignore[misc]
    """A lookup while sockets are disabled: also a ``socket.gaierror``. Named ``SocketBlockedError`` in
    tracebacks, as pytest-socket's; pickled through :func:`_rebuild_lookup` (its name is not its attribute)."""

    def __reduce__(self) -> Any:
        return (_rebuild_lookup, ("blocked", self.strerror, self.__dict__.copy()))


class LookupSocketConnectBlockedError(SocketConnectBlockedError, LookupBlocked):  # type: ignore[misc]
    """A lookup of a name outside the allowed hosts (refused before DNS): also a ``socket.gaierror``."""

    def __reduce__(self) -> Any:
        return (_rebuild_lookup, ("connect", self.strerror, self.__dict__.copy()))


LookupSocketBlockedError.__name__ = LookupSocketBlockedError.__qualname__ = "SocketBlockedError"
LookupSocketConnectBlockedError.__name__ = LookupSocketConnectBlockedError.__qualname__ = "SocketConnectBlockedError"


def _rebuild_lookup(kind: str, message: str, attrs: dict[str, Any]) -> EgressBlocked:
    cls = LookupSocketBlockedError if kind == "blocked" else LookupSocketConnectBlockedError
    exc = cls.__new__(cls)
    EgressBlocked.__init__(exc, message)
    exc.__dict__.update(attrs)
    return exc


def from_guard(cls: type[EgressBlocked], first: str, detail: str, attrs: dict[str, Any]) -> EgressBlocked:
    """``cls`` with pytest-socket's ``first`` line, then sockguard's ``detail``; warns like pytest-socket (the
    same two parts: its first line is pytest-socket's, so its ``filterwarnings`` patterns still match)."""
    exc = cls.__new__(cls)
    EgressBlocked.__init__(exc, f"{first}\n{detail}")
    exc.__dict__.update(attrs)
    warnings.warn(f"{first}\n{detail}", stacklevel=3)
    return exc


# --- the functions: handled by the innermost pytest run that serves this module ----------------------------

#: (disable, enable, allow_hosts) of each pytest run serving this module, innermost last.
HANDLERS: list[tuple[Callable[[bool], None], Callable[[], None], Callable[[object, bool], None]]] = []


def _handler() -> tuple[Callable[[bool], None], Callable[[], None], Callable[[object, bool], None]]:
    if not HANDLERS:
        raise RuntimeError("sockguard serves pytest_socket only inside a pytest run")
    return HANDLERS[-1]


def disable_socket(allow_unix_socket: bool = False) -> None:
    """Refuse socket creation (AF_UNIX too unless ``allow_unix_socket``) and all traffic, for this test."""
    _handler()[0](bool(allow_unix_socket))


def enable_socket() -> None:
    """Allow socket creation again (a host list set by :func:`socket_allow_hosts` stays)."""
    _handler()[1]()


def socket_allow_hosts(
    allowed: str | list[str] | None = None,
    allow_unix_socket: bool = False,
    resolution_cache: dict[str, set[str]] | None = None,
) -> None:
    """Allow connections only to ``allowed`` (a list, or a comma-separated string; anything else: no change)."""
    _handler()[2](allowed, bool(allow_unix_socket))
