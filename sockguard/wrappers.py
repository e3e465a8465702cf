"""Socket-module wrappers: what audit events cannot do.

The guard decides on exactly what the kernel will receive, and the audit events come too late for that: C reads
an address (resolving a hostname in it, calling an ``__index__`` port) *before* it raises ``socket.connect``. So
every method that hands an address to C (``connect``, ``connect_ex``, ``sendto``, ``sendmsg``, ``bind``) first turns
it into a plain tuple of exact built-in types (sockguard.canonical), resolves a hostname in it through the guard,
and passes that tuple to C; options and ancillary data that would route packets elsewhere are refused
(sockguard.rawsockets). Lookups hand C only names the policy allowed, as absolute names (sockguard.resolvconf: no
search list, ``ndots`` or alias file can add a name), drop refused answers and remember which name each address came
from; in pinned-resolver mode the pinned resolver answers instead. Reverse lookups of a *name* resolve it through the
guard first. The wrappers also tell the breaker how each connect ended. Plain functions that keep ``__wrapped__``,
``__doc__``, ``__name__``.
"""

from __future__ import annotations

import _socket
import _thread
import operator

from sockguard import active
from sockguard.accelerator import accelerator
from sockguard.canonical import c_address, c_host, canonical_numeric, numeric_hosts, remember_numeric
from sockguard.errors import EgressBlocked, InvalidHost
from sockguard.events import record_allowed
from sockguard.policy import INVALID, Decision
from sockguard.rawsockets import check_raw, is_raw, refuse_source_route, source_route
from sockguard.refusal import refuse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

AF_INET = _socket.AF_INET
AF_INET6 = _socket.AF_INET6
_family_of = _socket.socket.family.__get__  # C getters: no enum conversion
_type_of = _socket.socket.type.__get__
_SOL_SOCKET = _socket.SOL_SOCKET
_SO_ERROR = _socket.SO_ERROR
_SO_TYPE = _socket.SO_TYPE
_SOCK_STREAM = _socket.SOCK_STREAM
_SO_DOMAIN = getattr(_socket, "SO_DOMAIN", None)
_SO_PROTOCOL = getattr(_socket, "SO_PROTOCOL", None)
_NI_NUMERICHOST = _socket.NI_NUMERICHOST
_NOT_FOUND = frozenset(  # a candidate name that does not exist: glibc goes on to the next one
    code
    for code in (_socket.EAI_NONAME, getattr(_socket, "EAI_NODATA", None), getattr(_socket, "EAI_ADDRFAMILY", None))
    if code is not None
)
_index = operator.index

#: sockguard.resolvconf, loaded at the first lookup of a name (:func:`resolvconf_module`), as sockguard.admission is
#: (at the first answer to admit: :func:`admit`): not at every process's first connect. Such a lookup reads
#: /etc/resolv.conf and asks a nameserver; with no descriptor left to read the module it fails with that error,
#: as it would have failed to resolve. A failed import raises: nothing is resolved, and the next lookup tries again.
resolvconf: Any = None


def resolvconf_module() -> Any:
    """sockguard.resolvconf (imported now, the first time: the wrappers and sockguard.floor ask)."""
    global resolvconf
    if resolvconf is not None:
        return resolvconf
    from sockguard import resolvconf as module

    resolvconf = module
    return module


def _admit_first(state: Any, name: str, port: Any, infos: list[Any], address_index: int) -> list[Any]:
    """sockguard.admission.admit, which replaces this function at its first call."""
    global admit
    from sockguard.admission import admit as admitting

    admit = admitting
    return admitting(state, name, port, infos, address_index)


admit: Callable[[Any, str, Any, list[Any], int], list[Any]] = _admit_first

_nameinfo = _thread._local()
#: ``[name, family]``: the exact object a wrapper is handing C's resolver right now, and the family, both decided
#: already (sockguard.floor skips deciding that lookup again). One cell for all threads, on purpose: a thread-local
#: costs ~150 ns a lookup, and sharing it is safe. A match needs the very same object (an identity test: no caller's
#: lookalike passes) with the same family, and then glibc asks for exactly what the wrapper decided, whoever asks;
#: two threads overwriting each other only make the floor decide in full.
handing: list[Any] = [None, 0]


def numeric_nameinfo() -> bool:
    """True inside the wrapper's ``getnameinfo`` call with ``NI_NUMERICHOST``: no reverse query (sockguard.floor)."""
    return getattr(_nameinfo, "numeric", False)


def decided(host: Any, family: int) -> bool:
    """Whether ``host`` is the very object a wrapper is handing C's resolver, for ``family``, after deciding it (the
    audit hook then need not decide it again)."""
    return handing[0] is host and handing[1] == family


def _resolve(function: Callable[..., Any], query: str, family: int, *args: Any) -> Any:
    """``function(query, *args)``: a C resolver call, for ``family``, with a name the wrapper decided."""
    handing[0], handing[1] = query, family
    try:
        return function(query, *args)
    finally:
        handing[0] = None


def install_wrapper(owner: Any, wrapper: Any, original: Any) -> None:
    """Put ``wrapper`` in place of ``original`` on a module or class, marked so a
    second patch is recognised and the original stays reachable."""
    wrapper.__sockguard__ = True
    wrapper.__wrapped__ = original
    wrapper.__doc__ = original.__doc__
    setattr(owner, wrapper.__name__, wrapper)


def _refused(state: Any, decision: Any, host: Any, port: Any, operation: str = "resolve") -> None:
    error = refuse(state, decision, operation, None, host, port, None, depth=3)
    if error is not None:
        raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)


def _lookup_text(state: Any, host: Any, port: Any) -> str | None:
    """The exact text C would resolve for a lookup's ``host`` (str or bytes), or None for a type C refuses itself.
    A host no rule can name (a NUL, which C would truncate at, non-ASCII bytes, a failed IDNA encoding) is refused."""
    if host.__class__ is str:
        return host
    if not issubclass(host.__class__, (str, bytes)):
        return None
    try:
        return c_host(host)
    except (TypeError, InvalidHost) as exc:
        _refused(state, Decision(False, INVALID, None, str(exc)), host, port)
        return None


def allowed_queries(state: Any, name: str, absolute: bool, port: Any, family: int) -> list[tuple[str, str]]:
    """``(candidate, query)`` for each name glibc (or c-ares, which reads the same files and variables) would try for
    an allowed lookup of ``name``, in its order, keeping only the candidates the policy allows: ``query`` is what to
    hand the resolver (absolute, or as written for an /etc/hosts name; sockguard.resolvconf)."""
    found = []
    for query in (resolvconf or resolvconf_module()).query_names(name, absolute, family):
        candidate = query[:-1] if query.endswith(".") else query
        if candidate == name or state.lookup(candidate, port)[0].allowed:
            found.append((candidate, query))
    return found


def first_answer(
    state: Any, name: str, absolute: bool, port: Any, family: int, ask: Callable[[str], Any]
) -> tuple[str, Any]:
    """``(name, answer)`` for the first of :func:`allowed_queries` that answers (``ask(query)``); a candidate that
    does not exist moves on to the next, as glibc does. Candidates no rule allows are never asked for."""
    queries = (resolvconf or resolvconf_module()).query_names(name, absolute, family)
    if len(queries) == 1:
        return name, ask(queries[0])
    failure: OSError | None = None
    try:
        for candidate, query in allowed_queries(state, name, absolute, port, family):
            try:
                return candidate, ask(query)
            except _socket.gaierror as exc:
                if exc.errno not in _NOT_FOUND:
                    raise
                if failure is None or exc.errno != _socket.EAI_NONAME:
                    failure = exc
        raise failure or _socket.gaierror(_socket.EAI_NONAME, "Name or service not known")
    finally:
        failure = None  # its traceback holds this frame: no cycle through it (sockguard/refusal.py)


def patch_socket_module(module: Any) -> None:
    """Wrap the socket module's resolver functions and socket methods.

    Idempotent; safe after ``importlib.reload(socket)`` (the post-import hook
    runs again and re-wraps the fresh functions)."""
    if getattr(module.getaddrinfo, "__sockguard__", False):
        # Functions still ours; the class methods may have been put back by
        # someone holding the originals (pytest-socket does, per test).
        guard_socket_class(module.socket, module.getaddrinfo)
        return
    if getattr(module.getaddrinfo, "__module__", module.__name__) != module.__name__:
        # Someone else's stand-in (pytest-socket's, a test's mock) is in place for now: wrapping it would keep it
        # reachable after its owner puts the function back (that owner checks identity, and would find ours). The
        # audit hook still decides whatever reaches C; the wrappers go on at the next patch after it is restored.
        ours = _our_getaddrinfo.get(module.__name__)
        if ours is not None:
            guard_socket_class(module.socket, ours)
        return
    original_getaddrinfo = module.getaddrinfo
    original_gethostbyname = module.gethostbyname
    original_gethostbyname_ex = module.gethostbyname_ex
    original_gethostbyaddr = module.gethostbyaddr
    original_getnameinfo = module.getnameinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        state = active.in_force or active.current()
        if host is None or state.mode == "off":
            return original_getaddrinfo(host, port, family, type, proto, flags)
        if host.__class__ is str:
            text = host
        else:
            text = _lookup_text(state, host, port)
            if text is None:  # not str/bytes: C raises its own TypeError
                return original_getaddrinfo(host, port, family, type, proto, flags)
        decision, name = state.lookup(text, port)
        if not decision.allowed:
            _refused(state, decision, host, port)
        if name is None:  # numeric: resolve the canonical spelling, never DNS
            return original_getaddrinfo(canonical_numeric(text) or text, port, family, type, proto, flags)
        record_allowed(state, decision, "resolve", None, name, port, None, 1)
        if state.resolver is not None:  # pinned: only the configured nameservers answer (sockguard/resolver.py)
            infos = state.resolver.getaddrinfo(name, port, family, type, proto, flags)
        else:
            queries = (resolvconf or resolvconf_module()).queries_for(text, name, family)
            if queries.__class__ is str:  # no search list to apply: the name itself (absolute, or as in /etc/hosts)
                query = handing[0] = queries  # (_resolve, inlined: this runs on every lookup)
                handing[1] = family
                try:
                    infos = original_getaddrinfo(query, port, family, type, proto, flags)
                finally:
                    handing[0] = None
            else:
                name, infos = first_answer(
                    state,
                    name,
                    text[-1:] == ".",
                    port,
                    family,
                    lambda query: _resolve(original_getaddrinfo, query, family, port, family, type, proto, flags),
                )
        return admit(state, name, port, infos, 4)

    def by_name(host: Any, original: Any, pinned: str) -> tuple[Any, str | None, Any]:
        """``(state, name, answer)`` of gethostbyname[_ex] (``name`` None: numeric or off, nothing to admit)."""
        state = active.in_force or active.current()
        if state.mode == "off":
            return state, None, original(host)
        text = _lookup_text(state, host, None)
        if text is None:
            return state, None, original(host)
        decision, name = state.lookup(text, None)
        if not decision.allowed:
            _refused(state, decision, host, None)
        if name is None:
            return state, None, original(canonical_numeric(text) or text)
        if state.resolver is not None:
            return state, name, getattr(state.resolver, pinned)(name)
        name, answer = first_answer(
            state, name, text.endswith("."), None, AF_INET, lambda query: _resolve(original, query, AF_INET)
        )
        return state, name, answer

    def gethostbyname(host):
        state, name, ip = by_name(host, original_gethostbyname, "gethostbyname")
        return ip if name is None else admit(state, name, None, [ip], -1)[0]

    def gethostbyname_ex(host):
        state, name, (hostname, aliases, ips) = by_name(host, original_gethostbyname_ex, "gethostbyname_ex")
        return (
            (hostname, aliases, ips) if name is None else (hostname, aliases, admit(state, name, None, list(ips), -1))
        )

    def gethostbyaddr(host):
        # A reverse lookup of an address is decided by the audit hook (sockguard.reverse); a *name* would be
        # resolved forwards by C first, so it goes through the guarded getaddrinfo and its address is looked up.
        state = active.in_force or active.current()
        if state.mode == "off":
            return original_gethostbyaddr(host)
        if issubclass(host.__class__, bytearray):
            host = memoryview(host).tobytes()  # C copies the buffer as it is now: decide on, and hand on, that copy
        text = _lookup_text(state, host, None)
        if text is None:
            return original_gethostbyaddr(host)
        numeric = canonical_numeric(text)
        if numeric is None:
            numeric = getaddrinfo(text, None)[0][4][0]
        return original_gethostbyaddr(numeric)

    def getnameinfo(sockaddr, flags):
        if flags.__class__ is not int:
            flags = _index(flags)  # once: C would call __index__ again, and get another answer
        if not flags & _NI_NUMERICHOST:
            return original_getnameinfo(sockaddr, flags)  # a reverse lookup: decided by the audit hook
        _nameinfo.numeric = True
        try:
            return original_getnameinfo(sockaddr, flags)
        finally:
            _nameinfo.numeric = False

    for wrapper, original in (
        (getaddrinfo, original_getaddrinfo),
        (gethostbyname, original_gethostbyname),
        (gethostbyname_ex, original_gethostbyname_ex),
        (gethostbyaddr, original_gethostbyaddr),
        (getnameinfo, original_getnameinfo),
    ):
        install_wrapper(module, wrapper, original)
    _our_getaddrinfo[module.__name__] = getaddrinfo
    guard_socket_class(module.socket, getaddrinfo)


#: The getaddrinfo wrapper last put on each socket module (by name), for the socket class while a stand-in is there.
_our_getaddrinfo: dict[str, Any] = {}


def _connect_outcome(sock: Any, address: Any, outcome: Any) -> None:
    state = active.in_force
    if state is not None and state.breaker is not None:
        state.breaker.after_connect(sock, address, outcome)


def _ancillary(sock: Any, ancdata: Any, destination: Any) -> Any:
    """``sendmsg``'s ancillary data as C will read it, as a list of plain ``(level, type, bytes)`` tuples (C iterates
    and indexes the caller's objects itself, and could get other answers than a check did); a source route or
    routing header in it is refused."""
    if not ancdata and (ancdata.__class__ is list or ancdata.__class__ is tuple):
        return ancdata
    items = []
    for item in ancdata:
        if not issubclass(item.__class__, tuple) or tuple.__len__(item) != 3:
            raise TypeError(f"sendmsg() ancillary data items must be (level, type, data) tuples, not {item!r}")
        level, kind, data = tuple.__getitem__(item, slice(None))
        level, kind = _index(level), _index(kind)
        data = memoryview(data).tobytes()
        problem = source_route(level, kind, data)
        if problem is not None:
            refuse_source_route(problem, "send", sock, destination, depth=4)
        items.append((level, kind, data))
    return items


def guard_socket_class(cls: Any, guarded_getaddrinfo: Any) -> None:
    """Wrap ``connect``/``connect_ex``/``sendto``/``sendmsg``/``bind``/``setsockopt``/``getsockopt``/``__init__`` of a
    socket class, resolving hostname tuples with ``guarded_getaddrinfo`` (the socket module's, or gevent's own
    resolver)."""
    if getattr(cls.connect, "__sockguard__", False):
        return
    original_init = cls.__init__
    original_connect = cls.connect
    original_connect_ex = cls.connect_ex
    original_sendto = cls.sendto
    original_sendmsg = getattr(cls, "sendmsg", None)
    original_bind = cls.bind
    original_setsockopt = cls.setsockopt
    original_getsockopt = cls.getsockopt

    def prepare(sock: Any, address: Any, operation: str) -> Any:
        """The address C will get: a plain tuple with a canonical IP literal, a hostname resolved through the
        guard (C would resolve it itself, raising no event, its DNS query already out)."""
        try:
            family = _family_of(sock)
            kind = _type_of(sock)
        except TypeError:  # a Python class around _socket.socket (gevent's socket)
            family = getattr(sock, "family", -1)
            kind = getattr(sock, "type", 0)
        if family != AF_INET and family != AF_INET6:
            return address
        try:
            plain = c_address(address, family, operation)
        except InvalidHost as exc:
            state = active.in_force or active.current()
            error = refuse(state, Decision(False, INVALID, None, str(exc)), operation, sock, repr(address), None, None,
                           depth=3)  # fmt: skip
            if error is not None:
                raise (error, error := None)[0]  # the local let go first (sockguard/refusal.py)
            return address  # monitor mode: logged as would-block, and C gets the call as made
        host = plain[0]
        text = host
        if host == "":
            text = "0.0.0.0" if family == AF_INET else "::"
        elif host == "<broadcast>" and family == AF_INET:
            text = "255.255.255.255"
        canonical = canonical_numeric(text)
        if canonical is not None:
            if canonical == host:
                remember_numeric(canonical)
                return plain
            return (canonical, *plain[1:])
        infos = guarded_getaddrinfo(host, plain[1], family, kind & 0xF)
        resolved = c_address(infos[0][4], family, operation)
        if family == AF_INET6 and len(plain) > 2:
            return (resolved[0], plain[1], *plain[2:])
        return resolved

    # The fast path (inlined in connect, connect_ex and sendto): a plain (str, int) pair whose host is a known
    # canonical IP literal goes to C as it is. Exact types only: a subclass's __hash__/__eq__ could pass the
    # membership test for a host it is not. Unpacking a pair costs less than len() and two indexings.

    # The breaker learns how each connect ended: failures (and in-progress non-blocking connects)
    # always, successes only for destinations it watches (one truth test on the hot path). A connect the
    # guard refused (EgressBlocked) is not an outcome: the breaker counted it when it refused it.
    def connect(self, address):
        host = port = None
        if address.__class__ is tuple:
            try:
                host, port = address
            except ValueError:
                pass
        if host.__class__ is not str or port.__class__ is not int or host not in numeric_hosts:
            address = prepare(self, address, "connect")
        try:
            result = original_connect(self, address)
        except EgressBlocked:
            raise
        except OSError as exc:
            _connect_outcome(self, address, exc)
            raise
        state = active.in_force
        breaker = state.breaker if state is not None else None
        if breaker is not None and breaker.watched:
            breaker.after_connect(self, address, 0)
        return result

    def connect_ex(self, address):
        host = port = None
        if address.__class__ is tuple:
            try:
                host, port = address
            except ValueError:
                pass
        if host.__class__ is not str or port.__class__ is not int or host not in numeric_hosts:
            address = prepare(self, address, "connect_ex")
        try:
            err = original_connect_ex(self, address)
        except EgressBlocked:
            raise
        except OSError as exc:
            _connect_outcome(self, address, exc)
            raise
        state = active.in_force
        breaker = state.breaker if state is not None else None
        if breaker is not None and (err or breaker.watched):
            breaker.after_connect(self, address, err)
        return err

    def getsockopt(self, level, optname, *buflen):
        # asyncio/trio learn a non-blocking connect's outcome from SO_ERROR: so does the breaker.
        value = original_getsockopt(self, level, optname, *buflen)
        if optname == _SO_ERROR and level == _SOL_SOCKET and not buflen:
            state = active.in_force
            breaker = state.breaker if state is not None else None
            if breaker is not None and breaker.pending:
                breaker.connect_result(self, value)
        return value

    def setsockopt(self, level, optname, value, *optlen):
        # C parses level and optname with __index__, twice when the value is not an int: decide on one reading and
        # pass it on, with the value as a snapshot (an int, None, or the buffer's bytes).
        level, optname = _index(level), _index(optname)
        if value is not None and value.__class__ is not int:
            try:
                value = _index(value)
            except TypeError:
                value = memoryview(value).tobytes()
        problem = source_route(level, optname, value)
        if problem is not None:
            refuse_source_route(problem, "setsockopt", self, f"level {level}, option {optname}", depth=3)
        return original_setsockopt(self, level, optname, value, *optlen)

    def sendto(self, data, flags_or_address, *rest):
        if len(rest) > 1:
            return original_sendto(self, data, flags_or_address, *rest)  # C refuses the arity
        address = rest[0] if rest else flags_or_address
        host = port = None
        if address.__class__ is tuple:
            try:
                host, port = address
            except ValueError:
                pass
        if host.__class__ is not str or port.__class__ is not int or host not in numeric_hosts:
            address = prepare(self, address, "sendto")
        if rest:
            return original_sendto(self, data, flags_or_address, address)
        return original_sendto(self, data, address)

    def sendmsg(self, buffers, *args):
        if 0 < len(args) <= 3:
            if len(args) == 3 and args[2] is not None:
                args = (args[0], args[1], prepare(self, args[2], "sendmsg"))
            args = (_ancillary(self, args[0], args[2] if len(args) == 3 else None), *args[1:])
        return original_sendmsg(self, buffers, *args)

    def bind(self, address):
        address = prepare(self, address, "bind")  # (not a hot path: no fast path)
        return original_bind(self, address)

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        fileno = kwargs.get("fileno", args[3] if len(args) > 3 else None)
        if fileno is not None and _SO_DOMAIN is not None:
            # An adopted descriptor (fromfd, dup, accept, socket(fileno=...)): its family and type as given can be
            # anything, and socket.__new__ showed none. Ask the kernel what it really is.
            try:
                family = original_getsockopt(self, _SOL_SOCKET, _SO_DOMAIN)
                kind = original_getsockopt(self, _SOL_SOCKET, _SO_TYPE)
                if kind == _SOCK_STREAM:  # (every accept(): never raw, packet or ICMP, no third system call)
                    return
                proto = original_getsockopt(self, _SOL_SOCKET, _SO_PROTOCOL) if _SO_PROTOCOL is not None else -1
            except OSError:
                return
            if is_raw(family, kind, proto):
                check_raw(family, kind, proto, depth=2)

    fast_connect, fast_sendto = _accelerated(connect, original_connect, sendto, original_sendto)
    for wrapper, original in (
        (__init__, original_init),
        (fast_connect, original_connect),
        (connect_ex, original_connect_ex),
        (fast_sendto, original_sendto),
        (sendmsg, original_sendmsg),
        (bind, original_bind),
        (setsockopt, original_setsockopt),
        (getsockopt, original_getsockopt),
    ):
        # Skip methods still wrapped: pytest-socket puts back only ``connect``, and a
        # second wrapper would count every breaker failure twice.
        if original is None or getattr(original, "__sockguard__", False):
            continue
        install_wrapper(cls, wrapper, original)


_C_CONNECT = _socket.socket.connect
_C_SENDTO = _socket.socket.sendto


def _accelerated(connect: Any, original_connect: Any, sendto: Any, original_sendto: Any) -> tuple[Any, Any]:
    """``connect`` and ``sendto`` with their fast path (a plain ``(str, int)`` pair whose host is a known canonical IP
    literal goes to C as it is) run by the C accelerator, when it is on and the originals are ``_socket.socket``'s
    own methods; the Python functions stay the path for everything else (native/sg_accel.c)."""
    fast = accelerator()
    if fast is None:
        return connect, sendto
    shared = (numeric_hosts, active, _connect_outcome, EgressBlocked)
    if original_connect is _C_CONNECT:
        connect = fast.wrap("connect", original_connect, connect, *shared)
    if original_sendto is _C_SENDTO:
        sendto = fast.wrap("sendto", original_sendto, sendto, *shared)
    return connect, sendto
