"""HTTP-aware enforcement: request events and request-level decisions (Host header, SNI, proxy targets).

The socket layer decides connections; over keep-alive ten requests are one connection, and through a proxy
the socket layer sees only the proxy. These modules sit one level up, in the clients themselves, and are
loaded only when a client is imported (post-import hooks, ``sockguard._hook.INTEGRATIONS``):

* :mod:`~sockguard.http.events` -- the ``request`` event (one per HTTP request, also on a reused connection),
  its text for the ``sockguard`` logger, and the redirect-hop bookkeeping;
* :mod:`~sockguard.http.checks` -- deciding a Host header / ``:authority``, an absolute-form target, a CONNECT
  target and a TLS SNI name as destinations, before a byte of them is sent;
* :mod:`~sockguard.http.patching` -- installing the wrappers;
* one module per client: :mod:`~sockguard.http.stdlib` (``http.client``: urllib.request, xmlrpc, and the
  layer under urllib3/requests), :mod:`~sockguard.http.urllib3_hooks`, :mod:`~sockguard.http.httpcore_hooks`
  (httpx, sync and async), :mod:`~sockguard.http.aiohttp_hooks`, and :mod:`~sockguard.http.tls` (``ssl``).

Nothing here runs at interpreter start-up, and with no sink wanting request events nothing is formatted and no
stack is walked: a request costs the checks (dict lookups) and one call per wrapper.
"""
