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
from pathlib import Path
from typing import Any

from golden_press.bundle import load_bundle, load_trust_roots, verify_bundle
from golden_press.checkpoint import Checkpoint
from golden_press.errors import GoldenError
from service.cli import (
    Api,
    CliError,
    Endpoint,
    colour,
    fetch_bundle,
    list_all,
    pretty_bundle,
    public_keys_json,
    table,
    ticket_dict,
)


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


async def demo(endpoint: Endpoint, state_dir: Path, ui: str | None) -> int:
    """The demo proper, against a running API."""
    from service.admin import cap_status

    run = uuid.uuid4().hex[:6]
    api = Api(endpoint)
    try:
        status = await cap_status(endpoint.dsn)
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

        step(2, "One more request is refused: the cap holds")
        late = f"demo-{run}-late"
        try:
            await api.call(
                "IssueTicket",
                api.pb.IssueTicketRequest(user_id=late, request_id=late),
                write=True,
            )
            print(
                colour(
                    "  unexpected: a slot was free (another client freed one meanwhile)", "error"
                )
            )
        except CliError as err:
            print(f"  {colour('refused', 'error')} {late}: {err.reason}: {err.message}")

        if issued:
            ticket = issued[0]
        else:
            redeemable = await list_all(api, state="issued", limit=1)
            if not redeemable:
                print()
                print(
                    "note: every ticket on this stack is redeemed and no slot is free; for a fresh "
                    "stack run `golden-press dev down` and remove the state dir"
                    f" ({state_dir})"
                )
                return 0
            ticket = redeemable[0]
            print(
                colour(f"note: continuing with ticket #{ticket['serial']} of an earlier run", "dim")
            )
        tid, holder = ticket["ticket_id"], ticket["user_id"]

        step(3, f"Verify ticket #{ticket['serial']} (Ed25519 signature + stored state)")
        v = await api.call("VerifyTicket", api.pb.VerifyTicketRequest(ticket_id=tid))
        state = ticket_dict(v.ticket)["state"]
        print(f"  signature {'ok' if v.signature_valid else 'BAD'}, state {state}, valid {v.valid}")

        step(4, "Write its proof bundle and verify it offline (published keys only, no server)")
        bundle_json = await fetch_bundle(api, tid)
        bundle_path = state_dir / "demo" / f"bundle-{ticket['serial']}-{run}.json"
        write_file(bundle_path, pretty_bundle(bundle_json))
        keys_path = state_dir / "public-keys.json"
        write_file(keys_path, await public_keys_json(api))
        checkpoint = verify_offline(bundle_path, keys_path)
        doc = json.loads(bundle_json)
        print(f"  bundle   {bundle_path}")
        print(f"  keys     {keys_path}")
        print(
            f"  {colour('ok', 'ok')}  leaf {doc['leaf_index']} is in the tree of {checkpoint.size}"
            f" signed by {checkpoint.origin}"
        )
        print(f"  (again any time: golden-press ledger verify {bundle_path})")

        step(5, f"Redeem it as {holder} (non-transferable: only the issuee can)")
        r = await api.call(
            "RedeemTicket",
            api.pb.RedeemTicketRequest(ticket_id=tid, user_id=holder, bundle_json=bundle_json),
            write=True,
        )
        print(f"  {colour('redeemed', 'ok')} {tid} (ledger leaf {r.leaf_index}, {r.workflow_id})")
        try:
            await api.call(
                "RedeemTicket",
                api.pb.RedeemTicketRequest(ticket_id=tid, user_id=holder, bundle_json=bundle_json),
                write=True,
            )
        except CliError as err:
            print(f"  {colour('refused', 'error')} a second redemption: {err.reason}")

        step(6, "All tickets")
        rows = [
            (t["serial"], t["state"], t["user_id"], t["ticket_id"]) for t in await list_all(api)
        ]
        print(table(rows, ("serial", "state", "user", "ticket")))
    finally:
        await api.close()

    print()
    if ui:
        print(f"Temporal Web UI: {ui}  (the sagas above are there, by workflow id)")
    print("Stop the stack with: golden-press dev down")
    return 0


def run_demo() -> int:
    """Start (or reuse) the dev stack, then run the demo through its gRPC API."""
    from service.devstack import ensure_stack

    info = ensure_stack()
    state_dir = Path(info.env.get("GOLDEN_STATE_DIR", ".golden"))
    endpoint = Endpoint(address=info.grpc, token=info.token, dsn=info.postgres)
    print(f"golden-press demo on the dev stack (gRPC {info.grpc}, Temporal {info.temporal})")
    try:
        return asyncio.run(demo(endpoint, state_dir, info.ui))
    except CliError as err:
        print(f"error: {err.reason}: {err.message}")
        return err.code
    except GoldenError as err:
        print(f"error: {err.reason.value}: {err.message}")
        return 1
