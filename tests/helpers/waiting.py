"""Waiting for something to become true, and ending workflows the way an operator would."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Poll an async predicate every 0.1 s until it holds (TimeoutError after `timeout`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.1)


def terminate_from_cli(address: str, workflow_id: str, temporal: str) -> None:
    """`temporal workflow terminate`, the way an operator would from a shell."""
    subprocess.run(
        [
            temporal,
            "workflow",
            "terminate",
            "--address",
            address,
            "--workflow-id",
            workflow_id,
            "--reason",
            "reliability test",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
