"""Starting, joining and awaiting sagas, and the one mapping of a saga's end to the caller's error.

Admission (service.sagas.admission) decides whether a request may start a saga at all; this module
only talks to Temporal. A business rejection becomes the GoldenError of its reason type; a reason
type this build does not know is a bug (SagaFailed), never silently some other rejection.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import ValidationError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from golden_press.errors import GoldenError, InvalidRequest, Reason
from golden_press.models import RevokeTicketInput, RevokeTicketResult
from golden_press.sagas import REVOKE_WORKFLOW, revoke_workflow_id
from golden_press.settings import Settings
from service.sagas.client import connect_client


class SagaFailed(Exception):
    """A saga that was neither a success nor a rejection: never the caller's fault."""

    def __init__(self, workflow_id: str, message: str) -> None:
        super().__init__(f"{workflow_id}: {message}")
        self.workflow_id = workflow_id
        self.message = message


def rejection(workflow_id: str, value: str, message: str) -> GoldenError | SagaFailed:
    """The caller's error for a rejected saga; an unknown reason type is a bug, not a rejection."""
    try:
        reason = Reason(value)
    except ValueError:
        return SagaFailed(workflow_id, f"rejected with unknown reason {value!r}: {message}")
    return GoldenError(reason, message or reason.value)


def quote(value: object, limit: int = 100) -> str:
    """Caller input for an error message: repr'd, at most `limit` characters of it."""
    text = str(value)
    return repr(text[:limit]) + (f"... ({len(text)} characters)" if len(text) > limit else "")


def parse_ticket_id(value: str | UUID) -> UUID:
    """A ticket id as a UUID, or InvalidRequest."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except (ValueError, AttributeError, TypeError) as exc:
        raise InvalidRequest(f"ticket_id must be a UUID, got {quote(value)}") from exc


async def revoke_ticket(
    settings: Settings, ticket_id: str | UUID, reason: str
) -> RevokeTicketResult:
    """Run RevokeTicketWorkflow (`revoke-<ticket_id>`): state, `revoked` ledger entry, event.

    Revocation is a saga on the worker, not SQL here, because it appends to the ledger and
    publishes GoldenTicketRevoked; a rejection raises GoldenError with the workflow's reason.
    """
    tid = parse_ticket_id(ticket_id)
    try:
        request = RevokeTicketInput(ticket_id=tid, reason=reason)
    except ValidationError as exc:
        raise InvalidRequest(
            "a revocation needs a reason of 1-200 characters without control characters"
        ) from exc
    client = await connect_client(settings)
    workflow_id = revoke_workflow_id(tid)
    result: RevokeTicketResult = await client.execute_workflow(
        REVOKE_WORKFLOW,
        request,
        id=workflow_id,
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        result_type=RevokeTicketResult,
    )
    if result.outcome != "revoked":
        why = result.message or f"ticket {tid} cannot be revoked"
        raise rejection(workflow_id, result.reason, why)
    return result


__all__ = ["SagaFailed", "parse_ticket_id", "rejection", "revoke_ticket"]
