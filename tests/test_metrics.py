"""The tally that batches each request's samples: what it adds is what prometheus-client would have."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.metrics import Tally

from .support.processes import eventually

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = (0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.99, 1.0, 7.5, 0.001)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def metrics() -> tuple[CollectorRegistry, Counter, Histogram]:
    registry = CollectorRegistry()
    counter = Counter("c", "c", ["route"], registry=registry)
    histogram = Histogram("h", "h", ["route"], buckets=BUCKETS, registry=registry)
    return registry, counter, histogram


async def test_a_flushed_tally_reads_as_if_every_sample_had_been_taken_at_once() -> None:
    direct, counter, histogram = metrics()
    for value in VALUES:
        counter.labels("/").inc()
        histogram.labels("/").observe(value)
    tallied, counter, histogram = metrics()
    tally = Tally()
    for value in VALUES:
        tally.count(counter.labels("/"))
        tally.observe(histogram.labels("/"), value)
    assert samples(tallied) != samples(direct)  # held back until the flush
    tally.flush()
    assert samples(tallied) == samples(direct)


async def test_a_tally_flushes_itself_its_interval_after_its_first_sample() -> None:
    registry, counter, _ = metrics()
    tally = Tally(interval=0.01)
    tally.count(counter.labels("/"))
    assert samples(registry)[("c_total", (("route", "/"),))] == 0
    await eventually(
        lambda: samples(registry)[("c_total", (("route", "/"),))] == 1, "never flushed", within=5
    )


def test_without_an_event_loop_a_sample_is_added_at_once() -> None:
    registry, counter, _ = metrics()
    Tally().count(counter.labels("/"))
    assert samples(registry)[("c_total", (("route", "/"),))] == 1
