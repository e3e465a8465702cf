"""The start-up path: the audit-hook floor and post-import hooks.

This module loads in every guarded Python process (via sitecustomize), so it
imports nothing but ``sys``: not even ``__future__`` (one more module to load in
every process), so annotations naming types imported for the checker only are
strings. The policy is compiled lazily, at the first socket event; the
``socket`` module is patched when (and if) it is imported.
"""

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~5 ms at start-up; annotations only
    from collections.abc import Callable
    from typing import Any

    Handler = Callable[[tuple[Any, ...]], None]

SOCKET_EVENTS = (
    "socket.connect",
    "socket.sendto",
    "socket.sendmsg",
    "socket.bind",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyaddr",
    "socket.getnameinfo",
)

# A guarded process warns when it starts a Python that will not be guarded (sockguard.floor._on_child).
CHILD_EVENTS = ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.system")

# Event name -> handler. Updated in place, key by key (each store is atomic), so
# the hook can bind ``handlers.get`` once; an empty table makes the hook a no-op.
handlers: "dict[str, Handler]" = {}
_installed = False
activated_at_startup = False  # set by activate() (sitecustomize / sockguard run)
#: Where this process's configuration comes from, fixed by activate() (sockguard.source.Source), or None.
configuration_source: "Any" = None


def _audit(event: str, args: "tuple[Any, ...]", _handler_for=handlers.get) -> None:
    # Runs for every audited event in the process (open, import, exec, ...):
    # one C-level dict lookup and out.
    handler = _handler_for(event)
    if handler is not None:
        handler(args)


def set_handlers(table: "dict[str, Handler]") -> None:
    """Replace the handler table in place; keys are overwritten one by one, so
    an event never finds its key missing while switching between two policies."""
    for event in table:
        if event not in WATCHED_EVENTS:  # the C floor dispatches only these: so does the Python one
            raise ValueError(f"sockguard's audit hook does not watch {event!r}")
    handlers.update(table)
    for event in [e for e in handlers if e not in table]:
        del handlers[event]


def install_audit_hook() -> None:
    """Add the floor once: the C accelerator's hook when it is available, else :func:`_audit`. Neither can be
    removed (no Python API removes an audit hook); the guard turns the floor into a no-op by emptying
    ``handlers``."""
    global _installed
    if not _installed:
        _installed = True
        from sockguard.accelerator import accelerator

        fast = accelerator()
        if fast is not None:
            fast.install(handlers, WATCHED_EVENTS)
        else:
            sys.addaudithook(_audit)


# --- the C accelerator (issue 16; native/sg_accel.c) ------------------------------------------------------

#: Every event the floor dispatches (the handler table may hold only these).
WATCHED_EVENTS = (*SOCKET_EVENTS, "socket.__new__", *CHILD_EVENTS, "os.putenv", "os.unsetenv")


def _lazy(event: str) -> "Handler":
    def first_event(args: "tuple[Any, ...]") -> None:
        from sockguard import active

        active.current()  # loads the configuration and swaps in the real handlers
        handler = handlers.get(event)
        if handler is not None and handler is not first_event:
            handler(args)

    return first_event


def _lazy_new(args: "tuple[Any, ...]") -> None:
    """``socket.__new__`` before the policy is loaded: most sockets (asyncio's socketpair, a listening server) need
    no policy yet; a raw, packet or ICMP one (SOCK_RAW, Linux's SOCK_PACKET and AF_PACKET, SOCK_DGRAM with
    IPPROTO_ICMP/ICMPV6) loads it and is decided."""
    if args[2] & 0xF in (3, 10) or args[1] == 17 or (args[2] & 0xF == 2 and args[3] in (1, 58)):
        _lazy("socket.__new__")(args)


def set_lazy_handlers() -> None:
    table = {event: _lazy(event) for event in SOCKET_EVENTS + CHILD_EVENTS}
    table["socket.__new__"] = _lazy_new
    from sockguard.source import note_environment

    table["os.putenv"] = table["os.unsetenv"] = note_environment
    set_handlers(table)


# --- post-import hooks ------------------------------------------------------

_post_import: "dict[str, list[Callable[[Any], None]]]" = {}


class _NotifyingLoader:
    def __init__(self, loader: "Any", name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: "Any") -> "Any":
        return self._loader.create_module(spec)

    def exec_module(self, module: "Any") -> None:
        self._loader.exec_module(module)
        for callback in _post_import.get(self._name, ()):
            callback(module)

    def __getattr__(self, attr: str) -> "Any":
        return getattr(self._loader, attr)


class _PostImportFinder:
    """Finds nothing itself: wraps the real loader of a watched module so the
    callbacks run right after the module body (and again after a reload)."""

    def find_spec(self, name: str, path: "Any" = None, target: "Any" = None) -> "Any":
        if name not in _post_import:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _NotifyingLoader(spec.loader, name)  # type: ignore[assignment]
                return spec
        return None

    def invalidate_caches(self) -> None:
        pass


_finder = _PostImportFinder()


def when_imported(name: str, callback: "Callable[[Any], None]") -> None:
    """Run ``callback(module)`` after ``name`` is imported (now, if it already is), and again after each reload
    (which replaces the module's classes). A module still being imported (by another thread, or further up this
    thread's stack) is patched when that import finishes, never half-way: its classes may not exist yet."""
    callbacks = _post_import.setdefault(name, [])
    if callback not in callbacks:
        callbacks.append(callback)
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    module = sys.modules.get(name)
    if module is None:
        return
    if not _initializing(module):
        callback(module)
    elif not isinstance(getattr(module.__spec__, "loader", None), _NotifyingLoader):
        # Its import began before our finder was in place, so no loader will call us: wait for it elsewhere.
        _after_import(name, module)


def _initializing(module: "Any") -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _after_import(name: str, module: "Any") -> None:
    """Run ``name``'s callbacks once the import in progress has finished, from a helper thread (this one may be
    inside that very import); nothing waits for it. If the import fails, nothing runs."""
    import _thread
    import time

    def wait() -> None:
        for _ in range(6000):  # up to a minute: an import that takes longer is not one we can wait for
            if sys.modules.get(name) is not module:
                return  # the import failed (or the module was replaced: its own import notifies us)
            if not _initializing(module):
                for callback in _post_import.get(name, ()):
                    callback(module)
                return
            time.sleep(0.01)

    _thread.start_new_thread(wait, ())


def _patch_socket(module: "Any") -> None:
    from sockguard.wrappers import patch_socket_module

    patch_socket_module(module)


#: HTTP clients and ``ssl``: request events and request-level decisions (Host header, SNI, proxy targets), in
#: sockguard/http/ (``sockguard.http.hooks.PATCHES``), loaded only when one of these is imported.
HTTP_INTEGRATIONS = (
    "ssl",
    "http.client",
    "urllib3.connection",
    "urllib3.connectionpool",
    "httpcore._sync.connection_pool",
    "httpcore._async.connection_pool",
    "aiohttp.connector",
    "aiohttp.client_reqrep",
)

#: Libraries that resolve or connect outside the socket module: sockguard/integrations.py patches each one
#: when it is imported (that module itself loads only then).
INTEGRATIONS = (
    "asyncio.base_events",
    "pycares",
    "aiohttp.resolver",
    "gevent.resolver",
    "gevent.resolver.thread",
    "gevent.resolver.blocking",
    "gevent.resolver.ares",
    "gevent._socket3",
    "uvloop",
    "psycopg.connection",
    "psycopg.connection_async",
    "dns.query",
    "dns.asyncquery",
    "dns.resolver",
    "dns.asyncresolver",
    *HTTP_INTEGRATIONS,
)


def _integrate(module: "Any") -> None:
    from sockguard import integrations

    integrations.patch(module)


def watch_imports() -> None:
    """Wrap ``socket`` and adapt every library of :data:`INTEGRATIONS` when (and each time) it is imported:
    before the first socket event, so a library's first lookup is already guarded."""
    when_imported("socket", _patch_socket)
    for name in INTEGRATIONS:
        when_imported(name, _integrate)


def activate() -> None:
    """Start-up activation (sitecustomize): the configuration's source fixed now (variables, file path and bytes:
    sockguard.source), the floor installed now, the policy compiled lazily at the first socket event."""
    import os

    from sockguard import source

    global activated_at_startup, configuration_source
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed: no local config file can count
        cwd = "/nonexistent"
    found = source.take(os.environ, cwd)
    if found.mode_off:
        return
    activated_at_startup = True
    configuration_source = found
    source.export_for_children(found, os.environ)
    if not handlers:
        set_lazy_handlers()
    install_audit_hook()
    watch_imports()
