"""Minimal starter: redeem a Golden Ticket through the Temporal client.

    python -m starter.redeem_ticket TICKET_ID --user alice --bundle bundle.json

The bundle is the holder's proof (`golden-press proof TICKET_ID -o bundle.json`). Starts
`RedeemTicketWorkflow` with id `redeem-<ticket_id>` through service.sagas.admission; a second
redemption of the same ticket while one runs is refused with RedemptionInProgress. Settings come
from the environment, as for starter/issue_ticket.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from golden_press.errors import GoldenError
from service.sagas.admission import Admission
from service.sagas.client import connect_client
from service.sagas.runs import SagaFailed
from service.store.db import create_pool
from starter.environment import EXIT_USAGE, run_starter, settings_from_environment


async def redeem(ticket_id: str, user_id: str, bundle_json: str) -> int:
    """Run one redemption and print where it landed in the ledger."""
    settings = settings_from_environment()
    if settings is None:
        return EXIT_USAGE
    client = await connect_client(settings)
    pool = await create_pool(settings.pg_dsn, min_size=1, max_size=2)
    try:
        async with Admission.from_settings(settings, pool, client) as admission:
            result = await admission.redeem(ticket_id, user_id, bundle_json)
    except GoldenError as err:
        print(f"error: {err.reason.value}: {err.message}", file=sys.stderr)
        return 1
    except SagaFailed as err:
        print(f"error: SagaFailed: {err}", file=sys.stderr)
        return 1
    finally:
        await pool.close()
    print(f"ticket {result.ticket_id} redeemed by {user_id} (ledger leaf {result.leaf_index})")
    return 0


def main() -> None:
    """Parse arguments, run, exit with os._exit (the SDK may crash at interpreter exit)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ticket_id")
    parser.add_argument("--user", required=True)
    parser.add_argument("--bundle", required=True, type=Path)
    args = parser.parse_args()
    run_starter(redeem(args.ticket_id, args.user, args.bundle.read_text()))


if __name__ == "__main__":
    main()
