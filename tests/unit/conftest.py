"""tests/unit is pure: no PostgreSQL, NATS or Temporal (it passes with all three unreachable).

The session's server fixtures are lazy, so a unit test only reaches a server by asking for one;
these overrides turn that into an error that says where such a test belongs. Settings read the
process environment, so unit tests also run without the machine's GOLDEN_* and TEMPORAL_*.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() gives its defaults, whatever the shell exported (e.g. after `dev up`)."""
    for name in list(os.environ):
        if name.startswith(("GOLDEN_", "TEMPORAL_")):
            monkeypatch.delenv(name)


@pytest.fixture
def invalid_names_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names under .invalid (RFC 6761) fail to resolve at once, as a resolver's NXDOMAIN does:
    with no nameserver reachable, getaddrinfo may take 10 s or more to give up."""
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.rstrip(".").endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


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
