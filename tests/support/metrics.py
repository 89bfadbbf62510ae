"""Metrics as a scrape reads them."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import exposition


def value(name: str, **labels: str) -> float:
    """A sample as a scrape would read it (what the requests tallied included)."""
    exposed = text_string_to_metric_families(exposition()[0].decode())
    found = [s.value for f in exposed for s in f.samples if s.name == name and s.labels == labels]
    return float(found[0]) if found else 0.0
