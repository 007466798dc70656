"""Replay every recorded saga history against today's workflow code: non-determinism fails CI.

Re-record with `python -m tests.replay.record` after an intended change (guarded by
`workflow.patched` while old executions may still be running).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from tests.replay.changed_workflows import (
    PatchedIssueTicketWorkflow,
    SignFirstIssueTicketWorkflow,
)
from worker import WORKFLOWS

HISTORIES = Path(__file__).resolve().parent / "histories"
#: Every saga path the issue asks for; a missing file means the recorder lost a path.
EXPECTED = {
    "issue_ok",
    "issue_cap_reached",
    "issue_rule_rejected_one_per_user",
    "issue_rule_rejected_deny_list",
    "issue_compensated",
    "issue_reservation_expired",
    "reconcile_voided_expired",
    "redeem_ok",
    "redeem_rejected_bad_signature",
    "redeem_rejected_bad_proof",
    "redeem_rejected_bad_checkpoint",
    "redeem_rejected_inconsistent_checkpoint",
    "redeem_rejected_not_issuee",
    "redeem_rejected_unknown_ticket",
    "redeem_rejected_already_redeemed",
    "redeem_rejected_not_redeemable",
    "revoke_ok",
}

pytestmark = pytest.mark.asyncio(loop_scope="session")


def history(name: str) -> WorkflowHistory:
    """A committed history; the workflow id is the file name (replay does not care)."""
    return WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text())


async def test_every_saga_path_is_recorded() -> None:
    assert {p.stem for p in HISTORIES.glob("*.json")} >= EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_history_replays_against_current_code(name: str) -> None:
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history(name), raise_on_replay_failure=True)
    assert result.replay_failure is None


async def test_all_histories_replay_in_one_pass() -> None:
    """What CI's one-liner would do: every committed file, whatever its name."""
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    files = sorted(HISTORIES.glob("*.json"))

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for p in files:
            yield WorkflowHistory.from_json(p.stem, p.read_text())

    results = await replayer.replay_workflows(
        histories(),
        raise_on_replay_failure=False,
    )
    failures = {k: str(v) for k, v in results.replay_failures.items() if v is not None}
    assert failures == {}


# ---- the guard itself: a changed workflow must not replay, a patched one must ------------------


async def test_unguarded_change_fails_replay() -> None:
    replayer = Replayer(
        workflows=[SignFirstIssueTicketWorkflow], data_converter=pydantic_data_converter
    )
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(history("issue_ok"))


async def test_patched_change_replays() -> None:
    replayer = Replayer(
        workflows=[PatchedIssueTicketWorkflow], data_converter=pydantic_data_converter
    )
    for name in ("issue_ok", "issue_compensated", "issue_cap_reached"):
        await replayer.replay_workflow(history(name))
