"""The demo's Web UI link to the golden sagas, run against a real Temporal server's visibility."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from golden_press.models import Outcome
from golden_press.sagas import (
    ISSUE_WORKFLOW,
    RECONCILE_WORKFLOW,
    REDEEM_WORKFLOW,
    SAGAS_VIEW_QUERY,
    issue_workflow_id,
    reconcile_schedule_id,
    redeem_workflow_id,
)
from service.cli.output import sagas_view_url
from tests.helpers.stack import Stack
from tests.helpers.waiting import wait_until
from worker import ensure_reconciler_schedule

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_sagas_view_lists_the_golden_sagas_and_hides_the_reconciler_runs(
    stack: Stack,
) -> None:
    """The visibility query of the URL the demo prints, given to list_workflows: the issuance and
    redemption sagas are there, the reconciler's runs (scheduled and ad hoc) are not."""
    client, task_queue = stack.client, stack.settings.task_queue
    issued = await stack.issue("view-alice", "view-1")
    assert issued.outcome == Outcome.ISSUED and issued.ticket_id is not None
    await stack.redeem(issued.ticket_id, "view-alice", await stack.bundle_for(issued.ticket_id))
    await stack.reconcile()  # an ad hoc run, the way an operator would start one
    # The worker's Schedule, with one run now (its own 30 s would make the test wait).
    await ensure_reconciler_schedule(client, task_queue, every=timedelta(hours=1))
    schedule = client.get_schedule_handle(reconcile_schedule_id(task_queue))
    try:
        await schedule.trigger()
        url = sagas_view_url("http://127.0.0.1:8233", client.namespace)
        assert urlsplit(url).path == f"/namespaces/{client.namespace}/workflows"
        [query] = parse_qs(urlsplit(url).query)["query"]
        assert query == SAGAS_VIEW_QUERY
        # The session's Temporal serves every test: only this stack's task queue counts.
        mine = f'TaskQueue = "{task_queue}"'

        async def listed(where: str) -> list[tuple[str, str]]:
            return sorted([(w.workflow_type, w.id) async for w in client.list_workflows(where)])

        sagas = [
            (ISSUE_WORKFLOW, issue_workflow_id("view-1")),
            (REDEEM_WORKFLOW, redeem_workflow_id(issued.ticket_id)),
        ]

        async def all_four_listed() -> bool:  # visibility is eventually consistent
            everything = await listed(mine)
            runs = [t for t, _ in everything].count(RECONCILE_WORKFLOW)
            return runs == 2 and set(sagas) <= set(everything)

        await wait_until(all_four_listed)
        view = await listed(f"({query}) AND {mine}")
        assert view == sorted(sagas), view
    finally:
        await schedule.delete()
