"""The prometheus-client internals gateway/metrics.py builds on (docs/architecture.md), each named: its
tally adds many observations to a histogram at once, through the fields Histogram.observe itself uses. An
upgrade that moves them fails here, by name; pyproject.toml caps prometheus-client to the minor
version they were checked against."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram


def test_a_histogram_child_still_has_its_bounds_sum_and_buckets() -> None:
    histogram = Histogram("probe_seconds", "probe", ["route"], registry=CollectorRegistry())
    child = histogram.labels("/")
    assert list(child._upper_bounds)[-1] == float("inf")
    assert len(child._buckets) == len(child._upper_bounds)
    child._sum.inc(1.5)
    child._buckets[0].inc(2)
    samples = {
        s.name: s.value
        for s in next(iter(histogram.collect())).samples
        if s.labels.get("le") in (None, "0.005")
    }
    assert samples["probe_seconds_sum"] == 1.5
    assert samples["probe_seconds_bucket"] == 2
