"""Retry-storm breaker, fan-out detector and per-destination rate limit.

An allowlist stops traffic to unlisted destinations. It does not stop a health
check retrying every 5 s against an allowlisted-but-down host, or a bug that
walks across many addresses: the patterns a provider reports as "active
scanning". This module watches connect attempts per destination (address,
port) and

* trips a breaker after ``threshold`` failed or blocked attempts within
  ``window`` seconds with no success in between: further attempts fail fast
  (``breaker-open``) for a cooldown that doubles on each failed probe;
* raises one scan-pattern alert when more than ``fanout_addresses``
  destinations, or ``fanout_ports`` ports on one address, are attempted within
  ``fanout_window`` (``fanout_action = "block"`` also refuses new destinations).
  Counted: destinations new to the process (no use in the last ~10 minutes),
  and failing or blocked ones; steady traffic to known hosts never adds up;
* optionally limits new connections per destination (token bucket).

All three watch destinations that can get this host reported: loopback and this host's own addresses
(:mod:`sockguard.host_addresses`) are left alone unless ``[breaker] loopback = true``, so a local
"wait until the server is up" loop or a test suite's many loopback servers never trip anything.
When the breaker fails a connect fast, the exception keeps the class of the failure it stands in for
(``ConnectionRefusedError`` after refusals, ...; sockguard/errors.py): see :meth:`Breaker.fails_as`.

Alerts (one per episode) go to the decision log (``"event": "alert"``), to the
``sockguard`` logger at ERROR and to callbacks registered with
:func:`on_alert`. See docs/breaker.md.

Hot path (an allowed connect to a known, healthy destination): one dict
lookup, two attribute tests and a flag store; no clock read, no lock. Everything
else runs under one lock, and alerts are delivered after it is released.
"""

from __future__ import annotations

import _thread
import errno
import os
import time
from _weakref import ref
from collections import deque

from sockguard import alerts
from sockguard.addresses import is_loopback, parse_address, unwrap_routable
from sockguard.alerts import _text
from sockguard.breaker_settings import DEFAULTS, resolve
from sockguard.caller import current_task, find_caller
from sockguard.policy import BREAKER_OPEN, RATE_LIMITED, SCAN_PATTERN, Decision
from sockguard.rules import format_host_port

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

# -- the breaker ----------------------------------------------------------------------

#: errno values that count as a failed connect (refused, timed out, unreachable, reset).
FAILURES = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED",
        "ETIMEDOUT",
        "EHOSTUNREACH",
        "ENETUNREACH",
        "EHOSTDOWN",
        "ENETDOWN",
        "ECONNRESET",
        "ECONNABORTED",
    )
    if hasattr(errno, name)
)
_IN_PROGRESS = frozenset((errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK, errno.EAGAIN))
_MAX_DESTINATIONS = 4096  # per-destination records kept (older, healthy ones are dropped first)
_MAX_DISTINCT = 8192  # fan-out tables: past this the count is saturated (already far over any limit)
_MAX_PENDING = 4096  # in-progress non-blocking connects awaiting their SO_ERROR
_MAX_LOCAL = 4096  # hosts remembered as local (exempt) or not


class _Dest:
    """What the breaker knows about one (address, port)."""

    __slots__ = (
        "blocked",
        "code",
        "cooldown",
        "failures",
        "last",
        "limited",
        "open_until",
        "probe_until",
        "stamp",
        "tokens",
        "trips",
        "why",
    )

    def __init__(self, now: float, cooldown: float, burst: int) -> None:
        self.last = now  # last use known to the slow path or a sweep (expiry)
        self.failures: deque[float] = deque()  # times of the current run of failures
        self.why = ""  # the last failure, in words
        self.code: int | None = None  # ... its errno (None: a policy block): the class a fast failure keeps
        self.blocked = False  # was the last failure a policy block?
        self.trips = 0  # 0 closed; >0 open or half-open (failed probes + 1)
        self.cooldown = cooldown
        self.open_until = 0.0
        self.probe_until = 0.0  # a probe is in flight until then
        self.tokens = float(burst)
        self.stamp = now
        self.limited = False  # rate-limit alert sent for this episode


class _Distinct:
    """Keys seen within the last ``window`` seconds (sliding), counted."""

    __slots__ = ("last", "order", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self.last: dict[Any, float] = {}
        self.order: deque[tuple[float, Any]] = deque()

    def expire(self, now: float) -> None:
        cutoff, order, last = now - self.window, self.order, self.last
        while order and order[0][0] <= cutoff:
            stamp, key = order.popleft()
            if last.get(key) == stamp:
                del last[key]

    def touch(self, key: Any, now: float) -> int:
        self.expire(now)
        seen = self.last.get(key)
        # Refresh at most twice per window, so a hot key cannot grow the queue.
        if (seen is None and len(self.last) < _MAX_DISTINCT) or (seen is not None and now - seen > self.window / 2):
            self.last[key] = now
            self.order.append((now, key))
        return len(self.last)


class Breaker:
    """Per-process watch on connect attempts; one per :class:`sockguard.guard.State`.

    ``clock`` (seconds, monotonic) is injectable so tests never sleep. ``names(address)`` returns the
    names an address was resolved from (the guard's map), so a CDN rotating addresses counts as one
    destination for fan-out and alerts can name the host. ``loopback``: watch loopback and this host's own
    addresses too (``[breaker] loopback``); ``own_addresses()`` returns those addresses (injectable for tests;
    asked again at most once a sweep period, so an address added or removed is known within a minute).
    """

    # Slots: the C accelerator reads ``healthy`` on every allowed connect and ``watched`` after it.
    __slots__ = (
        "__weakref__",
        "_addresses",
        "_block_until",
        "_fanout",
        "_keep",
        "_local",
        "_lock",
        "_next_sweep",
        "_own",
        "_ports",
        "_scan_firing",
        "burst",
        "clock",
        "cooldown",
        "dests",
        "fanout_action",
        "fanout_addresses",
        "fanout_cooldown",
        "fanout_ports",
        "fanout_window",
        "healthy",
        "loopback",
        "max_cooldown",
        "mode",
        "names",
        "own_addresses",
        "pending",
        "rate",
        "sinks",
        "threshold",
        "watched",
        "window",
    )

    def __init__(
        self,
        *,
        threshold: int = DEFAULTS["threshold"],
        window: float = DEFAULTS["window"],
        cooldown: float = DEFAULTS["cooldown"],
        max_cooldown: float = DEFAULTS["max_cooldown"],
        fanout_addresses: int = DEFAULTS["fanout_addresses"],
        fanout_ports: int = DEFAULTS["fanout_ports"],
        fanout_window: float = DEFAULTS["fanout_window"],
        fanout_action: str = DEFAULTS["fanout_action"],
        fanout_cooldown: float = DEFAULTS["fanout_cooldown"],
        rate: float = DEFAULTS["rate"],
        burst: int = DEFAULTS["burst"],
        clock: Callable[[], float] | None = None,
        sinks: Any = None,
        mode: str = "enforce",
        names: Callable[[Any], Any] | None = None,
        loopback: bool = DEFAULTS["loopback"],
        own_addresses: Callable[[], frozenset[Any]] | None = None,
    ) -> None:
        self.threshold = threshold
        self.window = window
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.fanout_addresses = fanout_addresses
        self.fanout_ports = fanout_ports
        self.fanout_window = fanout_window
        self.fanout_action = fanout_action
        self.fanout_cooldown = fanout_cooldown
        self.rate = rate
        self.burst = burst
        self.clock = clock or time.monotonic
        self.sinks = sinks
        self.mode = mode
        self.names = names
        self.loopback = loopback
        self.own_addresses = own_addresses or _own_addresses
        self._own: frozenset[Any] | None = None  # this host's addresses, asked lazily (None: ask again)
        #: host -> whether it is loopback or one of ours (exempt unless loopback = true); emptied each sweep.
        self._local: dict[Any, bool] = {}
        #: (address, port) -> record; read without the lock on the hot path, changed under it.
        self.dests: dict[tuple[Any, Any], _Dest] = {}
        #: Healthy destinations used since the last sweep: an allowed connect to one of these needs no
        #: bookkeeping at all, so the guard tests membership instead of calling before_connect (hot path).
        #: A sweep empties it, so the next use of each goes through the slow path once and is timed there.
        self.healthy: set[tuple[Any, Any]] = set()
        #: destinations with failures or an open breaker: the socket wrappers report successes for these.
        self.watched: dict[tuple[Any, Any], _Dest] = {}
        #: fd -> (id(socket), key, asyncio task or None) of non-blocking connects in progress (outcome read from
        #: SO_ERROR).
        self.pending: dict[int, tuple[int, tuple[Any, Any], Any]] = {}
        self._fanout = bool(fanout_addresses or fanout_ports)
        self._keep = max(window, fanout_window, max_cooldown, fanout_cooldown) * 2  # idle records older than this go
        self._addresses = _Distinct(fanout_window)
        self._ports: dict[Any, _Distinct] = {}
        self._scan_firing = False
        self._block_until = 0.0
        self._next_sweep = 0.0
        self._lock = _thread.RLock()
        _live.add(ref(self, _live.discard))  # (the reference removes itself when the breaker goes)

    @classmethod
    def from_settings(cls, table: Mapping[str, Any], **kwargs: Any) -> Breaker:
        """From a ``[breaker]`` table (validated again here, so a hand-built Settings is checked too)."""
        settings = resolve(table)
        del settings["enabled"]
        return cls(**settings, **kwargs)

    # -- before the connect (audit hook) ------------------------------------------------

    def before_connect(self, host: Any, port: Any, decision: Decision, sock: Any = None) -> Decision:
        """The decision to apply: ``decision`` itself, or a block by the breaker, the fan-out detector
        or the rate limit. Counts a policy block as a failure."""
        if decision.allowed and (host, port) in self.healthy:
            return decision
        return self._decide(host, port, decision, sock)

    def fails_as(self, host: Any, port: Any) -> int | None:
        """The errno of the failure a ``breaker-open`` refusal for (host, port) stands in for: the last one
        the destination failed with (ECONNREFUSED, ETIMEDOUT, ...), so the client's exception keeps its class.
        None when it was the policy that blocked the destination (the refusal is then EACCES, as before)."""
        dest = self.dests.get((host, port))
        return None if dest is None or dest.blocked else dest.code

    def exempt(self, host: Any) -> bool:
        """Whether ``host`` is loopback or this host's own address, which the breaker, the fan-out detector
        and the rate limit leave alone unless ``loopback`` is set: traffic to them never leaves the machine."""
        if self.loopback:
            return False
        found = self._local.get(host)
        if found is None:
            found = self._is_local(host)
            if len(self._local) >= _MAX_LOCAL:
                self._local.clear()
            self._local[host] = found
        return found

    def _is_local(self, host: Any) -> bool:
        if host.__class__ is not str:
            return False  # not an address (a hostname C resolved itself): watched, the safe side
        addr = parse_address(host)
        if addr is None:
            return False
        if is_loopback(addr) or addr[1] == 0:  # 0.0.0.0 and :: connect to this host
            return True
        own = self._own
        if own is None:  # a netlink round trip (~0.2 ms), once a sweep period at most, and only when needed
            own = self._own = self.own_addresses()
        return addr in own or unwrap_routable(addr) in own

    def _decide(self, host: Any, port: Any, decision: Decision, sock: Any) -> Decision:
        key = (host, port)
        alerts: list[tuple[dict[str, Any], str, int]] = []
        with self._lock:
            now = self.clock()
            if now >= self._next_sweep or len(self.dests) >= _MAX_DESTINATIONS:
                self._sweep(now)
            if self.exempt(host):
                if decision.allowed:
                    self.healthy.add(key)  # the hot path from now on (until the next sweep asks again)
                return decision
            dest = self.dests.get(key)
            if self._fanout:
                refused = self._count_fanout(key, dest, decision, now, sock, alerts)
                if refused is not None:
                    decision = refused
                    dest = None  # a refused new destination stays new
            if dest is None and decision.reason != SCAN_PATTERN:
                dest = self.dests[key] = _Dest(now, self.cooldown, self.burst)
            if dest is not None:
                dest.last = now
                if not decision.allowed:
                    if decision.reason != SCAN_PATTERN:
                        was_open = dest.trips
                        self._failed(key, dest, now, decision.explain(), None, "connect", sock, alerts)
                        if was_open:  # a retry loop on a blocked destination: the breaker says so, and why
                            decision = Decision(
                                False,
                                BREAKER_OPEN,
                                decision.rule,
                                f"circuit breaker open for {_where(*key)} after {self.threshold} failed or blocked "
                                f"attempts; each one is refused by the policy ({decision.explain()})",
                            )
                elif dest.trips:
                    decision = self._while_open(key, dest, now, decision)
                elif self.rate:
                    decision = self._rate_limit(key, dest, decision, now, sock, alerts)
                # closed and not rate-limited: further allowed attempts need no bookkeeping (hot path)
                if decision.allowed and not dest.trips and not self.rate:
                    self.healthy.add(key)
                else:
                    self.healthy.discard(key)
        self._deliver(alerts)
        return decision

    def _while_open(self, key: tuple[Any, Any], dest: _Dest, now: float, decision: Decision) -> Decision:
        """Open: fail fast. Cooldown over: let one probe through. Probe silent for a whole cooldown:
        count it as failed."""
        if dest.probe_until and now >= dest.probe_until:
            self._retrip(dest, now, "the probe got no answer within the cooldown")
        if now >= dest.open_until and not dest.probe_until:
            dest.probe_until = now + dest.cooldown
            return decision
        wait = dest.open_until - now if now < dest.open_until else dest.probe_until - now
        state = "a probe is in flight" if now >= dest.open_until else f"next probe in {wait:.0f} s"
        detail = (
            f"circuit breaker open for {_where(*key)} after {self.threshold} failed or blocked attempts "
            f"(last: {dest.why}); {state}, nothing is sent until then"
        )
        return Decision(False, BREAKER_OPEN, None, detail)

    def _rate_limit(
        self, key: tuple[Any, Any], dest: _Dest, decision: Decision, now: float, sock: Any, alerts: list
    ) -> Decision:
        dest.tokens = min(float(self.burst), dest.tokens + (now - dest.stamp) * self.rate)
        dest.stamp = now
        if dest.tokens >= 1.0:
            dest.tokens -= 1.0
            if dest.limited and dest.tokens >= self.burst - 1:
                dest.limited = False  # the bucket refilled: the episode is over
            return decision
        detail = f"more than {self.rate:g} new connections per second to {_where(*key)} (burst {self.burst})"
        if not dest.limited:
            dest.limited = True
            message = (
                f"sockguard ALERT rate limit: {detail}; the excess is refused (rate-limited). "
                f"Code: {find_caller(1) or 'unknown'}. Setting: [breaker] rate / burst."
            )
            alerts.append(self._alert(key, "rate-limit", "firing", message, detail, sock))
        return Decision(False, RATE_LIMITED, None, detail)

    # -- fan-out ------------------------------------------------------------------------

    def _count_fanout(
        self, key: tuple[Any, Any], dest: _Dest | None, decision: Decision, now: float, sock: Any, alerts: list
    ) -> Decision | None:
        """Count the attempt; alert once per episode; in block mode refuse a new destination."""
        host, port = key
        identity = self._name(host) or host
        addresses = self._addresses.touch(identity, now)
        ports_table = self._ports.get(host)
        if ports_table is None and len(self._ports) < _MAX_DISTINCT:  # past that, addresses are far over anyway
            ports_table = self._ports[host] = _Distinct(self.fanout_window)
        ports = ports_table.touch(port, now) if ports_table is not None else 0
        over = None
        if self.fanout_addresses and addresses > self.fanout_addresses:
            over = (
                f"{addresses} distinct destinations attempted within {self.fanout_window:g} s "
                f"(limit fanout_addresses = {self.fanout_addresses})"
            )
        elif self.fanout_ports and ports > self.fanout_ports:
            over = (
                f"{ports} ports on {_text(host)} attempted within {self.fanout_window:g} s "
                f"(limit fanout_ports = {self.fanout_ports})"
            )
        block = self.fanout_action == "block"
        if over is not None:
            if block:
                self._block_until = now + self.fanout_cooldown
            if not self._scan_firing:
                self._scan_firing = True
                if block:
                    action = (
                        f"new destinations are refused for {self.fanout_cooldown:g} s after the pattern stops "
                        "(scan-pattern); destinations already in use keep working"
                    )
                else:
                    action = 'alert only (set [breaker] fanout_action = "block" to refuse new destinations)'
                message = (
                    f"sockguard ALERT scan pattern: {over}, latest {_where(host, port)}; {action}. "
                    f"Code: {find_caller(1) or 'unknown'}."
                )
                alerts.append(self._alert(key, "scan-pattern", "firing", message, over, sock))
        elif self._scan_firing and now >= self._block_until and self._fanout_quiet(now):
            self._scan_firing = False
            message = "sockguard scan pattern over: destinations attempted are back under the fan-out limits"
            alerts.append(self._alert(key, "scan-pattern", "resolved", message, None, sock, level=20))
        if block and dest is None and decision.allowed and now < self._block_until:
            detail = (
                f"scan pattern: new destinations are refused for {self._block_until - now:.0f} s more "
                f"([breaker] fanout_action = block)"
            )
            return Decision(False, SCAN_PATTERN, None, detail)
        return None

    def _fanout_quiet(self, now: float) -> bool:
        if self.fanout_addresses and len(self._addresses.last) > self.fanout_addresses:
            return False
        if self.fanout_ports:
            for table in self._ports.values():
                if len(table.last) > self.fanout_ports:
                    table.expire(now)
                    if len(table.last) > self.fanout_ports:
                        return False
        return True

    # -- outcomes -----------------------------------------------------------------------

    def _failed(
        self,
        key: tuple[Any, Any],
        dest: _Dest,
        now: float,
        why: str,
        code: int | None,
        operation: str,
        sock: Any,
        alerts: list,
        task: Any = None,
    ) -> None:
        """One failed attempt: ``code`` is its errno, None for a policy block; ``task``: the asyncio task that
        started it, when its outcome arrived in a loop callback (the alert names that task's code)."""
        if dest.trips:
            if dest.probe_until:  # the probe failed: open again, for longer
                self._retrip(dest, now, why)
            return  # late results of attempts made before the trip add nothing
        failures = dest.failures
        failures.append(now)
        while failures and now - failures[0] > self.window:
            failures.popleft()
        while len(failures) > max(self.threshold, 1):
            failures.popleft()
        dest.why, dest.code, dest.blocked = why, code, code is None
        self.watched[key] = dest
        if self.threshold and len(failures) >= self.threshold:
            dest.trips = 1
            dest.cooldown = self.cooldown
            dest.open_until = now + self.cooldown
            dest.probe_until = 0.0
            self.healthy.discard(key)
            alerts.append(self._storm_alert(key, dest, now, operation, sock, task))

    def _retrip(self, dest: _Dest, now: float, why: str) -> None:
        dest.trips += 1
        dest.cooldown = min(dest.cooldown * 2, self.max_cooldown)
        dest.open_until = now + dest.cooldown
        dest.probe_until = 0.0
        dest.why = why

    def _succeeded(self, key: tuple[Any, Any]) -> None:
        alerts = []
        with self._lock:
            dest = self.watched.get(key)
            if dest is None or dest.blocked:  # a (would-)blocked destination: monitor mode let it through
                return
            del self.watched[key]
            dest.failures.clear()
            if dest.trips:
                dest.trips = 0
                dest.open_until = dest.probe_until = 0.0
                dest.cooldown = self.cooldown
                message = f"sockguard breaker closed for {self._target(key)}: a connection succeeded"
                alerts.append(self._alert(key, "retry-storm", "resolved", message, None, None, level=20))
        self._deliver(alerts)

    def after_connect(self, sock: Any, address: Any, outcome: OSError | int) -> None:
        """How a connect ended, from the socket wrappers: an exception, a connect_ex errno, or 0."""
        if address.__class__ is not tuple or len(address) < 2:
            return
        key = (address[0], address[1])
        if isinstance(outcome, OSError):
            code = outcome.errno
            if code is None and isinstance(outcome, TimeoutError):
                code = errno.ETIMEDOUT
        else:
            code = outcome
        if not code or code == errno.EISCONN:  # EISCONN: a second connect() on a connected socket
            if key in self.watched:
                self._succeeded(key)
            return
        if code in _IN_PROGRESS:
            if code in (errno.EAGAIN, errno.EWOULDBLOCK) and _timeout(sock):
                code = errno.ETIMEDOUT  # connect_ex on a socket with a timeout: it expired
            else:
                self._in_progress(sock, key)
                return
        if code in FAILURES:
            self.failed(key, code, sock)

    def _in_progress(self, sock: Any, key: tuple[Any, Any]) -> None:
        """A non-blocking connect is under way; its outcome comes from SO_ERROR, usually in an event-loop
        callback where the code that asked is no longer on the stack: its task is kept to name it."""
        if self.exempt(key[0]):
            return
        try:
            fd = sock.fileno()
        except OSError:
            return
        if len(self.pending) >= _MAX_PENDING:
            self.pending.clear()
        self.pending[fd] = (id(sock), key, current_task())

    def connect_result(self, sock: Any, value: int) -> None:
        """``getsockopt(SOL_SOCKET, SO_ERROR)`` after a non-blocking connect (asyncio, trio, selectors)."""
        try:
            entry = self.pending.pop(sock.fileno(), None)
        except OSError:
            return
        if entry is None or entry[0] != id(sock):
            return
        if value == 0:
            if entry[1] in self.watched:
                self._succeeded(entry[1])
        elif value in FAILURES:
            self.failed(entry[1], value, sock, entry[2])

    def failed(self, key: tuple[Any, Any], code: int, sock: Any = None, task: Any = None) -> None:
        """A connect to ``key`` failed with errno ``code``."""
        alerts: list[tuple[dict[str, Any], str, int]] = []
        with self._lock:
            now = self.clock()
            if now >= self._next_sweep or len(self.dests) >= _MAX_DESTINATIONS:
                self._sweep(now)  # (also refreshes what counts as local before deciding the next line)
            if self.exempt(key[0]):
                return
            dest = self.dests.get(key)
            if dest is None:
                dest = self.dests[key] = _Dest(now, self.cooldown, self.burst)
            if not dest.blocked:  # else counted already, as a would-block (monitor mode)
                self._failed(key, dest, now, _strerror(code), code, "connect", sock, alerts, task)
        self._deliver(alerts)

    def lookup_blocked(self, host: Any, port: Any, decision: Decision) -> None:
        """A blocked lookup counts toward the same alert (a retry loop on a misconfigured *name*)."""
        alerts: list[tuple[dict[str, Any], str, int]] = []
        key = ("lookup", _text(host), port)  # own namespace: never confused with an address
        with self._lock:
            now = self.clock()
            if now >= self._next_sweep or len(self.dests) >= _MAX_DESTINATIONS:
                self._sweep(now)
            dest = self.dests.get(key)  # type: ignore[arg-type]
            if dest is None:
                dest = self.dests[key] = _Dest(now, self.cooldown, self.burst)  # type: ignore[index]
            dest.last = now
            self._failed(key, dest, now, decision.explain(), None, "resolve", None, alerts)  # type: ignore[arg-type]
        self._deliver(alerts)

    # -- housekeeping ---------------------------------------------------------------------

    def _sweep(self, now: float) -> None:
        """Drop idle records, and the oldest healthy ones if there are still too many (bounded memory)."""
        self._next_sweep = now + min(self.fanout_window, self.window, 60.0)
        cutoff = now - self._keep
        # Hot-path uses leave no trace; emptying the set sends each destination's next use through the slow
        # path once, which records its time: recency is accurate to a sweep period (<= 60 s).
        self.healthy.clear()
        # This host's addresses change (DHCP, a container's new interface): ask the kernel again when next needed.
        self._own = None
        self._local = {}
        for key in [k for k, d in self.dests.items() if d.last < cutoff]:
            del self.dests[key]
            self.watched.pop(key, None)
        if len(self.dests) >= _MAX_DESTINATIONS:
            idle = sorted((d.last, i, k) for i, (k, d) in enumerate(self.dests.items()) if not d.trips)
            for _last, _i, key in idle[: len(self.dests) - _MAX_DESTINATIONS * 3 // 4]:
                del self.dests[key]
                self.watched.pop(key, None)
            if len(self.dests) >= _MAX_DESTINATIONS:  # all tripped: keep the newest
                for key in list(self.dests)[: len(self.dests) - _MAX_DESTINATIONS * 3 // 4]:
                    del self.dests[key]
                    self.watched.pop(key, None)
        self._addresses.expire(now)
        for host in list(self._ports):
            table = self._ports[host]
            table.expire(now)
            if not table.last:
                del self._ports[host]

    def _after_fork(self) -> None:
        self._lock = _thread.RLock()  # another thread may have held it at fork time
        self.pending.clear()  # those connects belong to the parent

    # -- alerts (their text: sockguard/alerts.py) ------------------------------------------

    def _target(self, key: tuple[Any, ...]) -> str:
        """'name:port (address)' when the address came from a lookup, else 'address:port'."""
        host, port = key[-2], key[-1]
        name = self._name(host) if len(key) == 2 else None
        return f"{_where(name, port)} ({_text(host)})" if name else _where(host, port)

    def _name(self, host: Any) -> str | None:
        if self.names is None or host.__class__ is not str:
            return None
        found = self.names(host)
        return found[0] if found else None

    def _storm_alert(
        self, key: tuple[Any, Any], dest: _Dest, now: float, operation: str, sock: Any, task: Any = None
    ) -> tuple[dict[str, Any], str, int]:
        return alerts.retry_storm(self, key, dest, now, operation, sock, task)

    def _alert(
        self,
        key: tuple[Any, ...],
        alert: str,
        state: str,
        message: str,
        detail: str | None,
        sock: Any,
        *,
        level: int = 40,
        caller: str | None = None,
    ) -> tuple[dict[str, Any], str, int]:
        return alerts.alert_event(self, key, alert, state, message, detail, sock, level=level, caller=caller)

    def _deliver(self, found: list[tuple[dict[str, Any], str, int]]) -> None:
        alerts.deliver(self.sinks, found)


def _where(host: Any, port: Any) -> str:
    return format_host_port(_text(host), port)


def _strerror(code: int) -> str:
    text = os.strerror(code)
    return text[:1].lower() + text[1:]


def _timeout(sock: Any) -> bool:
    try:
        return bool(sock.gettimeout())
    except (AttributeError, TypeError, OSError):  # not a socket object after all
        return False


def _own_addresses() -> frozenset[Any]:
    """This host's addresses (sockguard.host_addresses: netlink), loaded at the first connect that needs them: none
    when the module cannot be read now (no descriptor left), as when the netlink socket cannot be opened."""
    try:
        from sockguard.host_addresses import own_addresses
    except (ImportError, OSError):
        return frozenset()
    return own_addresses()


#: Weak references to the live breakers, for the fork handler (what ``weakref.WeakSet`` does, without the two
#: modules it would add to every guarded process's first socket use).
_live: set[ref[Breaker]] = set()


def _after_fork_in_child() -> None:
    for reference in list(_live):
        breaker = reference()
        if breaker is not None:
            breaker._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
