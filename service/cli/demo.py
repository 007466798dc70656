"""`golden-press demo`: the whole story through the gRPC API on the dev stack.

Issue tickets until the cap (5 on a fresh stack), show the next one refused with CapReached,
verify a ticket, write its proof bundle, verify that bundle offline with the published keys only,
redeem it, and list the tickets. Users and request ids carry a random run id, so the demo can run
again on the same stack: under the `live` scope each run redeems one ticket and so frees one slot,
which the next run fills before showing the refusal; when no slot is free the demo says so and
carries on with a ticket that is still redeemable.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golden_press.bundle import load_bundle, load_trust_roots, verify_bundle
from golden_press.checkpoint import Checkpoint
from golden_press.errors import GoldenError
from service.cli.client import Api, CliError, Endpoint
from service.cli.keys import public_keys_json
from service.cli.output import colour, sagas_view_url, table, ticket_dict
from service.cli.tickets import fetch_bundle, list_all, pretty_bundle


def write_file(path: Path, text: str) -> None:
    """Write a demo artefact, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def verify_offline(bundle_path: Path, keys_path: Path) -> Checkpoint:
    """What `golden-press ledger verify` does: files in, no server."""
    return verify_bundle(
        load_bundle(bundle_path.read_text()), load_trust_roots(keys_path.read_text())
    )


def step(number: int, text: str) -> None:
    """A numbered heading."""
    print()
    print(colour(f"{number}. {text}", "bold"))


@dataclass
class DemoRun:
    """What the steps share: the API, where artefacts go, and a run id that keeps reruns apart."""

    api: Api
    endpoint: Endpoint
    state_dir: Path
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    #: What each step did, as data: the `demo` noun of `golden-press demo --json`.
    summary: dict[str, Any] = field(default_factory=dict)


async def issue_until_cap(demo: DemoRun) -> list[dict[str, Any]]:
    """Step 1: issue to fresh users until every free slot is taken."""
    from service.store.config import cap_status

    api, run = demo.api, demo.run
    status = await cap_status(demo.endpoint.dsn)
    free = max(status.cap - status.used, 0)
    step(1, f"Issue golden tickets until the cap ({status.cap}, scope {status.scope})")
    if status.used:
        print(
            colour(
                f"note: {status.used} of {status.cap} slots are taken by earlier runs on this "
                f"stack; issuing {free}",
                "dim",
            )
        )
    issued: list[dict[str, Any]] = []
    demo.summary["cap"] = {"cap": status.cap, "scope": status.scope, "used_before": status.used}
    demo.summary["issued"] = issued
    for n in range(1, free + 1):
        user = f"demo-{run}-{n}"
        began = time.perf_counter()
        resp = await api.call(
            "IssueTicket",
            api.pb.IssueTicketRequest(user_id=user, request_id=f"demo-{run}-{n}"),
            write=True,
        )
        t = ticket_dict(resp.ticket)
        issued.append(t)
        ms = (time.perf_counter() - began) * 1e3
        print(
            f"  {colour('issued', 'ok')}  #{t['serial']:<3} {user:<16} {t['ticket_id']}"
            f"  {ms:.0f} ms"
        )
    return issued


async def show_refusal(demo: DemoRun) -> None:
    """Step 2: the next request is refused with CapReached."""
    api = demo.api
    step(2, "One more request is refused: the cap holds")
    late = f"demo-{demo.run}-late"
    demo.summary["refused"] = None
    try:
        await api.call(
            "IssueTicket", api.pb.IssueTicketRequest(user_id=late, request_id=late), write=True
        )
        print(colour("  unexpected: a slot was free (another client freed one meanwhile)", "error"))
    except CliError as err:
        print(f"  {colour('refused', 'error')} {late}: {err.reason}: {err.message}")
        demo.summary["refused"] = {"user_id": late, "reason": err.reason}


async def pick_ticket(demo: DemoRun, issued: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ticket the rest of the demo uses: one just issued, else a redeemable earlier one."""
    if issued:
        return issued[0]
    redeemable = await list_all(demo.api, state="issued", limit=1)
    if not redeemable:
        print()
        print(
            "note: every ticket on this stack is redeemed and no slot is free; for a fresh "
            f"stack run `golden-press dev down` and remove the state dir ({demo.state_dir})"
        )
        return None
    ticket = redeemable[0]
    print(colour(f"note: continuing with ticket #{ticket['serial']} of an earlier run", "dim"))
    return ticket


async def verify_ticket(demo: DemoRun, ticket: dict[str, Any]) -> None:
    """Step 3: VerifyTicket (signature and stored state)."""
    api = demo.api
    step(3, f"Verify ticket #{ticket['serial']} (Ed25519 signature + stored state)")
    v = await api.call("VerifyTicket", api.pb.VerifyTicketRequest(ticket_id=ticket["ticket_id"]))
    state = ticket_dict(v.ticket)["state"]
    demo.summary["verified"] = {
        "ticket_id": ticket["ticket_id"],
        "signature_valid": v.signature_valid,
        "state": state,
        "valid": v.valid,
    }
    print(f"  signature {'ok' if v.signature_valid else 'BAD'}, state {state}, valid {v.valid}")


async def prove_offline(demo: DemoRun, ticket: dict[str, Any]) -> str:
    """Step 4: write the proof bundle and the public keys, verify offline; returns the bundle."""
    api = demo.api
    step(4, "Write its proof bundle and verify it offline (published keys only, no server)")
    bundle_json = await fetch_bundle(api, ticket["ticket_id"])
    bundle_path = demo.state_dir / "demo" / f"bundle-{ticket['serial']}-{demo.run}.json"
    write_file(bundle_path, pretty_bundle(bundle_json))
    keys_path = demo.state_dir / "public-keys.json"
    write_file(keys_path, await public_keys_json(api))
    checkpoint = verify_offline(bundle_path, keys_path)
    doc = json.loads(bundle_json)
    roots = load_trust_roots(keys_path.read_text())
    cosigners = roots.witness_policy().open(
        doc["checkpoint"], roots.ledger_verifiers(), roots.ledger_origin
    )
    witnesses = ", ".join(sorted(cosigners.cosigned_by))
    demo.summary["proof"] = {
        "bundle_path": str(bundle_path),
        "keys_path": str(keys_path),
        "leaf_index": doc["leaf_index"],
        "tree_size": checkpoint.size,
        "origin": checkpoint.origin,
        "cosigned_by": sorted(cosigners.cosigned_by),
    }
    print(f"  bundle   {bundle_path}")
    print(f"  keys     {keys_path}")
    print(
        f"  {colour('ok', 'ok')}  leaf {doc['leaf_index']} is in the tree of {checkpoint.size}"
        f" signed by {checkpoint.origin}"
        + (f", cosigned by witness {witnesses}" if witnesses else "")
    )
    print(f"  (again any time: golden-press ledger verify {bundle_path})")
    return bundle_json


async def redeem_twice(demo: DemoRun, ticket: dict[str, Any], bundle_json: str) -> None:
    """Step 5: redeem as the issuee, then show a second redemption refused."""
    api = demo.api
    tid, holder = ticket["ticket_id"], ticket["user_id"]
    step(5, f"Redeem it as {holder} (non-transferable: only the issuee can)")
    request = api.pb.RedeemTicketRequest(ticket_id=tid, user_id=holder, bundle_json=bundle_json)
    r = await api.call("RedeemTicket", request, write=True)
    demo.summary["redeemed"] = {
        "ticket_id": tid,
        "user_id": holder,
        "leaf_index": r.leaf_index,
        "workflow_id": r.workflow_id,
    }
    demo.summary["second_redemption"] = None
    print(f"  {colour('redeemed', 'ok')} {tid} (ledger leaf {r.leaf_index}, {r.workflow_id})")
    try:
        await api.call("RedeemTicket", request, write=True)
    except CliError as err:
        print(f"  {colour('refused', 'error')} a second redemption: {err.reason}")
        demo.summary["second_redemption"] = {"reason": err.reason}


async def list_tickets(demo: DemoRun) -> None:
    """Step 6: every ticket on the stack."""
    step(6, "All tickets")
    tickets = await list_all(demo.api)
    demo.summary["tickets"] = tickets
    rows = [(t["serial"], t["state"], t["user_id"], t["ticket_id"]) for t in tickets]
    print(table(rows, ("serial", "state", "user", "ticket")))


async def demo(
    endpoint: Endpoint,
    state_dir: Path,
    ui: str | None,
    namespace: str = "default",
    summary: dict[str, Any] | None = None,
) -> int:
    """The demo proper, against a running API: the steps above, in order (what they did goes
    into `summary`)."""
    run = DemoRun(api=Api(endpoint), endpoint=endpoint, state_dir=state_dir)
    if summary is not None:
        run.summary = summary
    run.summary.update(ui=ui, sagas_view=sagas_view_url(ui, namespace) if ui else None)
    try:
        issued = await issue_until_cap(run)
        await show_refusal(run)
        ticket = await pick_ticket(run, issued)
        if ticket is None:
            return 0
        await verify_ticket(run, ticket)
        bundle_json = await prove_offline(run, ticket)
        await redeem_twice(run, ticket, bundle_json)
        await list_tickets(run)
    finally:
        await run.api.close()

    print()
    if ui:
        print(f"Temporal Web UI: {ui}  (the sagas above are there, by workflow id)")
        print(f"Golden sagas without the reconciler's runs: {sagas_view_url(ui, namespace)}")
    print("Stop the stack with: golden-press dev down")
    return 0


def run_demo(summary: dict[str, Any] | None = None) -> int:
    """Start (or reuse) the dev stack, then run the demo through its gRPC API; a failure is a
    CliError (reported by the CLI, as JSON with --json). `summary` receives what it did."""
    from service.devstack.stack import ensure_stack

    info = ensure_stack()
    state_dir = Path(info.env.get("GOLDEN_STATE_DIR", ".golden"))
    endpoint = Endpoint(address=info.grpc, token=info.token, dsn=info.postgres)
    print(f"golden-press demo on the dev stack (gRPC {info.grpc}, Temporal {info.temporal})")
    try:
        return asyncio.run(demo(endpoint, state_dir, info.ui, info.namespace, summary))
    except GoldenError as err:
        raise CliError(err.reason.value, err.message) from err
