"""with_fresh_ports: a start that lost the race for a picked port runs again; nothing else does."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from service.devstack.servers import ServerError, with_fresh_ports


def failing(*causes: str) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def start() -> str:
        calls.append(1)
        if len(calls) <= len(causes):
            raise ServerError("nats", causes[len(calls) - 1])
        return "started"

    return calls, start


def test_a_lost_port_race_starts_again() -> None:
    calls, start = failing(
        "exited with code 1: listen tcp 127.0.0.1:5: bind: address already in use"
    )
    assert with_fresh_ports(start) == "started"
    assert len(calls) == 2


def test_any_other_failure_is_raised_at_once() -> None:
    calls, start = failing("exited with code 1: unknown flag --no-such-flag")
    with pytest.raises(ServerError, match="unknown flag"):
        with_fresh_ports(start)
    assert len(calls) == 1


def test_a_port_that_stays_taken_gives_up() -> None:
    calls, start = failing(*["port 127.0.0.1:5 is in use"] * 5)
    with pytest.raises(ServerError, match="in use"):
        with_fresh_ports(start, attempts=3)
    assert len(calls) == 3
