"""`golden-press status ID`: where a saga is, from Temporal (a ticket id or a workflow id).

A ticket id stands for every saga of that ticket: its issuance (`issue-<request_id>`, the request
id read through the API), redemption (`redeem-<id>`) and revocation (`revoke-<id>`), each with
every run of its id (a refused redemption attempt is a later run of `redeem-<id>`). For each
saga: the workflow's status, the `progress` query (steps done, current step, last error) and the
pending activity from describe (its attempts and last failure), which is where a stuck saga shows
why it is stuck. Closed workflows answer the query only while a worker runs; then the search
attributes (GoldenSagaStep, GoldenOutcome) stand in.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import timedelta
from typing import Any

from golden_press import sagas as sa
from golden_press.models import Progress
from service.cli.client import EXIT_REJECTED, EXIT_UNAVAILABLE, Api, CliError, settings
from service.cli.output import colour, emit_json

QUERY_TIMEOUT = timedelta(seconds=5)


async def saga_ids(api: Api, subject: str) -> list[str]:
    """The workflow ids a subject names: itself, or every saga of a ticket id."""
    try:
        ticket_id = uuid.UUID(subject)
    except ValueError:
        return [subject]
    ids = []
    try:
        resp = await api.call("GetTicket", api.pb.GetTicketRequest(ticket_id=str(ticket_id)))
        ids.append(sa.issue_workflow_id(resp.ticket.request_id))
    except CliError as err:
        if err.code == EXIT_UNAVAILABLE:
            raise
    ids += [sa.redeem_workflow_id(ticket_id), sa.revoke_workflow_id(ticket_id)]
    return ids


def _attempts(progress: Progress | None, pending: dict[str, Any] | None) -> int | None:
    """Attempts of the current step so far: its earlier failed rounds (progress) plus the
    pending activity's attempt; None when the step has not failed and nothing is pending."""
    earlier = progress.failed_attempts if progress else 0
    now = int(pending["attempt"]) if pending else 0
    return earlier + now or None


def _when(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def saga_runs(client: Any, workflow_id: str) -> list[dict[str, Any]]:
    """Every run of a workflow id, oldest first ([] when there is none).

    A closed saga's id may be started again: each redemption attempt runs `redeem-<ticket_id>`,
    so the run that redeemed a ticket is followed by the runs that were refused AlreadyRedeemed.
    Describing only the latest run would show a refusal and hide the redemption.
    """
    latest = await describe_saga(client, workflow_id)
    if latest is None:
        return []
    runs = {latest["run_id"]: latest}
    if "'" not in workflow_id and "\\" not in workflow_id:  # quoted safely in the query
        async for listed in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
            if listed.run_id not in runs:
                doc = await describe_saga(client, workflow_id, listed.run_id)
                if doc is not None:
                    runs[listed.run_id] = doc
    return sorted(runs.values(), key=lambda doc: doc["started_at"] or "")


async def describe_saga(
    client: Any, workflow_id: str, run_id: str | None = None
) -> dict[str, Any] | None:
    """One saga run's status document (the latest run by default), or None when there is none."""
    from temporalio.api.enums.v1 import PendingActivityState
    from temporalio.service import RPCError, RPCStatusCode

    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        desc = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    attrs = desc.typed_search_attributes
    progress: Progress | None = None
    try:
        progress = await handle.query("progress", result_type=Progress, rpc_timeout=QUERY_TIMEOUT)
    except Exception:  # no worker to answer for a closed run, or an old history
        progress = None
    pending = None
    raw = desc.raw_description.pending_activities
    if raw:
        act = raw[0]
        pending = {
            "activity": act.activity_type.name,
            "attempt": act.attempt,
            "state": PendingActivityState.Name(act.state)
            .removeprefix("PENDING_ACTIVITY_STATE_")
            .lower(),
            "last_failure": act.last_failure.message or None,
        }
    step = progress.current_step if progress else (attrs.get(sa.SAGA_STEP) or "")
    last_error = (progress.last_error if progress else "") or (
        pending["last_failure"] if pending else ""
    )
    return {
        "workflow_id": workflow_id,
        "run_id": desc.run_id,
        "workflow_type": desc.workflow_type,
        "status": desc.status.name.lower() if desc.status else "unknown",
        "current_step": step,
        "steps_done": progress.steps_done if progress else None,
        "last_error": last_error or None,
        "attempts": _attempts(progress, pending),
        "pending_activity": pending,
        "outcome": attrs.get(sa.OUTCOME),
        "started_at": _when(desc.start_time),
        "closed_at": _when(desc.close_time),
    }


async def cmd_status(api: Api, args: argparse.Namespace) -> int:
    """Print the sagas of a ticket id or one workflow id."""
    from service.sagas.client import connect_client

    ids = await saga_ids(api, args.subject)
    s = settings()
    if api.endpoint.temporal:
        s = s.model_copy(update={"temporal_address": api.endpoint.temporal})
    client = await connect_client(s)  # Unreachable: Unavailable, in run_async
    found = [doc for wid in ids for doc in await saga_runs(client, wid)]
    if not found:
        raise CliError(
            "SagaNotFound",
            f"no saga for {args.subject} (looked for {', '.join(ids)})",
            EXIT_REJECTED,
        )
    if args.json:
        emit_json({"sagas": found})
        return 0
    for doc in found:
        runs = sum(1 for other in found if other["workflow_id"] == doc["workflow_id"])
        run = f"  run {doc['run_id']}" if runs > 1 else ""
        print(colour(f"{doc['workflow_id']}  ({doc['workflow_type']}){run}", "bold"))
        rows = [
            ("status", doc["status"]),
            ("step", doc["current_step"] or "-"),
            ("steps done", ", ".join(doc["steps_done"] or []) or "-"),
            ("outcome", doc["outcome"] or "-"),
            ("last error", doc["last_error"] or "-"),
            ("attempts", doc["attempts"] or "-"),
        ]
        if doc["pending_activity"]:
            act = doc["pending_activity"]
            pending = f"{act['activity']} ({act['state']}, attempt {act['attempt']})"
            rows.append(("pending", pending))
        print("\n".join(f"  {k:<11} {v}" for k, v in rows))
    return 0
