"""The C resolver's environment: which names glibc would really send to DNS for a lookup, and what to hand it instead.

glibc does not always ask DNS for the name it is given. With a search list (``search``/``domain`` in resolv.conf, the
``LOCALDOMAIN`` variable, or the domain of a dotted host name when neither is set), a name with fewer dots than
``ndots`` (``options ndots:N``, or ``RES_OPTIONS``) is first tried with each search domain appended, and a name that is
not found as it is is tried with them afterwards; ``HOSTALIASES`` rewrites single-label names. Each of those queries
carries a name the guard never decided (``api.allowed.test.attacker.example``).

The rule here: a name reaches DNS only as a name the policy allowed. The socket wrappers hand C *absolute* names (a
trailing dot: glibc applies no search list, no ``ndots`` and no alias file to those) and apply the search list
themselves, in glibc's order, asking only for the candidates the policy allows (:func:`query_names`). A name that
/etc/hosts answers (files before dns in nsswitch.conf) is handed over as written, since the files backend does not
match a trailing dot and answers before any query. A lookup that reaches C without the wrappers (``_socket`` called
directly) is refused by the audit hook when glibc would expand it into a name the policy does not allow
(:func:`expansions`).

The files are re-read when they change (checked at most once a second); the variables are tracked through the
``os.putenv``/``os.unsetenv`` audit events (sockguard.source.note_environment; ``os.environ`` changes go through
them), so a program that sets ``LOCALDOMAIN`` sees the search list it asked for, each candidate still decided.
"""

from __future__ import annotations

import _socket
import os
import time

from sockguard import source
from sockguard.addresses import format_address, parse_address

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

AF_INET = _socket.AF_INET
AF_INET6 = _socket.AF_INET6
RESOLV_CONF = "/etc/resolv.conf"
HOSTS = "/etc/hosts"
NSSWITCH = "/etc/nsswitch.conf"
#: the variables glibc's resolver reads (res_init): a change makes the configuration stale
VARIABLES = source.RESOLVER_VARIABLES
_RECHECK = 1.0  # seconds between checks that the files are unchanged
_MEMO_MAX = 4096


class Config:
    """What glibc's resolver would do with a name: the search list, ``ndots``, the /etc/hosts names (with the IP
    versions they have) and whether the files backend answers before DNS."""

    __slots__ = ("addresses", "changes", "files_first", "hosts", "memo", "ndots", "search", "stamp")

    def __init__(
        self,
        search: tuple[str, ...] = (),
        ndots: int = 1,
        hosts: dict[str, frozenset[int]] | None = None,
        addresses: frozenset[str] = frozenset(),
        files_first: bool = True,
        stamp: Any = None,
    ) -> None:
        self.search = search
        self.ndots = ndots
        self.hosts = hosts or {}  # name -> IP versions /etc/hosts has for it
        self.addresses = addresses  # the addresses /etc/hosts lists (canonical text)
        self.files_first = files_first
        self.stamp = stamp
        self.changes: Any = None  # sockguard.source.resolver_variables when this was read
        self.memo: dict[tuple[Any, ...], tuple[str, ...]] = {}

    def in_hosts(self, name: str, family: int) -> bool:
        """Whether glibc's files backend answers ``name`` for ``family`` before any DNS query."""
        if not self.files_first:
            return False
        versions = self.hosts.get(name)
        if not versions:
            return False
        if family == AF_INET:
            return 4 in versions
        if family == AF_INET6:
            return 6 in versions
        return True

    def candidates(self, name: str, absolute: bool) -> list[str]:
        """The names glibc's ``res_search`` asks DNS for, in order, for ``name`` (normalised, no trailing dot)."""
        if absolute or not self.search:
            return [name]
        dots = name.count(".")
        found = [name] if dots >= self.ndots else []
        found += [f"{name}.{domain}" for domain in self.search]
        if dots < self.ndots:
            found.append(name)
        return found


_config: Config | None = None
_fresh_until = 0.0  # monotonic time until which _config is taken as current without looking at the files
_monotonic = time.monotonic


def current() -> Config:
    """The configuration in force, re-read when a file or variable changed."""
    global _config, _fresh_until
    config = _config
    changes = source.resolver_variables  # replaced (never changed) on each os.putenv of a resolver variable
    now = _monotonic()
    if config is not None and now < _fresh_until and config.changes is changes:
        return config
    stamp = (_file_stamp(RESOLV_CONF), _file_stamp(HOSTS), _file_stamp(NSSWITCH), _variables(changes))
    if config is None or config.stamp != stamp:
        config = _load(stamp)
        _config = config
    config.changes = changes
    _fresh_until = now + _RECHECK
    return config


def query_names(name: str, absolute: bool, family: int) -> tuple[str, ...]:
    """What to hand the C resolver for an allowed lookup of ``name``, in the order glibc would try them: the name as
    written when /etc/hosts answers it (never for an ``absolute`` one), else the absolute candidates
    (``"api.example.com."``; with a search list also ``"api.example.com.corp.example."``, each to be decided by
    the caller before it is asked for)."""
    config = _config
    if config is not None and config.changes is source.resolver_variables and _monotonic() < _fresh_until:
        found = config.memo.get((name, absolute, family))  # the hot path: a memo hit in a fresh configuration
        if found is not None:
            return found
    config = current()
    key = (name, absolute, family)
    found = config.memo.get(key)
    if found is None:
        # An absolute name ("localhost.") is not an /etc/hosts name: glibc's files backend compares the name as
        # given, so it goes to DNS (handing C "localhost" instead made it resolve where unguarded it fails).
        if not absolute and config.in_hosts(name, family):
            found = (name,)
        else:
            found = tuple(f"{candidate}." for candidate in config.candidates(name, absolute))
        if len(config.memo) >= _MEMO_MAX:
            config.memo.clear()
        config.memo[key] = found
    return found


def queries_for(text: str, name: str, family: int) -> str | tuple[str, ...]:
    """:func:`query_names` for a lookup of ``text`` as the caller typed it (an exact ``str``; ``name`` is its
    normalised form), memoised on the typed text: the socket wrappers' hot path. A single query comes back as
    the ``str`` itself."""
    config = _config
    if config is not None and config.changes is source.resolver_variables and _monotonic() < _fresh_until:
        found = config.memo.get((text, family))  # (its own, two-item keys)
        if found is not None:
            return found
    queries = query_names(name, text[-1:] == ".", family)
    single: str | tuple[str, ...] = queries[0] if len(queries) == 1 else queries
    current().memo[(text, family)] = single  # type: ignore[assignment]
    return single


def expansions(name: str, absolute: bool, family: int) -> tuple[str, ...]:
    """The names *other than* ``name`` that glibc would send to DNS if handed ``name`` itself (search-list
    candidates); empty when /etc/hosts answers it or no search list applies. The audit hook refuses a lookup that
    reaches C directly when one of these is not allowed."""
    config = current()
    key = (name, absolute, -1 - family)  # its own entries in the memo
    found = config.memo.get(key)
    if found is None:
        if config.in_hosts(name, family):
            found = ()
        else:
            found = tuple(candidate for candidate in config.candidates(name, absolute) if candidate != name)
        if len(config.memo) >= _MEMO_MAX:
            config.memo.clear()
        config.memo[key] = found
    return found


def hosts_address(address: str) -> bool:
    """Whether /etc/hosts lists ``address`` (canonical text), so a reverse lookup of it is answered from the file."""
    config = current()
    return config.files_first and address in config.addresses


# -- reading the files -------------------------------------------------------------------------------------------


def _file_stamp(path: str) -> tuple[int, int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _variables(changed: dict[str, str | None]) -> tuple[str | None, ...]:
    """The resolver variables as the C library sees them: the last ``os.putenv``/``os.unsetenv`` of each (audit
    events: a bare ``os.putenv`` never shows in ``os.environ``), else ``os.environ``."""
    return tuple(changed[name] if name in changed else os.environ.get(name) for name in _ORDER)


_ORDER = ("HOSTALIASES", "LOCALDOMAIN", "RES_OPTIONS")


def _read(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def _load(stamp: Any) -> Config:
    search: tuple[str, ...] | None = None
    ndots = 1
    for line in _read(RESOLV_CONF):
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        if words[0] == "search":
            search = tuple(words[1:7])
        elif words[0] == "domain" and len(words) > 1:
            search = (words[1],)
        elif words[0] == "options":
            ndots = _ndots(words[1:], ndots)
    _aliases, local, options = stamp[-1]
    if local is not None:
        search = tuple(local.split()[:6])
    if options:
        ndots = _ndots(options.split(), ndots)
    if search is None:  # glibc: the domain of a dotted host name
        hostname = os.uname().nodename
        search = (hostname.split(".", 1)[1],) if "." in hostname.strip(".") else ()
    search = tuple(d.rstrip(".").lower() for d in search if d.rstrip("."))
    return Config(search, ndots, *_hosts(), _files_first(), stamp)


def _ndots(words: list[str], ndots: int) -> int:
    for word in words:
        if word.startswith("ndots:"):
            value = word[6:]
            if value.isascii() and value.isdigit():
                ndots = min(int(value), 15)
    return ndots


def _hosts() -> tuple[dict[str, frozenset[int]], frozenset[str]]:
    found: dict[str, set[int]] = {}
    addresses: set[str] = set()
    for line in _read(HOSTS):
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        addr = parse_address(words[0].partition("%")[0]) if words[0].isascii() else None
        if addr is None:
            continue
        addresses.add(format_address(addr))
        for name in words[1:]:
            found.setdefault(name.rstrip(".").lower(), set()).add(addr[0])
    return {name: frozenset(versions) for name, versions in found.items()}, frozenset(addresses)


def _files_first() -> bool:
    """Whether nsswitch.conf's ``hosts`` line starts with ``files`` (glibc's default, without the file, is
    ``dns [!UNAVAIL=return] files``: DNS first)."""
    for line in _read(NSSWITCH):
        words = line.split("#", 1)[0].split()
        if words and words[0] == "hosts:":
            return len(words) > 1 and words[1] == "files"
    return False


def forget() -> None:
    """Drop the cached configuration (tests that rewrite the files)."""
    global _config, _fresh_until
    _config = None
    _fresh_until = 0.0
