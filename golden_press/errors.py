"""The error vocabulary: stable reason types shared by activities, workflows, gRPC and CLI."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ValidationError


class Reason(StrEnum):
    """Stable `type` strings: tests, the API and the CLI match on these, so never rename one."""

    INVALID_REQUEST = "InvalidRequest"
    UNAUTHENTICATED = "Unauthenticated"
    RATE_LIMITED = "RateLimited"
    USER_DENIED = "UserDenied"
    ONE_PER_USER = "OnePerUser"
    CAP_REACHED = "CapReached"
    IDEMPOTENCY_KEY_REUSED = "IdempotencyKeyReused"
    TICKET_NOT_FOUND = "TicketNotFound"
    TICKET_NOT_REDEEMABLE = "TicketNotRedeemable"
    BAD_SIGNATURE = "BadSignature"
    BAD_PROOF = "BadProof"
    BAD_CHECKPOINT = "BadCheckpoint"
    INCONSISTENT_CHECKPOINT = "InconsistentCheckpoint"
    NOT_ISSUEE = "NotIssuee"
    ALREADY_REDEEMED = "AlreadyRedeemed"
    REDEMPTION_IN_PROGRESS = "RedemptionInProgress"


class GoldenError(Exception):
    """A business rejection with a stable reason type; never a bug."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


class InvalidRequest(GoldenError):
    """Bad input: rejected before anything is written."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.INVALID_REQUEST, message)


def one_line(exc: ValidationError) -> str:
    """A pydantic error as one readable line: the first problem, and how many more there are."""
    errors = exc.errors()
    if not errors:
        return str(exc).splitlines()[0]
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "value"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


#: Reasons a workflow reports as a completed `rejected` outcome rather than a failure.
BUSINESS_REASONS: frozenset[str] = frozenset(r.value for r in Reason)
