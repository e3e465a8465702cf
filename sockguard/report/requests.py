"""``sockguard report``'s view of HTTP request events (sockguard/http/): per host, the methods, status classes,
latency percentiles, errors, paths and callers; and the redirect chains the log shows, the refused hop named.

Streaming and bounded like the rest of the report: hosts, paths, callers and chains are capped (what is past the
cap is counted, not itemised), and latencies are kept exactly up to :data:`MAX_SAMPLES` per host, then as a
uniform sample of that size (reservoir), so the percentiles stay honest estimates on any log size.

The report front end feeds :meth:`RequestSummary.add` with every ``"event": "request"`` object and renders
:meth:`RequestSummary.text_lines` / :meth:`RequestSummary.html_tables`, escaping every string it is given (they
come from the log, which an application's data reaches).
"""

from __future__ import annotations

import math
import random
from typing import Any

from sockguard.http.events import REDIRECT_STATUSES, url_text

MAX_HOSTS = 500
MAX_KEYS = 24  # distinct methods / statuses / paths / callers / errors listed per host
MAX_SAMPLES = 10_000  # latencies kept per host (then a reservoir of this size)
MAX_CHAINS = 200  # distinct redirect chains listed
MAX_OPEN = 10_000  # redirect chains waiting for their next hop
MAX_TEXT = 200


def _text(value: Any) -> str:
    text = value if value.__class__ is str else str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "\u2026"


def _bump(counter: dict[str, int], key: str, cap: int = MAX_KEYS) -> None:
    if key in counter or len(counter) < cap:
        counter[key] = counter.get(key, 0) + 1
    else:
        counter["(other)"] = counter.get("(other)", 0) + 1


def _ranked(counter: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))


def status_class(event: dict[str, Any]) -> str:
    """``2xx`` ... ``5xx``, ``blocked`` (refused by the guard) or ``error`` (no response)."""
    status = event.get("status")
    if status.__class__ is int and 100 <= status <= 599:
        return f"{status // 100}xx"
    return "blocked" if event.get("reason") else "error"


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class HostRequests:
    """Everything the log says about requests to one ``scheme://host:port``."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.requests = 0
        self.methods: dict[str, int] = {}
        self.classes: dict[str, int] = {}
        self.statuses: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.paths: dict[str, int] = {}
        self.callers: dict[str, int] = {}
        self.addresses: dict[str, int] = {}
        self.proxies: dict[str, int] = {}
        self.redirect_hops = 0
        self.latencies: list[float] = []
        self.timed = 0  # requests with a duration (the reservoir's population)
        self.slowest = 0.0
        self.first: float | None = None
        self.last: float | None = None
        self._random = random.Random(0)  # the same log always gives the same report

    def add(self, event: dict[str, Any]) -> None:
        self.requests += 1
        _bump(self.methods, _text(event.get("method") or "?"))
        _bump(self.classes, status_class(event))
        status = event.get("status")
        if status is not None:
            _bump(self.statuses, _text(status))
        else:
            _bump(self.errors, _text(event.get("reason") or event.get("error") or "?"))
        for counter, field in ((self.paths, "path"), (self.callers, "caller"), (self.addresses, "address"),
                               (self.proxies, "proxy")):  # fmt: skip
            value = event.get(field)
            if value is not None:
                _bump(counter, _text(value))
        if (event.get("redirect_hop") or 0) > 0:
            self.redirect_hops += 1
        ts = event.get("ts")
        if ts.__class__ in (int, float) and math.isfinite(ts):
            self.first = ts if self.first is None else min(self.first, ts)
            self.last = ts if self.last is None else max(self.last, ts)
        duration = event.get("duration_ms")
        if duration.__class__ in (int, float) and math.isfinite(duration) and duration >= 0:
            self.timed += 1
            self.slowest = max(self.slowest, duration)
            if len(self.latencies) < MAX_SAMPLES:
                self.latencies.append(duration)
            else:  # reservoir sampling (Algorithm R)
                slot = self._random.randrange(self.timed)
                if slot < MAX_SAMPLES:
                    self.latencies[slot] = duration

    def latency(self) -> dict[str, float]:
        ordered = sorted(self.latencies)
        return {
            "p50": percentile(ordered, 0.50),
            "p90": percentile(ordered, 0.90),
            "p99": percentile(ordered, 0.99),
            "max": self.slowest if ordered else math.nan,
        }

    def to_json(self) -> dict[str, Any]:
        latency = self.latency()
        return {
            "host": self.label,
            "requests": self.requests,
            "methods": dict(_ranked(self.methods)),
            "status_classes": dict(_ranked(self.classes)),
            "statuses": dict(_ranked(self.statuses)),
            "errors": dict(_ranked(self.errors)),
            "latency_ms": {k: (None if math.isnan(v) else v) for k, v in latency.items()},
            "latency_sampled": self.timed > len(self.latencies),
            "redirect_hops": self.redirect_hops,
            "paths": dict(_ranked(self.paths)),
            "callers": dict(_ranked(self.callers)),
            "addresses": dict(_ranked(self.addresses)),
            "proxies": dict(_ranked(self.proxies)),
            "first_seen": self.first,
            "last_seen": self.last,
        }


def _hop(event: dict[str, Any], url: str) -> str:
    status = event.get("status")
    if status is not None:
        return f"{url} {_text(status)}"
    if event.get("reason"):
        return f"{url} BLOCKED ({_text(event['reason'])})"
    return f"{url} failed ({_text(event.get('error') or '?')})"


class RequestSummary:
    """Streams request events into per-host aggregates and redirect chains. Feed with :meth:`add`, then call
    :meth:`finish` once."""

    def __init__(self, max_hosts: int = MAX_HOSTS) -> None:
        self.max_hosts = max_hosts
        self.requests = 0
        self.hosts: dict[str, HostRequests] = {}
        self.unlisted_hosts = 0  # requests to hosts past max_hosts
        self.classes: dict[str, int] = {}
        self.chains: dict[str, int] = {}  # "url 302 -> url 302 -> url BLOCKED (not-allowed)" -> times seen
        self.unlisted_chains = 0
        self._open: dict[tuple[Any, str], list[str]] = {}  # (pid, url it redirects to) -> hops so far
        self._closed: dict[tuple[Any, str], str] = {}  # (pid, previous url) of a refused hop -> its chain (retries)

    def add(self, event: Any) -> str | None:
        """Aggregate one request event; returns what is wrong with it, if anything."""
        if event.__class__ is not dict or event.get("event") != "request":
            return "not a request event"
        scheme, host, port, path = (event.get(k) for k in ("scheme", "host", "port", "path"))
        if scheme.__class__ is not str or host.__class__ is not str or path.__class__ is not str:
            return "a request event without scheme, host and path strings"
        if port is not None and port.__class__ is not int:
            return f"request event port {_text(port)!r} is not a number"
        self.requests += 1
        _bump(self.classes, status_class(event), 16)
        label = url_text(scheme, host, port, "")
        summary = self.hosts.get(label)
        if summary is None:
            if len(self.hosts) >= self.max_hosts:
                self.unlisted_hosts += 1
                summary = None
            else:
                summary = self.hosts[label] = HostRequests(label)
        if summary is not None:
            summary.add(event)
        self._chain(event, url_text(scheme, host, port, path))
        return None

    def _chain(self, event: dict[str, Any], url: str) -> None:
        pid = event.get("pid")
        hop = event.get("redirect_hop") or 0
        status = event.get("status")
        follows = status in REDIRECT_STATUSES
        if hop.__class__ is not int or hop <= 0:
            if follows:
                self._keep((pid, url), [_hop(event, url)])
            return
        previous = _text(event.get("redirected_from") or "?")
        key = (pid, previous)
        chain = self._open.pop(key, None)
        if chain is None:
            if self._closed.get(key) == url:
                return  # the client retried a refused hop: the chain is already counted
            chain = [f"{previous} (earlier hops not in the log)"]
        chain.append(_hop(event, url))
        if follows:
            self._keep((pid, url), chain)
        else:
            self._count(chain)
            if status is None:
                if len(self._closed) >= MAX_OPEN:
                    self._closed.clear()
                self._closed[key] = url

    def _keep(self, key: tuple[Any, str], chain: list[str]) -> None:
        if len(self._open) >= MAX_OPEN:  # never followed (the client stopped): count the oldest as they are
            oldest = next(iter(self._open))
            self._count([*self._open.pop(oldest), "(not followed)"])
        self._open[key] = chain

    def _count(self, chain: list[str]) -> None:
        text = " -> ".join(chain)
        if text in self.chains or len(self.chains) < MAX_CHAINS:
            self.chains[text] = self.chains.get(text, 0) + 1
        else:
            self.unlisted_chains += 1

    def finish(self) -> RequestSummary:
        """Chains still waiting for a hop the log does not have: the client did not follow them."""
        for chain in self._open.values():
            self._count([*chain, "(not followed)"])
        self._open.clear()
        return self

    def ranked(self) -> list[HostRequests]:
        """Hosts, most requests first."""
        return sorted(self.hosts.values(), key=lambda h: (-h.requests, h.label))

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "status_classes": dict(_ranked(self.classes)),
            "hosts": [h.to_json() for h in self.ranked()],
            "unlisted_host_requests": self.unlisted_hosts,
            "redirect_chains": [{"chain": c, "count": n} for c, n in _ranked(self.chains)],
            "unlisted_redirect_chains": self.unlisted_chains,
        }

    # -- rendering (the caller escapes every string: they come from the log) --------------------------------

    def text_lines(self, top: int = 0) -> list[str]:
        if not self.requests:
            return []
        ranked = self.ranked()
        shown = ranked if top <= 0 else ranked[:top]
        more = f" (showing {len(shown)}; --top 0 for all)" if len(shown) < len(ranked) else ""
        out = [f"HTTP requests: {self.requests:,} to {len(ranked):,} hosts{more} ({_counts(self.classes)})"]
        for host in shown:
            lat = host.latency()
            sampled = " (sampled)" if host.timed > len(host.latencies) else ""
            out.append(f"  {host.label}  {host.requests:,} requests: {_counts(host.classes)}")
            out.append(f"      methods {_counts(host.methods)} | statuses {_counts(host.statuses) or '-'}")
            if host.timed:
                out.append(
                    f"      latency p50 {_ms(lat['p50'])}, p90 {_ms(lat['p90'])}, p99 {_ms(lat['p99'])}, "
                    f"max {_ms(lat['max'])}{sampled}"
                )
            if host.errors:
                out.append(f"      errors {_counts(host.errors)}")
            if host.redirect_hops:
                out.append(f"      reached by redirect {host.redirect_hops:,} times")
            if host.proxies:
                out.append(f"      via proxy {_counts(host.proxies)}")
            out.append(f"      paths {_counts(host.paths, 5)}")
            out.append(f"      callers {_counts(host.callers, 5)}")
        if self.unlisted_hosts:
            out.append(f"  ... {self.unlisted_hosts:,} requests to hosts beyond the first {self.max_hosts:,}")
        if self.chains:
            out.append("")
            out.append(f"Redirect chains: {sum(self.chains.values()) + self.unlisted_chains:,}")
            for chain, n in _ranked(self.chains)[: top if top > 0 else None]:
                out.append(f"  {n:>7,}  {chain}")
        return out

    def html_tables(self) -> list[tuple[str, list[str], list[list[str]]]]:
        """(title, column names, rows) for the HTML report; every cell is raw text."""
        if not self.requests:
            return []
        hosts = []
        for host in self.ranked():
            lat = host.latency()
            hosts.append(
                [
                    host.label,
                    f"{host.requests:,}",
                    _counts(host.methods),
                    _counts(host.classes),
                    "" if not host.timed else f"{_ms(lat['p50'])} / {_ms(lat['p90'])} / {_ms(lat['p99'])}",
                    _counts(host.errors),
                    _counts(host.callers, 3),
                ]
            )
        tables = [
            (
                f"HTTP requests: {self.requests:,} ({_counts(self.classes)})",
                ["host", "requests", "methods", "status classes", "latency p50 / p90 / p99", "errors", "callers"],
                hosts,
            )
        ]
        if self.chains:
            rows = [[f"{n:,}", chain] for chain, n in _ranked(self.chains)]
            tables.append(("Redirect chains", ["times", "chain (the last hop is the one refused, if any)"], rows))
        return tables


def _counts(counter: dict[str, int], limit: int = MAX_KEYS) -> str:
    ranked = _ranked(counter)
    text = ", ".join(f"{k} {n:,}" for k, n in ranked[:limit])
    rest = sum(n for _, n in ranked[limit:])
    return text + (f", +{rest:,} more" if rest else "")


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"
