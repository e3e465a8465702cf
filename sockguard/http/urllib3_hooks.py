"""urllib3 (and so requests): one request event per ``HTTPConnectionPool._make_request``, and CONNECT targets.

urllib3 connects an HTTPS connection (and a tunnel through a proxy) *before* it writes the request, so its
request event starts one level above ``http.client``: a hop refused at connect time still has its event. The
``http.client`` hooks underneath still decide the Host headers and absolute-form targets of every request, and
leave the event to this one (``Request.outer``). ``_new_conn`` (the TCP connect of every urllib3 connection)
decides a CONNECT target before the connection to the proxy is made.
"""

from __future__ import annotations

from sockguard import active
from sockguard.http.events import REDIRECT_STATUSES, begin, end, wanted
from sockguard.http.patching import patch_method
from sockguard.http.stdlib import check_tunnel, split_url, tunnel_hook

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def patch_connection(module: Any) -> None:
    """urllib3.connection: the CONNECT target, before the TCP connect to the proxy (or, for a tunnel urllib3
    refuses itself, at the CONNECT line: its own copy of http.client's ``_tunnel`` on older interpreters)."""
    patch_method(module.HTTPConnection, "_new_conn", _new_conn)
    if "_tunnel" in module.HTTPConnection.__dict__:
        patch_method(module.HTTPConnection, "_tunnel", tunnel_hook)


def patch_pool(module: Any) -> None:
    """urllib3.connectionpool: the request event."""
    patch_method(module.HTTPConnectionPool, "_make_request", _make_request)


def _new_conn(original: Any) -> Any:
    def new_conn(self: Any) -> Any:
        check_tunnel(self)
        return original(self)

    return new_conn


def _make_request(original: Any) -> Any:
    def make_request(self: Any, conn: Any, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
        state = active.in_force or active.current()
        level = wanted(state) if state.mode != "off" else 0
        if not level:
            return original(self, conn, method, url, *args, **kwargs)
        proxy = self.proxy
        via = f"{proxy.host}:{proxy.port}" if proxy is not None else None
        target = str(url)
        scheme, host, port = self.scheme, self.host, self.port
        if target[:1] != "/":  # absolute-form: the pool is the proxy's, the URL names the host
            scheme, port, url_host = split_url(target)
            host = url_host if url_host is not None else host
        record = begin(state, level, "urllib3", str(method), scheme, host, port, target, via)
        record.outer = True
        conn._sockguard_request = record
        try:
            response = original(self, conn, method, url, *args, **kwargs)
        except BaseException as exc:
            conn._sockguard_request = None
            end(record, error=exc)
            raise
        conn._sockguard_request = None
        status = response.status
        end(record, status, location=response.headers.get("location") if status in REDIRECT_STATUSES else None)
        return response

    return make_request
