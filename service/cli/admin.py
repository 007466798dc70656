"""Operator verbs: admin set-cap/deny/revoke and the audit."""

from __future__ import annotations

import argparse
import os
from typing import Any

import asyncpg

from golden_press.errors import Unreachable
from service.cli.client import (
    EXIT_UNAVAILABLE,
    CliError,
    Endpoint,
    dev_stack,
    one_error,
    require_dsn,
    settings,
)
from service.cli.output import (
    emit_json,
)


async def cmd_admin(args: argparse.Namespace, endpoint: Endpoint) -> int:
    """Admin verbs go straight to PostgreSQL (they are not part of the public API)."""
    from golden_press.errors import GoldenError
    from service.sagas.runs import revoke_ticket
    from service.store import config as admin

    try:
        if args.admin_verb == "set-cap":
            cap = await admin.set_cap(require_dsn(endpoint.dsn), args.cap, args.scope)
            result: dict[str, Any] = {"cap": {"cap": cap.cap, "scope": cap.scope, "used": cap.used}}
            text = f"cap is now {cap.cap} ({cap.scope}); {cap.used} ticket(s) count against it"
        elif args.admin_verb == "deny":
            await admin.deny_user(require_dsn(endpoint.dsn), args.user, args.reason or "")
            result = {"denied": {"user_id": args.user, "reason": args.reason or ""}}
            text = f"user {args.user} is on the deny-list"
        else:
            s = settings()
            if endpoint.temporal:
                s = s.model_copy(
                    update={
                        "temporal_address": endpoint.temporal,
                        "task_queue": endpoint.task_queue,
                    }
                )
            revoked = await revoke_ticket(s, args.ticket_id, args.reason)
            result = {
                "revocation": {
                    "ticket_id": str(revoked.ticket_id),
                    "reason": args.reason,
                    "leaf_index": revoked.leaf_index,
                }
            }
            text = f"ticket {revoked.ticket_id} revoked (ledger leaf {revoked.leaf_index})"
    except GoldenError as err:
        raise CliError(err.reason.value, err.message) from err
    except Unreachable:
        raise  # names the server it could not connect to (Temporal for a revoke): run_async
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CliError(
            "Unavailable", f"cannot use PostgreSQL ({one_error(exc)})", EXIT_UNAVAILABLE
        ) from exc
    if args.json:
        emit_json(result)
    else:
        print(text)
    return 0


async def cmd_audit(args: argparse.Namespace) -> int:
    """Reconcile tickets, ledger, outbox and stream (service.ops.audit); exit 1 on any finding."""
    from service.ops.audit import audit_main

    s = settings()
    if not os.environ.get("GOLDEN_PG_DSN"):
        info = dev_stack(needed=True)
        if info is None:
            require_dsn("")
        else:
            s = info.settings()
    try:
        return await audit_main(s, json_output=args.json)
    except Unreachable:
        raise  # names PostgreSQL or NATS, whichever it could not connect to: run_async
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CliError(
            "Unavailable", f"cannot reach PostgreSQL or NATS ({one_error(exc)})", EXIT_UNAVAILABLE
        ) from exc
