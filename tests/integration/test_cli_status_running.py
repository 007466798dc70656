"""`golden-press status` on sagas that are still running (issue 17; issue 13: 13 for redeem).

A completed saga is the easy case; status exists for the one that is stuck. These hold a saga in
a step that keeps failing (tests.helpers.faults.OutageFaults) and check that status, by workflow
id and by ticket id, shows the running saga, its current step, its attempts and the step's last
error, and the completed saga once the outage ends.

What status can show differs by kind of step (workflows/saga.py):
- reserve/sign/finalise retry as ONE activity (BOUNDED_RETRY): the `progress` query records no
  last_error for them, so the error and attempts come from the pending activity in describe.
- forward steps (ledger_append, publish, redeem, revoke, compensate) retry in rounds of
  ROUND_RETRY.maximum_attempts activities with a pause between rounds: the `progress` query
  holds the last error and the attempts of the failed rounds from the first failed round on;
  the pending activity exists only during a round and restarts at 1 with every round, so
  `attempts` is the two added.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client

from golden_press.sagas import issue_workflow_id, redeem_workflow_id, ticket_id_for
from service.cli.app import run
from service.cli.client import EXIT_REJECTED, EXIT_STILL_RUNNING
from tests.helpers.api import point_cli_at, served_api
from tests.helpers.envelope import run_doc
from tests.helpers.faults import OUTAGE, OutageFaults, outage_message
from tests.helpers.servers import Servers
from tests.helpers.stack import Stack, golden_stack
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def cli_stack(
    servers: Servers,
    session_dir: Path,
    client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Stack, OutageFaults]]:
    """A stack whose worker obeys a fault plan the test changes, and the CLI pointed at it."""
    faults = OutageFaults()
    async with (
        golden_stack(servers, session_dir, client, faults=faults) as stack,
        served_api(stack) as api,
    ):
        point_cli_at(monkeypatch, stack, api.address, tmp_path)
        try:
            yield stack, faults
        finally:
            faults.plan.clear()  # a failed assertion must not leave a saga retrying forever


async def saga_status(
    capsys: pytest.CaptureFixture[str], subject: str, workflow_id: str
) -> dict[str, Any]:
    """`status SUBJECT --json`: the latest run of `workflow_id` among the sagas it lists."""
    code, doc = await run_doc(capsys, "status", subject)
    assert code == 0, doc
    runs = [saga for saga in doc["sagas"] if saga["workflow_id"] == workflow_id]
    assert runs, doc
    return runs[-1]


async def test_status_shows_a_bounded_step_in_its_retries(
    cli_stack: tuple[Stack, OutageFaults], capsys: pytest.CaptureFixture[str]
) -> None:
    """sign fails on every attempt: status shows the step, its attempts and the error, by
    workflow id and by ticket id; once the outage ends the same saga shows completed.

    The progress query records no error for sign: what status shows is the pending activity's
    attempt and last failure. BOUNDED_RETRY gives sign 6 attempts (~6 s) before the saga
    compensates, so the checks run between the second attempt and the clear; a saga that
    compensated instead fails the end.
    """
    stack, faults = cli_stack
    faults.plan["sign"] = OUTAGE
    request_id = f"st-{uuid.uuid4().hex[:8]}"
    wid, tid = issue_workflow_id(request_id), str(ticket_id_for(request_id))
    code, doc = await run_doc(
        capsys, "issue", "--user", "stella", "--request-id", request_id, "--no-wait"
    )
    assert code == 0 and doc["saga"]["workflow_id"] == wid, doc

    seen: dict[str, Any] = {}

    async def retrying() -> bool:
        seen.update(await saga_status(capsys, wid, wid))
        return (seen["attempts"] or 0) >= 2

    await wait_until(retrying, timeout=5)
    by_ticket = await saga_status(capsys, tid, wid)
    capsys.readouterr()
    assert await run(["status", wid]) == 0  # the text view of the same saga
    text = capsys.readouterr().out
    faults.plan.clear()
    assert re.search(r"^  status +running$", text, re.M), text
    assert re.search(r"^  step +sign$", text, re.M), text
    assert re.search(rf"^  last error +{outage_message('sign')}$", text, re.M), text
    assert re.search(r"^  attempts +[2-6]$", text, re.M), text
    assert re.search(r"^  pending +sign_ticket \(\w+, attempt [2-6]\)$", text, re.M), text

    for saga in (seen, by_ticket):
        assert saga["status"] == "running" and saga["outcome"] is None, saga
        assert saga["current_step"] == "sign" and saga["steps_done"] == ["reserve"], saga
        assert saga["attempts"] >= 2, saga
        assert saga["last_error"] == outage_message("sign"), saga
        pending = saga["pending_activity"]
        assert pending["activity"] == "sign_ticket" and pending["attempt"] == saga["attempts"]
        assert pending["last_failure"] == outage_message("sign"), saga

    result = await asyncio.wait_for(stack.client.get_workflow_handle(wid).result(), 30)
    assert result["outcome"] == "issued", result
    done = await saga_status(capsys, tid, wid)
    assert done["status"] == "completed" and done["outcome"] == "issued", done
    assert done["current_step"] == "done" and done["pending_activity"] is None, done
    assert done["steps_done"] == ["reserve", "sign", "finalise", "ledger_append", "publish"]
    assert done["last_error"] is None and done["attempts"] is None, done


async def issued_ticket(capsys: pytest.CaptureFixture[str], user: str) -> str:
    """A ticket issued through the CLI (no fault in the plan yet): its id."""
    code, doc = await run_doc(capsys, "issue", "--user", user)
    assert code == 0 and doc["ticket"]["state"] == "issued", doc
    return str(doc["ticket"]["ticket_id"])


async def test_status_shows_a_forward_step_in_its_retries(
    cli_stack: tuple[Stack, OutageFaults], capsys: pytest.CaptureFixture[str]
) -> None:
    """redeem (past the point of no return) fails on every attempt: `status TICKET` shows the
    redemption running at redeem with the step's last error; after the outage, redeemed.

    A forward step's error and its failed attempts are in the progress query from its first
    failed round on (the error with its type: `InjectedOutage: ...`). Its pending activity
    exists only within a round (attempt 1, then 2 after 200 ms), so while the saga pauses
    between rounds the attempts shown are the failed rounds' (2 per round) and the error is the
    query's: the state this waits for. Samples taken within a round show the redeem activity at
    attempt 1 or 2, added to the earlier rounds' attempts.
    """
    stack, faults = cli_stack
    tid = await issued_ticket(capsys, "rhea")
    wid = redeem_workflow_id(tid)
    faults.plan["redeem"] = OUTAGE
    code, doc = await run_doc(capsys, "redeem", tid, "--user", "rhea", "--no-wait")
    assert code == 0 and doc["saga"] == {"workflow_id": wid, "pending": True}, doc

    seen: list[dict[str, Any]] = []

    async def between_rounds() -> bool:
        seen.append(await saga_status(capsys, tid, wid))
        return seen[-1]["last_error"] is not None and seen[-1]["pending_activity"] is None

    # Between rounds there is no pending activity: the error shown is the progress query's.
    await wait_until(between_rounds, timeout=10)
    saga = seen[-1]
    assert saga["status"] == "running" and saga["outcome"] is None, saga
    assert saga["current_step"] == "redeem" and saga["attempts"] >= 2, saga
    assert saga["attempts"] % 2 == 0, saga  # whole rounds of ROUND_RETRY's 2 attempts
    assert saga["steps_done"] == ["verify_signature", "verify_proof"], saga
    assert saga["last_error"] == f"InjectedOutage: {outage_message('redeem')}", saga
    for each in seen:
        pending = each["pending_activity"]
        if pending is not None:  # within a round: the redeem activity, 1 or 2 attempts
            assert pending["activity"] == "redeem_ticket" and pending["attempt"] in (1, 2), each
            assert each["attempts"] >= pending["attempt"], each
            assert (each["attempts"] - pending["attempt"]) % 2 == 0, each
            assert each["status"] == "running" and each["current_step"] == "redeem", each
    faults.plan.clear()

    result = await asyncio.wait_for(stack.client.get_workflow_handle(wid).result(), 30)
    assert result["outcome"] == "redeemed", result
    done = await saga_status(capsys, tid, wid)
    assert done["status"] == "completed" and done["outcome"] == "redeemed", done
    assert done["current_step"] == "done" and done["pending_activity"] is None, done
    assert done["steps_done"] == ["verify_signature", "verify_proof", "redeem", "publish"], done


async def test_redeem_past_its_deadline_says_still_running_and_names_status(
    cli_stack: tuple[Stack, OutageFaults], capsys: pytest.CaptureFixture[str]
) -> None:
    """A redemption whose deadline passes while its saga retries is not an outage: StillRunning
    (exit 4, README), `golden-press status TICKET` as what to do next, and the saga goes on."""
    stack, faults = cli_stack
    tid = await issued_ticket(capsys, "rowan")
    wid = redeem_workflow_id(tid)
    faults.plan["redeem"] = OUTAGE
    code, doc = await run_doc(capsys, "redeem", tid, "--user", "rowan", "--timeout", "2")
    assert code == EXIT_STILL_RUNNING == 4, doc
    assert doc["error"]["reason"] == "StillRunning", doc
    assert doc["error"]["message"] == (
        f"still running: workflow {wid}; `golden-press status {tid}` follows it"
    )
    # README: a second redeem while one runs is RedemptionInProgress (it does not start another)
    code, doc = await run_doc(capsys, "redeem", tid, "--user", "rowan", "--timeout", "2")
    assert code == EXIT_REJECTED and doc["error"]["reason"] == "RedemptionInProgress", doc

    saga = await saga_status(capsys, tid, wid)  # the hint works: it names the running saga
    assert saga["status"] == "running" and saga["current_step"] == "redeem", saga
    faults.plan.clear()
    result = await asyncio.wait_for(stack.client.get_workflow_handle(wid).result(), 30)
    assert result["outcome"] == "redeemed", result
