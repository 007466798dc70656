"""Custom search attributes that make in-flight sagas findable in the Temporal Web UI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

TICKET_ID = SearchAttributeKey.for_keyword("GoldenTicketId")
USER_ID = SearchAttributeKey.for_keyword("GoldenUserId")
SAGA_STEP = SearchAttributeKey.for_keyword("GoldenSagaStep")
OUTCOME = SearchAttributeKey.for_keyword("GoldenOutcome")

ALL = (TICKET_ID, USER_ID, SAGA_STEP, OUTCOME)
