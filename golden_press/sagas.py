"""The identity of every saga, in one place: workflow type names, workflow ids, search attributes.

The API, the CLI, the worker, the dev stack and docker-compose's registration step all take these
names from here, so a workflow id the CLI computes is the one the worker's run has, and the search
attributes the dev stack registers are the ones the workflows upsert. Workflow types are referred
to by name so that clients never import workflow code.
"""

from __future__ import annotations

import uuid

from temporalio.common import SearchAttributeKey

#: Workflow type names (the class names in workflows/).
ISSUE_WORKFLOW = "IssueTicketWorkflow"
REDEEM_WORKFLOW = "RedeemTicketWorkflow"
REVOKE_WORKFLOW = "RevokeTicketWorkflow"
RECONCILE_WORKFLOW = "ReconcileReservationsWorkflow"

#: Temporal visibility query of the golden sagas (issue, redeem, revoke) without the reconciler's
#: runs, which its Schedule starts every 30 s: the Web UI view the demo links to.
SAGAS_VIEW_QUERY = f'WorkflowType != "{RECONCILE_WORKFLOW}"'

#: The reconciler's Temporal Schedule id (suffixed with the task queue it serves).
RECONCILE_SCHEDULE_ID = "golden-press-reconciler"

#: ticket_id = uuid5(TICKET_NAMESPACE, request_id): every run and retry writes the same row.
TICKET_NAMESPACE = uuid.UUID("5b1f7e1c-3a57-4d1e-9f5c-601de0000002")


def ticket_id_for(request_id: str) -> uuid.UUID:
    """Deterministic ticket id of an issuance request."""
    return uuid.uuid5(TICKET_NAMESPACE, request_id)


def issue_workflow_id(request_id: str) -> str:
    """Workflow id of an issuance (the interface sheet's `issue-<request_id>`)."""
    return f"issue-{request_id}"


def redeem_workflow_id(ticket_id: uuid.UUID | str) -> str:
    """Workflow id of a redemption (`redeem-<ticket_id>`)."""
    return f"redeem-{ticket_id}"


def revoke_workflow_id(ticket_id: uuid.UUID | str) -> str:
    """Workflow id of a revocation (`revoke-<ticket_id>`): a second revoke joins the first."""
    return f"revoke-{ticket_id}"


def ids_from_workflow_id(workflow_id: str) -> dict[str, str]:
    """The request and ticket a saga's workflow id names (what its log lines carry), if any."""
    if workflow_id.startswith("issue-"):
        request_id = workflow_id.removeprefix("issue-")
        return {"request_id": request_id, "ticket_id": str(ticket_id_for(request_id))}
    for prefix in ("redeem-", "revoke-"):
        if workflow_id.startswith(prefix):
            return {"ticket_id": workflow_id.removeprefix(prefix)}
    return {}


def reconcile_workflow_id(task_queue: str) -> str:
    """Workflow id of the reconciler's scheduled runs (`reconcile-<task_queue>`)."""
    return f"reconcile-{task_queue}"


def reconcile_schedule_id(task_queue: str) -> str:
    """Schedule id of the reconciler serving one task queue."""
    return f"{RECONCILE_SCHEDULE_ID}-{task_queue}"


#: Custom search attributes that make in-flight sagas findable in the Temporal Web UI.
TICKET_ID = SearchAttributeKey.for_keyword("GoldenTicketId")
USER_ID = SearchAttributeKey.for_keyword("GoldenUserId")
SAGA_STEP = SearchAttributeKey.for_keyword("GoldenSagaStep")
OUTCOME = SearchAttributeKey.for_keyword("GoldenOutcome")

ALL = (TICKET_ID, USER_ID, SAGA_STEP, OUTCOME)

#: Name -> Temporal indexed value type, for registering them (dev stack, compose, operators).
SEARCH_ATTRIBUTES: dict[str, str] = {key.name: "Keyword" for key in ALL}
