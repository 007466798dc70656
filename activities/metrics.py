"""Domain counters on the worker's metrics endpoint, recorded from inside activities."""

from __future__ import annotations

from temporalio import activity

from service.store.outbox import Drained


def count(name: str, **attributes: str) -> None:
    """Add one to a domain counter on the worker's metrics endpoint (e.g. issued, rejected)."""
    activity.metric_meter().create_counter(f"golden_{name}", f"golden-press {name}").add(
        1, attributes
    )


def count_parked(drained: Drained) -> None:
    """golden_outbox_dead_letters_total: events NATS refused for good, parked by a drain."""
    for _ in drained.parked:
        count("outbox_dead_letters_total")
