"""GOLDEN_LOG_LEVEL: the API's `rpc` line for reads and business rejections shows at DEBUG only.

At INFO (the default) a herd's refusals write no line each (the metrics count them); DEBUG is the
switch an operator (or bench_herd's `verbose-log` variant) turns on to see every call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from golden_press.settings import Settings, settings_problem
from service.api.decode import BadRequest
from service.api.servicer import GoldenPressService
from service.observability.logs import OWN_LOGGERS, configure_logging


class _Aborted(Exception):
    """What the fake context's abort_with_status raises (grpc raises its own)."""


class _Context:
    async def abort_with_status(self, status: Any) -> None:
        raise _Aborted(status)


class _RpcLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "rpc":
            self.lines.append(record)


@pytest.fixture
def rpc_lines() -> Iterator[_RpcLines]:
    """Every `rpc` record that passes the level configure_logging set (root restored after)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    own = {name: logging.getLogger(name).level for name in OWN_LOGGERS}
    keep = _RpcLines()
    try:
        yield keep
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, was in own.items():
            logging.getLogger(name).setLevel(was)


@pytest.mark.parametrize(
    ("value", "logged"), [(None, False), ("INFO", False), ("debug", True), ("DEBUG", True)]
)
async def test_a_rejected_call_is_logged_at_debug_only(
    monkeypatch: pytest.MonkeyPatch, rpc_lines: _RpcLines, value: str | None, logged: bool
) -> None:
    if value is not None:
        monkeypatch.setenv("GOLDEN_LOG_LEVEL", value)
    configure_logging(Settings().log_level)  # as the API's and the worker's main() do
    logging.getLogger().addHandler(rpc_lines)
    with pytest.raises(_Aborted):  # a request that could not be decoded: InvalidRequest
        await GoldenPressService.VerifyTicket(
            None,  # type: ignore[arg-type]  # the wrapper refuses it before using the service
            BadRequest("VerifyTicket", "not a VerifyTicketRequest"),  # type: ignore[arg-type]
            _Context(),
        )
    assert len(rpc_lines.lines) == (1 if logged else 0)
    if logged:
        assert rpc_lines.lines[0].levelno == logging.DEBUG


def test_debug_is_ours_only_libraries_stay_at_info(
    monkeypatch: pytest.MonkeyPatch, rpc_lines: _RpcLines
) -> None:
    """GOLDEN_LOG_LEVEL=DEBUG shows golden-press's own debug lines, never a library's: the
    Temporal SDK's debug output carries whole workflow activations (user ids, a redemption's
    bundle and salt)."""
    monkeypatch.setenv("GOLDEN_LOG_LEVEL", "DEBUG")
    configure_logging(Settings().log_level)
    for ours in ("golden_press.api", "service.sagas.admission", "activities.issue_ticket"):
        assert logging.getLogger(ours).isEnabledFor(logging.DEBUG), ours
    for theirs in ("temporalio.worker._workflow", "asyncpg", "nats", "grpc._cython"):
        assert not logging.getLogger(theirs).isEnabledFor(logging.DEBUG), theirs
        assert logging.getLogger(theirs).isEnabledFor(logging.INFO), theirs


def test_an_unknown_level_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOLDEN_LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "GOLDEN_LOG_LEVEL" in settings_problem(info.value)


def test_the_tuning_knobs_default_to_the_tuned_api() -> None:
    """Defaults: no line per refusal, no reset trip, no WAL flush per counter, the memory gate."""
    settings = Settings()
    assert settings.log_level == "INFO"
    assert not settings.pg_pool_reset
    assert not settings.rate_limit_durable
    assert settings.admission_memory_gate
