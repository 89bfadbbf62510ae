"""Metrics as a scrape reads them."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import exposition


def sample(text: str, name: str, **labels: str) -> float:
    """A sample in metrics written in Prometheus' text format (0 when absent: not counted yet)."""
    found = [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if (s.name, s.labels) == (name, labels)
    ]
    return float(found[0]) if found else 0.0


def value(name: str, **labels: str) -> float:
    """A sample as a scrape of this process reads it (what the requests tallied included)."""
    return sample(exposition()[0].decode(), name, **labels)
