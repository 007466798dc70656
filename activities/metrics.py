"""Domain counters on the worker's metrics endpoint, recorded from inside activities."""

from __future__ import annotations

from temporalio import activity


def count(name: str, **attributes: str) -> None:
    """Add one to a domain counter on the worker's metrics endpoint (e.g. issued, rejected)."""
    activity.metric_meter().create_counter(f"golden_{name}", f"golden-press {name}").add(
        1, attributes
    )
