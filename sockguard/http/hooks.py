"""Which patch each HTTP library gets: the post-import hooks of ``sockguard._hook.HTTP_INTEGRATIONS`` call
:func:`patch` (through ``sockguard.integrations``, which reports a patch that no longer fits on stderr)."""

from __future__ import annotations

from sockguard.http import aiohttp_hooks, httpcore_hooks, stdlib, tls, urllib3_hooks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: module name -> its patch; the names are ``sockguard._hook.HTTP_INTEGRATIONS``, in the same order
PATCHES: dict[str, Callable[[Any], None]] = {
    "ssl": tls.patch,
    "http.client": stdlib.patch,
    "urllib3.connection": urllib3_hooks.patch_connection,
    "urllib3.connectionpool": urllib3_hooks.patch_pool,
    "httpcore._sync.connection_pool": httpcore_hooks.patch_sync,
    "httpcore._async.connection_pool": httpcore_hooks.patch_async,
    "aiohttp.connector": aiohttp_hooks.patch_connector,
    "aiohttp.client_reqrep": aiohttp_hooks.patch_reqrep,
}


def patch(module: Any) -> None:
    PATCHES[module.__name__](module)
