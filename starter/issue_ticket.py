"""Minimal starter: mint a Golden Ticket through the Temporal client. Copy this file to begin.

    python -m starter.issue_ticket --user alice [--request-id my-key]

It uses the same admission module as the gRPC API (service.sagas.admission), so the rules are
the same:
validate -> request_id lookup -> deny-list and rate limit -> sold-out flag -> in-flight gate ->
start `IssueTicketWorkflow` (id `issue-<request_id>`) and wait for its result. A rejection prints
`error: <Reason>: <message>` and exits 1. Connection settings come from the environment
(GOLDEN_PG_DSN, TEMPORAL_ADDRESS, GOLDEN_TASK_QUEUE, ...; `golden-press dev up` prints them).
TLS: Temporal through the SDK's TEMPORAL_TLS_* / TEMPORAL_API_KEY variables, PostgreSQL through
the DSN's sslmode; through the gRPC API instead (TLS flags, bearer token): starter/issue_via_api.py.
"""

from __future__ import annotations

import argparse
import sys

from golden_press.errors import GoldenError
from service.sagas.admission import Admission, new_request_id
from service.sagas.client import connect_client
from service.sagas.runs import SagaFailed
from service.store.db import create_pool
from starter.environment import EXIT_USAGE, run_starter, settings_from_environment


async def issue(user_id: str, request_id: str) -> int:
    """Admit one request and print the ticket."""
    settings = settings_from_environment()
    if settings is None:
        return EXIT_USAGE
    client = await connect_client(settings)
    pool = await create_pool(settings.pg_dsn, min_size=1, max_size=2)
    try:
        async with Admission.from_settings(settings, pool, client) as admission:
            outcome = await admission.issue(user_id, request_id)
    except GoldenError as err:
        print(f"error: {err.reason.value}: {err.message}", file=sys.stderr)
        return 1
    except SagaFailed as err:
        print(f"error: SagaFailed: {err}", file=sys.stderr)
        return 1
    finally:
        await pool.close()
    ticket = outcome.ticket
    print(f"ticket {ticket.ticket_id} serial {ticket.serial} for {ticket.user_id}")
    print(f"  signature {ticket.signature} (key {ticket.key_id})")
    print(f"  workflow {outcome.workflow_id}{' (earlier result)' if outcome.replayed else ''}")
    return 0


def main() -> None:
    """Parse arguments, run, exit with os._exit (the SDK may crash at interpreter exit)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", required=True)
    parser.add_argument("--request-id", default=None, help="idempotency key (default: fresh)")
    args = parser.parse_args()
    run_starter(issue(args.user, args.request_id or new_request_id()))


if __name__ == "__main__":
    main()
