"""Re-record the replay histories: run every saga path for real and save its event history.

    python -m tests.replay.record            (writes tests/replay/histories/*.json)

Uses the machine's PostgreSQL and NATS when they answer (fresh database and stream, dropped at the
end), else private ones, and always a private Temporal dev server. Re-record after an intended,
`workflow.patched`-guarded change, and commit the JSON files with the change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from activities.faults import Faults
from golden_press.models import (
    Outcome,
    ProofBundle,
    RedeemTicketInput,
    RevokeTicketInput,
)
from tests.helpers.ledger import forged_checkpoint, fork, tamper_signature
from tests.helpers.servers import (
    Servers,
    migrated_template,
    shared_or_private_nats,
    shared_or_private_postgres,
    start_local_temporal,
)
from tests.helpers.stack import Stack, golden_stack
from tests.helpers.waiting import wait_until
from workflows.reconcile import ReconcileReservationsWorkflow
from workflows.redeem_ticket import RedeemTicketWorkflow
from workflows.revoke_ticket import RevokeTicketWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"


@asynccontextmanager
async def recording_servers(scratch: Path) -> AsyncIterator[tuple[Servers, Client]]:
    """PostgreSQL, NATS (shared when running, else private), a private Temporal, a template DB."""
    async with AsyncExitStack() as stack:
        admin = stack.enter_context(shared_or_private_postgres())
        nats_url = stack.enter_context(shared_or_private_nats(scratch))
        env = await start_local_temporal()
        stack.push_async_callback(env.shutdown)
        template = await stack.enter_async_context(
            migrated_template(admin, f"golden_rec_{uuid.uuid4().hex[:8]}")
        )
        servers = Servers(
            pg_admin_dsn=admin,
            nats_url=nats_url,
            temporal_address=env.client.service_client.config.target_host,
            template_db=template,
        )
        yield servers, env.client


class Recorder:
    """Saves `(await handle.fetch_history()).to_json()` under a saga path's name."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.saved: list[Path] = []

    async def save(self, name: str, handle: WorkflowHandle[Any, Any]) -> None:
        """Write one history file (after the workflow closed)."""
        history = await handle.fetch_history()
        path = self.out_dir / f"{name}.json"
        await asyncio.to_thread(path.write_text, history.to_json() + "\n")
        self.saved.append(path)
        print(f"recorded {path.name} ({len(history.events)} events)")


async def finished(handle: WorkflowHandle[Any, Any], outcome: str, reason: str = "") -> Any:
    """Await a saga and make sure it took the path the history is named after."""
    result = await asyncio.wait_for(handle.result(), 60)
    got = (getattr(result, "outcome", None), getattr(result, "reason", ""))
    if got[0] != outcome or (reason and got[1] != reason):
        raise RuntimeError(f"{handle.id}: expected {outcome}/{reason}, got {got}")
    return result


async def start_redeem(
    stack: Stack, ticket_id: uuid.UUID, user: str, bundle: ProofBundle
) -> WorkflowHandle[Any, Any]:
    """A redemption under a fresh workflow id (so rejections can be recorded side by side)."""
    return await stack.client.start_workflow(
        RedeemTicketWorkflow.run,
        RedeemTicketInput(ticket_id=ticket_id, user_id=user, bundle=bundle),
        id=f"redeem-rec-{uuid.uuid4()}",
        task_queue=stack.settings.task_queue,
    )


async def record_issuance(stack: Stack, faults: Faults, rec: Recorder) -> None:
    """issue_ok, the rule rejections, cap reached and a compensation."""
    handle = await stack.start_issue("alice")
    await finished(handle, Outcome.ISSUED)
    await rec.save("issue_ok", handle)

    handle = await stack.start_issue("alice")
    await finished(handle, Outcome.REJECTED, "OnePerUser")
    await rec.save("issue_rule_rejected_one_per_user", handle)

    await stack.pool.execute("INSERT INTO deny_list (user_id, reason) VALUES ('mallory', 'test')")
    handle = await stack.start_issue("mallory")
    await finished(handle, Outcome.REJECTED, "UserDenied")
    await rec.save("issue_rule_rejected_deny_list", handle)

    faults.plan["sign"] = "fail"
    handle = await stack.start_issue("unlucky")
    await finished(handle, Outcome.COMPENSATED, "InjectedFault")
    await rec.save("issue_compensated", handle)
    faults.plan.clear()

    await stack.pool.execute("UPDATE golden_config SET cap = 1")
    handle = await stack.start_issue("late")
    await finished(handle, Outcome.REJECTED, "CapReached")
    await rec.save("issue_cap_reached", handle)
    await stack.pool.execute("UPDATE golden_config SET cap = 5")


async def record_redemption(stack: Stack, rec: Recorder) -> None:
    """redeem_ok, revoke_ok and every redemption rejection."""
    tickets: dict[str, tuple[uuid.UUID, ProofBundle]] = {}
    for user in ("bob", "carol", "dave"):
        result = await finished(await stack.start_issue(user), Outcome.ISSUED)
        tickets[user] = (result.ticket_id, await stack.bundle_for(result.ticket_id))
    b_id, b_bundle = tickets["bob"]
    _, c_bundle = tickets["carol"]
    d_id, d_bundle = tickets["dave"]

    rejections: list[tuple[str, uuid.UUID, str, ProofBundle, str]] = [
        ("bad_signature", b_id, "bob", tamper_signature(b_bundle), "BadSignature"),
        ("bad_proof", b_id, "bob", c_bundle, "BadProof"),
        ("bad_checkpoint", b_id, "bob", forged_checkpoint(b_bundle), "BadCheckpoint"),
        ("inconsistent_checkpoint", b_id, "bob", fork(stack, b_bundle), "InconsistentCheckpoint"),
        ("not_issuee", b_id, "carol", b_bundle, "NotIssuee"),
        ("unknown_ticket", uuid.uuid4(), "bob", b_bundle, "TicketNotFound"),
    ]
    for name, ticket_id, user, bundle, reason in rejections:
        handle = await start_redeem(stack, ticket_id, user, bundle)
        await finished(handle, Outcome.REJECTED, reason)
        await rec.save(f"redeem_rejected_{name}", handle)

    handle = await start_redeem(stack, b_id, "bob", b_bundle)
    await finished(handle, Outcome.REDEEMED)
    await rec.save("redeem_ok", handle)

    handle = await start_redeem(stack, b_id, "bob", b_bundle)
    await finished(handle, Outcome.REJECTED, "AlreadyRedeemed")
    await rec.save("redeem_rejected_already_redeemed", handle)

    revoke = await stack.client.start_workflow(
        RevokeTicketWorkflow.run,
        RevokeTicketInput(ticket_id=d_id, reason="fraud"),
        id=f"revoke-rec-{uuid.uuid4()}",
        task_queue=stack.settings.task_queue,
    )
    await finished(revoke, "revoked")
    await rec.save("revoke_ok", revoke)
    handle = await start_redeem(stack, d_id, "dave", d_bundle)
    await finished(handle, Outcome.REJECTED, "TicketNotRedeemable")
    await rec.save("redeem_rejected_not_redeemable", handle)


async def record_expiry(stack: Stack, rec: Recorder) -> None:
    """A saga terminated mid-sign, then the reconciler pass that voids its expired reservation."""
    handle = await stack.start_issue("parked")

    async def reserved() -> bool:
        return bool(await stack.pool.fetchval("SELECT count(*) FROM tickets"))

    await wait_until(reserved)
    await handle.terminate("recording: reservation expires")
    await asyncio.sleep(stack.settings.reservation_lease_s + 0.2)
    reconcile = await stack.client.start_workflow(
        ReconcileReservationsWorkflow.run,
        id=f"reconcile-rec-{uuid.uuid4()}",
        task_queue=stack.settings.task_queue,
    )
    result = await asyncio.wait_for(reconcile.result(), 60)
    if len(result.voided) != 1:
        raise RuntimeError(f"reconciler voided {result.voided}, expected the parked reservation")
    await rec.save("issue_reservation_expired", handle)
    await rec.save("reconcile_voided_expired", reconcile)


async def record_all(out_dir: Path) -> list[Path]:
    """Run every saga path once and write its history; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rec = Recorder(out_dir)
    scratch = Path(tempfile.mkdtemp(prefix="golden-rec-"))
    try:
        async with recording_servers(scratch) as (servers, client):
            faults = Faults()
            async with golden_stack(servers, scratch, client, faults=faults) as stack:
                await record_issuance(stack, faults, rec)
                await record_redemption(stack, rec)
            async with golden_stack(
                servers,
                scratch,
                client,
                faults=Faults(plan={"sign": "hang"}),
                reservation_lease_s=0.5,
            ) as stack:
                await record_expiry(stack, rec)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rec.saved


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m tests.replay.record`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HISTORIES, help="output directory")
    args = parser.parse_args(argv)
    saved = asyncio.run(record_all(args.out))
    print(f"{len(saved)} histories in {args.out}")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
