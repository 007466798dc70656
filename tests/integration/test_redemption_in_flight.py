"""A redemption held at publish (its NATS down) is visible and queryable, then completes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus

from golden_press.models import Outcome, RedeemTicketInput
from golden_press.sagas import redeem_workflow_id
from service.devstack.servers import NatsServer
from tests.helpers.servers import Servers, temporal_binary
from tests.helpers.stack import golden_stack
from workflows.redeem_ticket import RedeemTicketWorkflow


async def test_redemption_waits_at_publish_while_nats_is_down(
    servers: Servers, session_dir: Path, client: Client
) -> None:
    own_nats = await asyncio.to_thread(NatsServer.start, session_dir / "nats-outage")
    try:
        own = dataclasses.replace(servers, nats_url=own_nats.url)
        async with golden_stack(own, session_dir, client) as stack:
            issued = await stack.issue("patient")
            assert issued.ticket_id is not None
            bundle = await stack.bundle_for(issued.ticket_id)

            await asyncio.to_thread(own_nats.stop)
            handle = await client.start_workflow(
                RedeemTicketWorkflow.run,
                RedeemTicketInput(ticket_id=issued.ticket_id, user_id="patient", bundle=bundle),
                id=redeem_workflow_id(issued.ticket_id),
                task_queue=stack.settings.task_queue,
            )
            for _ in range(200):
                progress = await handle.query(RedeemTicketWorkflow.progress)
                if progress.current_step == "publish":
                    break
                await asyncio.sleep(0.1)
            assert progress.current_step == "publish"
            assert progress.steps_done == ["verify_signature", "verify_proof", "redeem"]

            listed = subprocess.run(
                [
                    temporal_binary(),
                    "workflow",
                    "list",
                    "--address",
                    stack.settings.temporal_address,
                    "--output",
                    "json",
                    "--query",
                    f"GoldenSagaStep='publish' AND GoldenTicketId='{issued.ticket_id}'",
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            rows = json.loads(listed.stdout or "[]")
            assert [r["execution"]["workflowId"] for r in rows] == [handle.id]
            desc = await handle.describe()
            assert desc.status == WorkflowExecutionStatus.RUNNING
            attrs = {p.key.name: p.value for p in desc.typed_search_attributes}
            assert attrs["GoldenUserId"] == "patient"
            assert attrs["GoldenSagaStep"] == "publish"

            await asyncio.to_thread(own_nats.start_again)
            result = await asyncio.wait_for(handle.result(), 60)
            assert result.outcome == Outcome.REDEEMED
            assert len(await stack.stream_messages("redeemed")) == 1
            assert len(await stack.stream_messages("issued")) == 1
    finally:
        await asyncio.to_thread(own_nats.stop)
