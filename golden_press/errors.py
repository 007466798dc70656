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


#: Exit codes shared by the CLI, the starters, the API and the worker.
EXIT_USAGE = 2  # a command line, a setting or a file that cannot work as given
EXIT_UNAVAILABLE = 3  # a server it needs could not be reached


class Unreachable(ConnectionError):
    """A server this process needs (PostgreSQL, Temporal, NATS) could not be connected to.

    One line naming the server, where it was looked for (a DSN with its password masked) and
    why, for a log or a terminal: a process started before its dependencies says so plainly
    instead of leaving a traceback. A ConnectionError, so callers that report an OSError as
    "unavailable" keep doing so.
    """

    MAX_DETAIL = 300

    def __init__(self, server: str, where: str, cause: BaseException) -> None:
        detail = " ".join(str(cause).split()) or type(cause).__name__
        if len(detail) > self.MAX_DETAIL:
            detail = detail[: self.MAX_DETAIL - 3] + "..."
        super().__init__(f"cannot connect to {server} at {where}: {detail}")
        self.server = server
        self.where = where


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
