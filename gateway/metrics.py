"""Prometheus metrics, named `gateway_*` (README: Logs). Labels never hold a token or a user.

With `workers: N` every worker writes its samples to `$PROMETHEUS_MULTIPROC_DIR` (prometheus-client's
multiprocess mode, set up by `gateway serve` before this module is imported), so whichever worker
answers a scrape reports the sum over all of them.

What every request counts (its route and code, its duration, the decision, a cache hit) is tallied in
plain numbers and added to the metrics together (`TALLY`): a prometheus-client sample takes a lock
per increment (with workers, an mmap write too), which cost ~27k instructions per proxied request,
5% of everything the gateway did for it.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from . import linewriter
from .accesslog import UPSTREAM_CUT
from .multiprocess import MULTIPROC_ENV

REQUESTS = Counter(
    "gateway_requests_total", "Requests answered, by route and status code.", ["route", "code"]
)
REQUEST_SECONDS = Histogram(
    "gateway_request_duration_seconds",
    "Time to answer a request (until the response headers, for streamed answers), by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
AUTH_DECISIONS = Counter(
    "gateway_auth_decisions_total", "Authentication and policy decisions, by result.", ["result"]
)
CACHE_LOOKUPS = Counter(
    "gateway_cache_lookups_total", "Identity cache lookups, by tier and result.", ["tier", "result"]
)
MEMBERSHIP_LOOKUPS = Counter(
    "gateway_membership_lookups_total",
    "Membership facts looked up, by kind (org, team, repo) and result: cached, yes, no, sso_required,"
    " stale (GitHub unusable, a known fact served) or unavailable.",
    ["kind", "result"],
)
GITHUB_CALLS = Counter(
    "gateway_github_calls_total", "Calls to GitHub, by endpoint and status code.", ["endpoint", "code"]
)
GITHUB_SECONDS = Histogram(
    "gateway_github_call_duration_seconds",
    "Duration of calls to GitHub, by endpoint.",
    ["endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IDENTITY_TOKENS_SIGNED = Counter(
    "gateway_identity_tokens_signed_total",
    "Identity tokens signed (a held one reused is not counted), by route.",
    ["route"],
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total", "Upstream failures, by route and kind.", ["route", "kind"]
)
LOG_LINES_DROPPED = Counter(
    "gateway_log_lines_dropped_total",
    "Log lines dropped because their stream could not keep up: stdout (the access log) or stderr.",
    ["stream"],
)
CONNECTIONS_OPEN = Gauge(
    "gateway_connections_open",
    "Client connections open on the main port.",
    multiprocess_mode="livesum",
)
CONNECTIONS_REFUSED = Counter(
    "gateway_connections_refused_total",
    "Client connections closed over server.max_connections, by which one: the new one (none was idle),"
    " or the longest-idle one, between requests, that made room for it.",
    ["closed"],
)
GITHUB_RATE_LIMIT_REMAINING = Gauge(
    "gateway_github_rate_limit_remaining",
    "GitHub's X-RateLimit-Remaining for the GitHub App's installation, by account, as last answered"
    " (membership.as: app).",
    ["account"],
    multiprocess_mode="min",
)
GITHUB_LAST_SUCCESS = Gauge(
    "gateway_github_last_success_timestamp_seconds",
    "Unix time of GitHub's last usable answer.",
    multiprocess_mode="max",
)


FLUSH_INTERVAL = 1.0  # seconds a tallied sample may wait before it reaches the metrics
# seconds instead of FLUSH_INTERVAL, for the process and its workers: tests of `gateway serve` set it
FLUSH_INTERVAL_ENV = "GATEWAY_METRICS_FLUSH_INTERVAL"


class Tally:
    """Counter and histogram samples kept as plain numbers, added to their metrics at most `interval`
    seconds later, before every exposition, and on `flush`."""

    def __init__(self, interval: float = FLUSH_INTERVAL) -> None:
        self._interval = interval
        self._counts: dict[Any, int] = {}
        # histogram child -> [sum of the values, then the number of values per bucket]
        self._observed: dict[Any, list[float]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def count(self, child: Any) -> None:
        """One increment of a counter's child (`Counter.labels(...)`)."""
        self._counts[child] = self._counts.get(child, 0) + 1
        if self._timer is None:
            self._schedule()

    def observe(self, child: Any, value: float) -> None:
        """One observation for a histogram's child (`Histogram.labels(...)`)."""
        bounds = child._upper_bounds
        tally = self._observed.get(child)
        if tally is None:
            tally = self._observed[child] = [0.0] * (len(bounds) + 1)
        tally[0] += value
        tally[1 + bisect.bisect_left(bounds, value)] += 1  # the first bucket whose bound >= value
        if self._timer is None:
            self._schedule()

    def _schedule(self) -> None:
        try:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self.flush)
        except RuntimeError:  # no event loop (a command, a test): nothing to batch with
            self.flush()

    def flush(self) -> None:
        """Add everything tallied to the metrics now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counts, self._counts = self._counts, {}
        for child, count in counts.items():
            child.inc(count)
        observed, self._observed = self._observed, {}
        for child, (total, *buckets) in observed.items():
            # what Histogram.observe does for one value, for many (prometheus-client's own fields)
            child._sum.inc(total)
            for bucket, values in zip(child._buckets, buckets, strict=True):
                if values:
                    bucket.inc(values)


TALLY = Tally(float(os.environ.get(FLUSH_INTERVAL_ENV, FLUSH_INTERVAL)))

# from the writers' own threads too: a prometheus-client sample is safe to increment from any thread
linewriter.STDOUT.count_drops(LOG_LINES_DROPPED.labels("stdout").inc)
linewriter.STDERR.count_drops(LOG_LINES_DROPPED.labels("stderr").inc)

# refusals that are authentication or policy decisions, by their error code
_DECIDED = frozenset(
    {
        "unauthenticated",
        "invalid_token",
        "insufficient_scope",
        "forbidden",
        "too_many_requests",
        "github_unavailable",
    }
)
# upstream failures by a refusal's code, or by the access log's `error` when the answer had begun
_UPSTREAM_FAILURES = {"bad_gateway": "unreachable", "gateway_timeout": "timeout", UPSTREAM_CUT: "cut"}
_ALLOWED = AUTH_DECISIONS.labels("allowed")
_ANONYMOUS = AUTH_DECISIONS.labels("anonymous")
_by_route: dict[tuple[str, int], tuple[Any, Any]] = {}  # children bound once, not per request


def observe_request(
    route: str | None,
    status: int,
    seconds: float,
    identified: bool,
    refused: str | None,
    error: str | None = None,
) -> None:
    """Count one answered request: by route and code, its duration, the decision behind it, and an
    upstream failure: a refusal's code (`refused`), or the access log's `error` once the answer began."""
    key = (route or "", status)
    bound = _by_route.get(key)
    if bound is None:
        bound = _by_route[key] = (REQUESTS.labels(key[0], str(status)), REQUEST_SECONDS.labels(key[0]))
    TALLY.count(bound[0])
    TALLY.observe(bound[1], seconds)
    if refused is None:
        if route is not None:
            TALLY.count(_ALLOWED if identified else _ANONYMOUS)
    elif refused in _DECIDED:
        AUTH_DECISIONS.labels(refused).inc()
    elif refused in _UPSTREAM_FAILURES:
        UPSTREAM_ERRORS.labels(route or "", _UPSTREAM_FAILURES[refused]).inc()
    if error is not None:
        UPSTREAM_ERRORS.labels(route or "", _UPSTREAM_FAILURES[error]).inc()


_signed_by_route: dict[str, Any] = {}


def identity_token_signed(route: str) -> None:
    """One identity token signed for `route`."""
    child = _signed_by_route.get(route)
    if child is None:
        child = _signed_by_route[route] = IDENTITY_TOKENS_SIGNED.labels(route)
    TALLY.count(child)


def github_observer(endpoint: str, status: int | None, seconds: float) -> None:
    """Count one call to GitHub (the GitHub client's observer hook)."""
    GITHUB_CALLS.labels(endpoint, "none" if status is None else str(status)).inc()
    GITHUB_SECONDS.labels(endpoint).observe(seconds)


def github_answered() -> None:
    """GitHub gave a usable answer (the GitHub client's hook): not a 200 that fails its schema."""
    GITHUB_LAST_SUCCESS.set(time.time())


def worker_exited(pid: int) -> None:
    """A worker is gone: its live gauges (the connections it had open) leave the sum over workers."""
    if os.environ.get(MULTIPROC_ENV):
        mark_process_dead(pid)  # type: ignore[no-untyped-call]


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus text format: this process's, or every worker's in multiprocess mode
    (another worker's tallied samples reach it within `TALLY`'s interval)."""
    TALLY.flush()
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
