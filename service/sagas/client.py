"""The one way every process connects to Temporal (API, CLI, starter, worker, dev stack)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from golden_press.settings import Settings


async def connect_client(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A Temporal client with the pydantic data converter the worker uses."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )


__all__ = ["connect_client"]
