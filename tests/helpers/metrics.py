"""Reading a Prometheus endpoint: scrape it, parse the text, pick samples. Pure (urllib and
prometheus_client only): tests/unit may use it."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int) -> str:
    """The text of http://127.0.0.1:`port`/metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def families(text: str) -> dict[str, Metric]:
    """A scrape's metric families by name (prometheus_client names a counter's family without
    its `_total`)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample_values(
    families: Mapping[str, Metric], family: str, sample: str, **labels: str
) -> dict[str, float]:
    """The family's samples of that name with these labels, by their `le` (or ""), summed over
    the labels not given (none if the family is absent)."""
    values: dict[str, float] = {}
    found = families.get(family)
    for s in found.samples if found is not None else ():
        if s.name == sample and labels.items() <= s.labels.items():
            le = s.labels.get("le", "")
            values[le] = values.get(le, 0.0) + s.value
    return values


__all__ = ["families", "sample_values", "scrape"]
