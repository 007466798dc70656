"""tests/unit is pure: no PostgreSQL, NATS or Temporal (it passes with all three unreachable).

The session's server fixtures are lazy, so a unit test only reaches a server by asking for one;
these overrides turn that into an error that says where such a test belongs.
"""

from __future__ import annotations

import pytest


def _no_server(request: pytest.FixtureRequest) -> None:
    pytest.fail(
        f"a unit test asked for the `{request.fixturename}` server fixture: unit tests are pure;"
        " put it in tests/integration (or tests/workflows for faked activities)"
    )


@pytest.fixture(scope="session")
def pg_admin_dsn(request: pytest.FixtureRequest) -> None:
    """Refused in unit tests."""
    _no_server(request)


@pytest.fixture(scope="session")
def nats_url(request: pytest.FixtureRequest) -> None:
    """Refused in unit tests."""
    _no_server(request)


@pytest.fixture(scope="session")
def temporal_env(request: pytest.FixtureRequest) -> None:
    """Refused in unit tests."""
    _no_server(request)
