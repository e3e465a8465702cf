"""``ssl``: the SNI name of every client-side TLS connection is decided before the ClientHello.

ssl raises no audit event, so ``SSLContext.wrap_socket`` (blocking sockets: urllib3, http.client, httpcore's
sync backend, smtplib, ...) and ``SSLContext.wrap_bio`` (asyncio's and trio's TLS, so aiohttp and httpx async)
are wrapped. Both are where ``server_hostname`` is handed to OpenSSL; a socket's handshake starts in
``wrap_socket`` itself when it is connected, and a memory BIO's only after it returns.
"""

from __future__ import annotations

from sockguard.http.checks import check_sni
from sockguard.http.patching import patch_method

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def patch(module: Any) -> None:
    patch_method(module.SSLContext, "wrap_socket", _wrap_socket)
    patch_method(module.SSLContext, "wrap_bio", _wrap_bio)


def _wrap_socket(original: Any) -> Any:
    # wrap_socket(sock, server_side=False, do_handshake_on_connect=True, suppress_ragged_eofs=True,
    #             server_hostname=None, session=None)
    def wrap_socket(self: Any, sock: Any, *args: Any, **kwargs: Any) -> Any:
        server_side = kwargs.get("server_side", args[0] if args else False)
        server_hostname = kwargs.get("server_hostname", args[3] if len(args) > 3 else None)
        if server_hostname is not None and not server_side:
            args, kwargs = _handing_on(check_sni(server_hostname, sock), 3, args, kwargs)
        return original(self, sock, *args, **kwargs)

    return wrap_socket


def _wrap_bio(original: Any) -> Any:
    # wrap_bio(incoming, outgoing, server_side=False, server_hostname=None, session=None)
    def wrap_bio(self: Any, incoming: Any, outgoing: Any, *args: Any, **kwargs: Any) -> Any:
        server_side = kwargs.get("server_side", args[0] if args else False)
        server_hostname = kwargs.get("server_hostname", args[1] if len(args) > 1 else None)
        if server_hostname is not None and not server_side:
            args, kwargs = _handing_on(check_sni(server_hostname, None), 1, args, kwargs)
        return original(self, incoming, outgoing, *args, **kwargs)

    return wrap_bio


def _handing_on(decided: Any, position: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``(args, kwargs)`` with ``server_hostname`` (keyword, or positional at ``position``) replaced by the plain
    value that was decided, so ssl encodes exactly that (a subclass's ``encode``/``decode`` never runs)."""
    if "server_hostname" in kwargs:
        kwargs = {**kwargs, "server_hostname": decided}
    else:
        args = (*args[:position], decided, *args[position + 1 :])
    return args, kwargs
