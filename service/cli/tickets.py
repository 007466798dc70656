"""Ticket verbs: issue, verify, get, list, proof, checkpoint, redeem (all through the API)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from golden_press.checkpoint import CheckpointError
from golden_press.cosignature import CosignatureVerifier, WitnessPolicy, verify_cosignatures
from golden_press.merkle import hash_b64
from golden_press.sagas import issue_workflow_id, redeem_workflow_id
from service.cli.client import (
    EXIT_USAGE,
    Api,
    CliError,
    is_file,
    looks_like_path,
    read_text,
    write_text,
)
from service.cli.output import (
    bundle_checkpoint,
    colour,
    emit_json,
    show_ticket,
    table,
    ticket_dict,
    verification,
)

#: How long `proof` and `redeem` wait for witnesses to cosign a fresh ticket's checkpoint.
COSIGN_WAIT_S = 15.0


async def cmd_issue(api: Api, args: argparse.Namespace) -> int:
    """Mint a ticket (the request id makes a retry safe: it returns the same ticket)."""
    from service.sagas.admission import new_request_id

    request_id = args.request_id or new_request_id()
    resp = await api.call(
        "IssueTicket",
        api.pb.IssueTicketRequest(user_id=args.user, request_id=request_id, no_wait=args.no_wait),
        write=True,
        deadline_s=args.timeout,
        workflow_id=issue_workflow_id(request_id),
        hint=f"the same request (--request-id {request_id}) joins it",
    )
    t = ticket_dict(resp.ticket) if resp.HasField("ticket") else None
    if args.json:
        emit_json(
            {
                "ticket": t,
                "saga": {
                    "workflow_id": resp.workflow_id,
                    "request_id": resp.request_id,
                    "replayed": resp.replayed,
                    "pending": resp.pending,
                },
            }
        )
    elif t is None:
        print(colour("issuance started", "ok"))
        print(f"{'workflow':<12} {resp.workflow_id}")
        print(f"{'request id':<12} {resp.request_id}")
        print(f"follow it with: golden-press status {resp.workflow_id}")
    else:
        head = "ticket already issued for this request" if resp.replayed else "golden ticket issued"
        print(colour(head, "ok"))
        print(show_ticket(t))
        print(f"{'workflow':<12} {resp.workflow_id}")
    return 0


async def cmd_verify(api: Api, args: argparse.Namespace) -> int:
    """Verify a ticket by id, or a proof bundle file, against the API's keys and state."""
    if is_file(args.subject):
        bundle_json = read_text(args.subject)
        req = api.pb.VerifyTicketRequest(bundle_json=bundle_json)
    elif looks_like_path(args.subject):
        raise CliError("FileNotFound", f"no such file: {args.subject}", EXIT_USAGE)
    else:
        bundle_json = ""
        req = api.pb.VerifyTicketRequest(ticket_id=args.subject)
    resp = await api.call("VerifyTicket", req)
    t = ticket_dict(resp.ticket)
    state = t["state"] if resp.state else "unknown"
    verdict = verification(
        valid=resp.valid,
        signature_valid=resp.signature_valid,
        proof_valid=resp.proof_valid if bundle_json else None,
        state=state,
        redeemable=resp.redeemable,
        reason=resp.reason,
        message=resp.message,
        ticket=t,
        checkpoint=bundle_checkpoint(bundle_json, resp.checkpoint_tree_size),
        leaf_index=json.loads(bundle_json).get("leaf_index") if bundle_json else None,
        offline=False,
    )
    if not resp.valid:
        raise CliError(
            resp.reason or "TicketNotRedeemable",
            resp.message or "ticket is not valid",
            extra={"verification": verdict},
        )
    if args.json:
        emit_json({"verification": verdict})
    else:
        checks = [("signature", resp.signature_valid)]
        if req.WhichOneof("subject") == "bundle_json":
            checks.append((f"inclusion proof (tree size {resp.checkpoint_tree_size})", True))
        for name, ok in checks:
            print(f"{colour('ok', 'ok') if ok else colour('FAILED', 'error')}  {name}")
        print(f"{'ok' if resp.valid else 'no':>2}  state {colour(state, state)}")
        note = "redeemable" if resp.redeemable else "already redeemed"
        whose = f" of {t['user_id']}" if t["user_id"] else ""
        print(colour(f"valid golden ticket #{t['serial']}{whose} ({note})", "ok"))
    return 0


async def cmd_get(api: Api, args: argparse.Namespace) -> int:
    """Show one ticket."""
    resp = await api.call("GetTicket", api.pb.GetTicketRequest(ticket_id=args.ticket_id))
    t = ticket_dict(resp.ticket)
    if args.json:
        emit_json({"ticket": t})
    else:
        print(show_ticket(t))
    return 0


async def list_page(
    api: Api,
    *,
    state: str | None = None,
    user: str | None = None,
    limit: int = 10_000,
    page_token: str = "",
) -> tuple[list[dict[str, Any]], str]:
    """Up to `limit` tickets from page_token on, and the token of what follows ("": none)."""
    out: list[dict[str, Any]] = []
    token = page_token
    state_pb = getattr(api.pb, f"TICKET_STATE_{state.upper()}") if state else 0
    while len(out) < limit:
        resp = await api.call(
            "ListTickets",
            api.pb.ListTicketsRequest(
                page_size=min(500, limit - len(out)),
                page_token=token,
                state=state_pb,
                user_id=user or "",
            ),
        )
        out.extend(ticket_dict(t) for t in resp.tickets)
        token = resp.next_page_token
        if not token:
            break
    return out, token


async def list_all(
    api: Api, *, state: str | None = None, user: str | None = None, limit: int = 10_000
) -> list[dict[str, Any]]:
    """Every matching ticket (up to limit), following page tokens."""
    tickets, _ = await list_page(api, state=state, user=user, limit=limit)
    return tickets


async def cmd_list(api: Api, args: argparse.Namespace) -> int:
    """Tickets by serial, filtered by state and user."""
    tickets, token = await list_page(
        api, state=args.state, user=args.user, limit=args.limit, page_token=args.page_token
    )
    if args.json:
        emit_json({"tickets": tickets, "next_page_token": token})
        return 0
    if not tickets:
        print("no tickets")
        return 0
    rows = [
        (
            t["serial"],
            t["state"],
            t["user_id"],
            t["issued_at"][:19].replace("T", " "),
            t["ticket_id"],
            "-" if t["leaf_index"] is None else t["leaf_index"],
        )
        for t in tickets
    ]
    print(table(rows, ("serial", "state", "user", "issued at (UTC)", "ticket", "leaf")))
    if token:
        print(colour(f"more: golden-press list --page-token {token}", "dim"))
    return 0


async def witness_policy(api: Api) -> WitnessPolicy:
    """The witness keys and quorum the API publishes (GetPublicKeys)."""
    resp = await api.call("GetPublicKeys", api.pb.GetPublicKeysRequest())
    witnesses = tuple(
        CosignatureVerifier(k.name, k.public_key) for k in resp.keys if k.purpose == "witness"
    )
    return WitnessPolicy(witnesses, resp.witness_quorum if witnesses else 0)


async def fetch_bundle(api: Api, ticket_id: str, wait_s: float = COSIGN_WAIT_S) -> str:
    """The proof bundle JSON of a ticket (the holder's, with the token).

    A ticket issued a moment ago sits in a checkpoint its witnesses have not cosigned yet: wait
    up to `wait_s` for one the published quorum cosigned, then take what there is (verification
    then says which cosignatures are missing).
    """
    request = api.pb.GetInclusionProofRequest(ticket_id=ticket_id)
    policy: WitnessPolicy | None = None
    deadline = time.monotonic() + wait_s
    while True:
        resp = await api.call("GetInclusionProof", request)
        policy = policy or await witness_policy(api)
        if not policy.quorum or time.monotonic() >= deadline:
            return str(resp.bundle_json)
        try:
            cosigned = verify_cosignatures(resp.checkpoint, policy.witnesses)
        except CheckpointError:
            return str(resp.bundle_json)
        if len(cosigned) >= policy.quorum:
            return str(resp.bundle_json)
        await asyncio.sleep(0.2)


def pretty_bundle(bundle_json: str) -> str:
    """Indented bundle JSON (the same document, easier to read and diff)."""
    return json.dumps(json.loads(bundle_json), indent=2) + "\n"


async def cmd_proof(api: Api, args: argparse.Namespace) -> int:
    """Write (or print) a ticket's proof bundle."""
    bundle = pretty_bundle(await fetch_bundle(api, args.ticket_id))
    info = json.loads(bundle)
    if args.output:
        write_text(Path(args.output), bundle)
    if args.json:
        emit_json({"bundle": info, "path": args.output})
    elif args.output:
        print(
            f"proof bundle written to {args.output} "
            f"(leaf {info['leaf_index']} of a tree of {info['tree_size']})"
        )
    else:
        sys.stdout.write(bundle)
    return 0


async def cmd_checkpoint(api: Api, args: argparse.Namespace) -> int:
    """The latest signed checkpoint."""
    resp = await api.call("GetCheckpoint", api.pb.GetCheckpointRequest())
    if args.json:
        emit_json(
            {
                "checkpoint": {
                    "origin": resp.origin,
                    "tree_size": resp.tree_size,
                    "root_hash": hash_b64(resp.root_hash),
                    "note": resp.checkpoint,
                }
            }
        )
    else:
        sys.stdout.write(
            resp.checkpoint if resp.checkpoint.endswith("\n") else resp.checkpoint + "\n"
        )
    return 0


async def cmd_redeem(api: Api, args: argparse.Namespace) -> int:
    """Redeem with a bundle file, or with a bundle fetched from the API first."""
    bundle = read_text(args.bundle) if args.bundle else await fetch_bundle(api, args.ticket_id)
    resp = await api.call(
        "RedeemTicket",
        api.pb.RedeemTicketRequest(
            ticket_id=args.ticket_id, user_id=args.user, bundle_json=bundle, no_wait=args.no_wait
        ),
        write=True,
        deadline_s=args.timeout,
        workflow_id=redeem_workflow_id(args.ticket_id),
        hint=f"`golden-press status {args.ticket_id}` follows it",
    )
    leaf = resp.leaf_index if resp.HasField("leaf_index") else None
    if args.json:
        emit_json(
            {
                "redemption": {
                    "ticket_id": resp.ticket_id,
                    "user_id": args.user,
                    "leaf_index": leaf,
                },
                "saga": {"workflow_id": resp.workflow_id, "pending": resp.pending},
            }
        )
    elif resp.pending:
        print(colour(f"redemption of {resp.ticket_id} started", "ok"))
        print(f"{'workflow':<12} {resp.workflow_id}")
        print(f"follow it with: golden-press status {resp.workflow_id}")
    else:
        print(colour(f"ticket {resp.ticket_id} redeemed by {args.user}", "ok"))
        print(f"{'workflow':<12} {resp.workflow_id}")
        print(f"{'ledger leaf':<12} {leaf}")
    return 0
