"""A CLI write whose deadline passes while its saga runs says so (issue 13: 13).

Not "cannot reach the API": the saga goes on, the call says `still running: workflow <id>` with
its own exit code, and the same request retried later joins that saga.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError

from activities.faults import Faults
from service.cli.app import run
from service.cli.client import EXIT_STILL_RUNNING
from tests.helpers.api import point_cli_at, served_api
from tests.helpers.servers import Servers
from tests.helpers.stack import golden_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_issue_past_its_deadline_says_still_running(
    servers: Servers,
    session_dir: Path,
    client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    faults = Faults(plan={"sign": "hang"})
    async with (
        golden_stack(servers, session_dir, client, faults=faults) as stack,
        served_api(stack) as api,
    ):
        point_cli_at(monkeypatch, stack, api.address, tmp_path)
        capsys.readouterr()
        code = await run(
            ["issue", "--user", "slowpoke", "--request-id", "slow-1", "--timeout", "2"]
        )
        err = capsys.readouterr().err
        assert code == EXIT_STILL_RUNNING, err
        assert (
            "still running: workflow issue-slow-1; the same request (--request-id slow-1) joins it"
            in err
        )
        assert "cannot reach" not in err and "Traceback" not in err
        faults.plan.clear()
        handle = stack.client.get_workflow_handle("issue-slow-1")
        await handle.cancel()  # the hung sign step: end the saga so the stack can close
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 60)
