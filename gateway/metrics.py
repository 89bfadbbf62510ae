"""Prometheus metrics, named `gateway_*` (DESIGN §7). Labels never hold a token or a user.

With `workers: N` every worker writes its samples to `$PROMETHEUS_MULTIPROC_DIR` (prometheus-client's
multiprocess mode, set up by `gateway serve` before this module is imported), so whichever worker
answers a scrape reports the sum over all of them.
"""

from __future__ import annotations

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
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set by `gateway serve` (cli.py) for workers

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
GITHUB_CALLS = Counter(
    "gateway_github_calls_total", "Calls to GitHub, by endpoint and status code.", ["endpoint", "code"]
)
GITHUB_SECONDS = Histogram(
    "gateway_github_call_duration_seconds",
    "Duration of calls to GitHub, by endpoint.",
    ["endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total", "Upstream failures, by route and kind.", ["route", "kind"]
)
GITHUB_LAST_SUCCESS = Gauge(
    "gateway_github_last_success_timestamp_seconds",
    "Unix time of GitHub's last usable answer.",
    multiprocess_mode="max",
)


# refusals that are authentication or policy decisions, by their DESIGN §4 error code
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
_UPSTREAM_FAILURES = {"bad_gateway": "unreachable", "gateway_timeout": "timeout"}
_ALLOWED = AUTH_DECISIONS.labels("allowed")
_ANONYMOUS = AUTH_DECISIONS.labels("anonymous")
_by_route: dict[tuple[str, int], tuple[Any, Any]] = {}  # children bound once, not per request


def observe_request(
    route: str | None, status: int, seconds: float, identified: bool, refused: str | None
) -> None:
    """Count one answered request: by route and code, its duration, and the decision behind it."""
    key = (route or "", status)
    bound = _by_route.get(key)
    if bound is None:
        bound = _by_route[key] = (REQUESTS.labels(key[0], str(status)), REQUEST_SECONDS.labels(key[0]))
    bound[0].inc()
    bound[1].observe(seconds)
    if refused is None:
        if route is not None:
            (_ALLOWED if identified else _ANONYMOUS).inc()
    elif refused in _DECIDED:
        AUTH_DECISIONS.labels(refused).inc()
    elif refused in _UPSTREAM_FAILURES:
        UPSTREAM_ERRORS.labels(route or "", _UPSTREAM_FAILURES[refused]).inc()


def github_observer(endpoint: str, status: int | None, seconds: float) -> None:
    """Count one call to GitHub (the GitHub client's observer hook)."""
    GITHUB_CALLS.labels(endpoint, "none" if status is None else str(status)).inc()
    GITHUB_SECONDS.labels(endpoint).observe(seconds)
    if status is not None and (200 <= status < 300 or status == 404):
        GITHUB_LAST_SUCCESS.set(time.time())


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus text format: this process's, or every worker's in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
