"""`golden-press`: the command line, speaking to the gRPC API (admin verbs go to PostgreSQL).

Where it connects: GOLDEN_GRPC_ADDR and the first token of GOLDEN_API_TOKENS_FILE when set, else
the dev stack recorded in GOLDEN_STATE_DIR/stack.json (`golden-press dev up`), else the defaults.
Every verb takes --json. A rejection exits non-zero with one line: `error: <Reason>: <message>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from golden_press.settings import Settings

#: Exit codes: 1 a rejection (a reason type), 2 usage, 3 the API or database is unreachable.
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

STATES = ("reserved", "issued", "redeemed", "voided", "revoked")
_COLOURS = {
    "issued": "32",
    "redeemed": "36",
    "reserved": "33",
    "voided": "90",
    "revoked": "31",
    "ok": "32",
    "error": "31",
    "dim": "90",
    "bold": "1",
}


class CliError(Exception):
    """A failure to report as `error: <reason>: <message>` with an exit code."""

    def __init__(self, reason: str, message: str, code: int = EXIT_REJECTED) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.code = code


# ---- output -----------------------------------------------------------------------------------


def colour(text: str, name: str, stream: Any = None) -> str:
    """ANSI colour only on a terminal (and never with NO_COLOR)."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR") or not getattr(stream, "isatty", lambda: False)():
        return text
    code = _COLOURS.get(name)
    return f"\x1b[{code}m{text}\x1b[0m" if code else text


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned table (colour applied after alignment so widths stay right)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    header = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    lines = [colour(header, "bold")]
    for row in cells:
        padded = []
        for header, value, width in zip(headers, row, widths, strict=True):
            text = value.ljust(width)
            padded.append(colour(text, value) if header == "state" else text)
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def emit_json(value: Any) -> None:
    """One JSON document on stdout."""
    print(json.dumps(value, indent=2, sort_keys=False, default=str))


def ticket_dict(pb: Any) -> dict[str, Any]:
    """A protobuf Ticket as plain JSON-able fields (state as its lowercase name)."""
    from service.api_server import ticket_from_pb

    return ticket_from_pb(pb).model_dump(mode="json")


def show_ticket(t: dict[str, Any]) -> str:
    """Key/value lines of one ticket."""
    rows = [
        ("ticket", t["ticket_id"]),
        ("serial", t["serial"]),
        ("user", t["user_id"]),
        ("state", colour(t["state"], t["state"])),
        ("issued at", t["issued_at"]),
        ("key id", t["key_id"]),
        ("signature", t["signature"] or "-"),
        ("request id", t["request_id"]),
        ("ledger leaf", "-" if t["leaf_index"] is None else t["leaf_index"]),
    ]
    return "\n".join(f"{k:<12} {v}" for k, v in rows)


# ---- connecting -------------------------------------------------------------------------------


def settings() -> Settings:
    """Settings from the environment (mypy without the pydantic plugin wants the aliases)."""
    return Settings()


@dataclass(frozen=True)
class Endpoint:
    """Where the API is and the token writes present."""

    address: str
    token: str
    dsn: str
    #: Temporal of the running dev stack (admin revoke), empty: from settings.
    temporal: str = ""
    task_queue: str = ""


def _first_token(path: Path) -> str:
    try:
        for line in path.read_text().splitlines():
            if line.strip() and not line.strip().startswith("#"):
                return line.strip()
    except OSError:
        pass
    return ""


def resolve_endpoint(args: argparse.Namespace) -> Endpoint:
    """--addr/--token flags, else the environment, else the running dev stack, else defaults."""
    s = settings()
    address = os.environ.get("GOLDEN_GRPC_ADDR", "")
    token = _first_token(s.api_tokens_file) if os.environ.get("GOLDEN_API_TOKENS_FILE") else ""
    dsn = os.environ.get("GOLDEN_PG_DSN", "")
    temporal = task_queue = ""
    if not (address and dsn):
        try:
            from service.devstack import running_stack

            info = running_stack()
        except Exception:
            info = None
        if info is not None:
            address = address or info.grpc
            token = token or info.token
            dsn = dsn or info.postgres
            if not os.environ.get("TEMPORAL_ADDRESS"):
                temporal, task_queue = info.temporal, info.task_queue
    return Endpoint(
        address=getattr(args, "addr", None) or address or s.grpc_addr,
        token=getattr(args, "token", None) or token or _first_token(s.api_tokens_file),
        dsn=dsn or s.pg_dsn,
        temporal=temporal,
        task_queue=task_queue,
    )


class Api:
    """A gRPC channel and stub plus bearer metadata for writes."""

    def __init__(self, endpoint: Endpoint) -> None:
        import grpc

        from service.api_server import golden_pb2, golden_pb2_grpc

        self.endpoint = endpoint
        self.pb = golden_pb2
        self.channel = grpc.aio.insecure_channel(endpoint.address)
        self.stub = golden_pb2_grpc.GoldenPressStub(self.channel)

    @property
    def auth(self) -> list[tuple[str, str]]:
        """Metadata for IssueTicket/RedeemTicket."""
        return [("authorization", f"Bearer {self.endpoint.token}")] if self.endpoint.token else []

    async def call(self, method: str, request: Any, *, write: bool = False) -> Any:
        """One RPC; a failed call becomes a CliError carrying the ErrorInfo reason."""
        import grpc

        from service.api_server import error_reason

        fn = getattr(self.stub, method)
        try:
            return await fn(request, metadata=self.auth if write else None, timeout=120)
        except grpc.aio.AioRpcError as err:
            reason = error_reason(err) or err.code().name
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                if not error_reason(err):
                    raise CliError(
                        "Unavailable",
                        f"cannot reach the golden-press API at {self.endpoint.address} "
                        "(is `golden-press dev up` running?)",
                        EXIT_UNAVAILABLE,
                    ) from err
            raise CliError(reason, err.details() or err.code().name) from err

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()


# ---- verbs ------------------------------------------------------------------------------------


async def cmd_issue(api: Api, args: argparse.Namespace) -> int:
    """Mint a ticket (the request id makes a retry safe: it returns the same ticket)."""
    from service.admission import new_request_id

    request_id = args.request_id or new_request_id()
    resp = await api.call(
        "IssueTicket",
        api.pb.IssueTicketRequest(user_id=args.user, request_id=request_id),
        write=True,
    )
    t = ticket_dict(resp.ticket)
    if args.json:
        emit_json(
            {
                "ticket": t,
                "workflow_id": resp.workflow_id,
                "request_id": resp.request_id,
                "replayed": resp.replayed,
            }
        )
    else:
        head = "ticket already issued for this request" if resp.replayed else "golden ticket issued"
        print(colour(head, "ok"))
        print(show_ticket(t))
        print(f"{'workflow':<12} {resp.workflow_id}")
    return 0


def _is_file(path: str) -> bool:
    return Path(path).is_file()


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CliError("InvalidRequest", f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from exc


async def cmd_verify(api: Api, args: argparse.Namespace) -> int:
    """Verify a ticket by id, or a proof bundle file, against the API's keys and state."""
    if _is_file(args.subject):
        req = api.pb.VerifyTicketRequest(bundle_json=_read_text(args.subject))
    else:
        req = api.pb.VerifyTicketRequest(ticket_id=args.subject)
    resp = await api.call("VerifyTicket", req)
    t = ticket_dict(resp.ticket)
    state = t["state"] if resp.state else "unknown"
    if args.json:
        emit_json(
            {
                "valid": resp.valid,
                "signature_valid": resp.signature_valid,
                "proof_valid": resp.proof_valid,
                "redeemable": resp.redeemable,
                "state": state,
                "reason": resp.reason,
                "message": resp.message,
                "checkpoint_tree_size": resp.checkpoint_tree_size,
                "ticket": t,
            }
        )
    else:
        checks = [("signature", resp.signature_valid)]
        if req.WhichOneof("subject") == "bundle_json":
            checks.append((f"inclusion proof (tree size {resp.checkpoint_tree_size})", True))
        for name, ok in checks:
            print(f"{colour('ok', 'ok') if ok else colour('FAILED', 'error')}  {name}")
        print(f"{'ok' if resp.valid else 'no':>2}  state {colour(state, state)}")
        if resp.valid:
            note = "redeemable" if resp.redeemable else "already redeemed"
            print(colour(f"valid golden ticket #{t['serial']} of {t['user_id']} ({note})", "ok"))
    if not resp.valid:
        raise CliError(resp.reason or "TicketNotRedeemable", resp.message or "ticket is not valid")
    return 0


async def cmd_get(api: Api, args: argparse.Namespace) -> int:
    """Show one ticket."""
    resp = await api.call("GetTicket", api.pb.GetTicketRequest(ticket_id=args.ticket_id))
    t = ticket_dict(resp.ticket)
    if args.json:
        emit_json(t)
    else:
        print(show_ticket(t))
    return 0


async def list_all(
    api: Api, *, state: str | None = None, user: str | None = None, limit: int = 10_000
) -> list[dict[str, Any]]:
    """Every matching ticket, following page tokens."""
    out: list[dict[str, Any]] = []
    token = ""
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
    return out


async def cmd_list(api: Api, args: argparse.Namespace) -> int:
    """Tickets by serial, filtered by state and user."""
    tickets = await list_all(api, state=args.state, user=args.user, limit=args.limit)
    if args.json:
        emit_json(tickets)
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
    return 0


async def fetch_bundle(api: Api, ticket_id: str) -> str:
    """The proof bundle JSON of a ticket against the latest checkpoint."""
    resp = await api.call("GetInclusionProof", api.pb.GetInclusionProofRequest(ticket_id=ticket_id))
    return str(resp.bundle_json)


def pretty_bundle(bundle_json: str) -> str:
    """Indented bundle JSON (the same document, easier to read and diff)."""
    return json.dumps(json.loads(bundle_json), indent=2) + "\n"


async def cmd_proof(api: Api, args: argparse.Namespace) -> int:
    """Write (or print) a ticket's proof bundle."""
    bundle = pretty_bundle(await fetch_bundle(api, args.ticket_id))
    if args.output:
        _write_text(Path(args.output), bundle)
        info = json.loads(bundle)
        if args.json:
            emit_json(
                {
                    "bundle": args.output,
                    "leaf_index": info["leaf_index"],
                    "tree_size": info["tree_size"],
                }
            )
        else:
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
                "origin": resp.origin,
                "tree_size": resp.tree_size,
                "root_hash": resp.root_hash.hex(),
                "checkpoint": resp.checkpoint,
            }
        )
    else:
        sys.stdout.write(
            resp.checkpoint if resp.checkpoint.endswith("\n") else resp.checkpoint + "\n"
        )
    return 0


async def cmd_redeem(api: Api, args: argparse.Namespace) -> int:
    """Redeem with a bundle file, or with a bundle fetched from the API first."""
    bundle = _read_text(args.bundle) if args.bundle else await fetch_bundle(api, args.ticket_id)
    resp = await api.call(
        "RedeemTicket",
        api.pb.RedeemTicketRequest(ticket_id=args.ticket_id, user_id=args.user, bundle_json=bundle),
        write=True,
    )
    leaf = resp.leaf_index if resp.HasField("leaf_index") else None
    if args.json:
        emit_json(
            {"ticket_id": resp.ticket_id, "workflow_id": resp.workflow_id, "leaf_index": leaf}
        )
    else:
        print(colour(f"ticket {resp.ticket_id} redeemed by {args.user}", "ok"))
        print(f"{'workflow':<12} {resp.workflow_id}")
        print(f"{'ledger leaf':<12} {leaf}")
    return 0


async def public_keys_json(api: Api) -> str:
    """Trust roots for offline verifiers, from the API's public keys."""
    from golden_press.bundle import dump_trust_roots
    from service.queries import PublicKeyRow, trust_roots_from_keys

    resp = await api.call("GetPublicKeys", api.pb.GetPublicKeysRequest())
    rows = [
        PublicKeyRow(
            key_id=k.key_id,
            purpose=k.purpose,
            public_key=k.public_key,
            status=k.status,
            name=k.name,
            created_at=k.created_at.ToDatetime(),
            retired_at=None,
        )
        for k in resp.keys
    ]
    try:
        return dump_trust_roots(trust_roots_from_keys(rows, resp.ledger_origin)) + "\n"
    except LookupError as exc:
        raise CliError("Unavailable", str(exc), EXIT_UNAVAILABLE) from exc


def default_keys_file() -> Path:
    """Where `keys export` writes and `ledger verify` reads trust roots by default."""
    return settings().state_dir / "public-keys.json"


async def cmd_keys_export(api: Api, args: argparse.Namespace) -> int:
    """Write the trust roots (every issuer and ledger public key) for offline verification."""
    path = Path(args.output) if args.output else default_keys_file()
    text = await public_keys_json(api)
    _write_text(path, text)
    roots = json.loads(text)
    if args.json:
        emit_json({"keys_file": str(path), **roots})
    else:
        print(f"public keys written to {path}")
        for key_id, pub in roots["issuer_keys"].items():
            print(f"  issuer  {key_id}  {pub}")
        for led in roots["ledger"]:
            print(f"  ledger  {led.get('name') or roots['origin']}  {led['public_key']}")
    return 0


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    """Offline: signature, ledger entry, inclusion proof and checkpoint, with pinned keys only."""
    from golden_press.bundle import load_bundle, load_trust_roots, verify_bundle
    from golden_press.errors import GoldenError

    keys_path = Path(args.keys) if args.keys else default_keys_file()
    if not keys_path.is_file():
        raise CliError(
            "InvalidRequest",
            f"no trust roots at {keys_path}: run `golden-press keys export` (or pass --keys)",
            EXIT_USAGE,
        )
    try:
        roots = load_trust_roots(keys_path.read_text())
    except ValueError as exc:
        raise CliError("InvalidRequest", f"{keys_path} is not a trust roots file: {exc}") from exc
    try:
        bundle = load_bundle(_read_text(args.bundle))
        checkpoint = verify_bundle(bundle, roots)
    except GoldenError as err:
        raise CliError(err.reason.value, err.message) from err
    t = bundle.ticket
    if args.json:
        emit_json(
            {
                "valid": True,
                "ticket_id": str(t.ticket_id),
                "serial": t.serial,
                "user_id": t.user_id,
                "leaf_index": bundle.leaf_index,
                "tree_size": checkpoint.size,
                "origin": checkpoint.origin,
                "root_hash": checkpoint.root.hex(),
            }
        )
    else:
        for line in (
            f"issuer signature (key {t.key_id})",
            "ledger entry matches the ticket and its holder",
            f"inclusion proof: leaf {bundle.leaf_index} of {checkpoint.size}",
            f"checkpoint signed by the ledger key ({checkpoint.origin})",
        ):
            print(f"{colour('ok', 'ok')}  {line}")
        print(colour(f"bundle verifies offline: golden ticket #{t.serial} of {t.user_id}", "ok"))
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """Create the issuer and ledger key files (mode 0600); never overwrites an existing key."""
    from golden_press.signing import key_id_for
    from service.keys import KeyFileError, generate_key_file

    s = settings()
    made = {}
    for name, path in (("issuer", s.signing_key_file), ("ledger", s.ledger_key_file)):
        if path.exists():
            if not args.json:
                print(f"{name:<7} {path} exists; kept")
            continue
        try:
            key = generate_key_file(path)
        except KeyFileError as exc:
            raise CliError("InvalidRequest", str(exc)) from exc
        made[name] = {"path": str(path), "key_id": key_id_for(bytes(key.verify_key))}
        if not args.json:
            print(f"{name:<7} {path} written (key id {made[name]['key_id']})")
    if args.json:
        emit_json(made)
    return 0


async def cmd_admin(args: argparse.Namespace, endpoint: Endpoint) -> int:
    """Admin verbs go straight to PostgreSQL (they are not part of the public API)."""
    from golden_press.errors import GoldenError
    from service import admin

    try:
        if args.admin_verb == "set-cap":
            cap = await admin.set_cap(endpoint.dsn, args.cap, args.scope)
            result: dict[str, Any] = {"cap": cap.cap, "scope": cap.scope, "used": cap.used}
            text = f"cap is now {cap.cap} ({cap.scope}); {cap.used} ticket(s) count against it"
        elif args.admin_verb == "deny":
            await admin.deny_user(endpoint.dsn, args.user, args.reason or "")
            result = {"denied": args.user}
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
            revoked = await admin.revoke_ticket(s, args.ticket_id, args.reason)
            result = {"revoked": str(revoked.ticket_id), "leaf_index": revoked.leaf_index}
            text = f"ticket {revoked.ticket_id} revoked (ledger leaf {revoked.leaf_index})"
    except GoldenError as err:
        raise CliError(err.reason.value, err.message) from err
    except OSError as exc:
        raise CliError(
            "Unavailable", f"cannot reach PostgreSQL ({exc.strerror or exc})", EXIT_UNAVAILABLE
        ) from exc
    if args.json:
        emit_json(result)
    else:
        print(text)
    return 0


async def cmd_audit(args: argparse.Namespace) -> int:
    """Reconcile tickets, ledger, outbox and stream (service.audit); exit 1 on any finding."""
    from service.audit import audit_main

    s = settings()
    if not os.environ.get("GOLDEN_PG_DSN"):
        try:
            from service.devstack import running_stack

            info = running_stack()
        except Exception:
            info = None
        if info is not None:
            s = info.settings()
    try:
        return await audit_main(s, json_output=args.json)
    except OSError as exc:
        raise CliError(
            "Unavailable", f"cannot reach PostgreSQL or NATS ({exc})", EXIT_UNAVAILABLE
        ) from exc


# ---- parser and entry point -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Every verb of the interface sheet; each takes --json."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--addr", help="gRPC API address (default: env, dev stack, settings)")
    common.add_argument("--token", help="bearer token for issue/redeem (default: tokens file)")

    parser = argparse.ArgumentParser(
        prog="golden-press", description="Mint, verify and redeem the five Golden Tickets."
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    dev = verbs.add_parser("dev", help="the embedded dev stack")
    dev_verbs = dev.add_subparsers(dest="dev_verb", required=True)
    up = dev_verbs.add_parser(
        "up", help="start PostgreSQL, NATS, Temporal, worker and API", parents=[common]
    )
    up.add_argument("--detach", action="store_true", help="start, print one JSON line, return")
    dev_verbs.add_parser("down", help="stop what `dev up` started", parents=[common])

    verbs.add_parser(
        "demo", help="issue 5, refuse the 6th, verify, prove, redeem", parents=[common]
    )

    issue = verbs.add_parser("issue", help="mint a ticket", parents=[common])
    issue.add_argument("--user", required=True)
    issue.add_argument("--request-id", help="idempotency key (default: a fresh one)")

    verify = verbs.add_parser(
        "verify", help="verify a ticket id or a bundle file", parents=[common]
    )
    verify.add_argument("subject", metavar="ID|BUNDLE")

    get = verbs.add_parser("get", help="show a ticket", parents=[common])
    get.add_argument("ticket_id", metavar="ID")

    lst = verbs.add_parser("list", help="list tickets", parents=[common])
    lst.add_argument("--state", choices=STATES)
    lst.add_argument("--user")
    lst.add_argument("--limit", type=int, default=10_000)

    proof = verbs.add_parser("proof", help="a ticket's proof bundle", parents=[common])
    proof.add_argument("ticket_id", metavar="ID")
    proof.add_argument("-o", "--output", metavar="BUNDLE")

    verbs.add_parser("checkpoint", help="the latest signed checkpoint", parents=[common])

    redeem = verbs.add_parser("redeem", help="redeem a ticket", parents=[common])
    redeem.add_argument("ticket_id", metavar="ID")
    redeem.add_argument("--user", required=True)
    redeem.add_argument("--bundle", metavar="BUNDLE", help="default: fetch the proof first")

    ledger = verbs.add_parser("ledger", help="offline ledger tools")
    ledger_verbs = ledger.add_subparsers(dest="ledger_verb", required=True)
    lv = ledger_verbs.add_parser("verify", help="verify a bundle offline", parents=[common])
    lv.add_argument("bundle", metavar="BUNDLE")
    lv.add_argument(
        "--keys", metavar="FILE", help="trust roots (default: STATE_DIR/public-keys.json)"
    )

    verbs.add_parser("audit", help="audit ledger, tickets and events", parents=[common])

    admin = verbs.add_parser("admin", help="operator verbs (PostgreSQL)")
    admin_verbs = admin.add_subparsers(dest="admin_verb", required=True)
    sc = admin_verbs.add_parser("set-cap", help="change the cap and its scope", parents=[common])
    sc.add_argument("--cap", type=int, required=True)
    sc.add_argument("--scope", choices=("live", "lifetime"), required=True)
    deny = admin_verbs.add_parser("deny", help="put a user on the deny-list", parents=[common])
    deny.add_argument("user", metavar="USER")
    deny.add_argument("--reason", default="")
    rv = admin_verbs.add_parser("revoke", help="revoke a ticket (fraud)", parents=[common])
    rv.add_argument("ticket_id", metavar="ID")
    rv.add_argument("--reason", required=True)

    keys = verbs.add_parser("keys", help="key files and public keys")
    key_verbs = keys.add_subparsers(dest="keys_verb", required=True)
    key_verbs.add_parser("generate", help="create issuer and ledger key files", parents=[common])
    ke = key_verbs.add_parser(
        "export", help="write public keys for `ledger verify`", parents=[common]
    )
    ke.add_argument("-o", "--output", metavar="FILE")
    return parser


ApiVerb = Callable[[Api, argparse.Namespace], Awaitable[int]]
API_VERBS: dict[str, ApiVerb] = {
    "issue": cmd_issue,
    "verify": cmd_verify,
    "get": cmd_get,
    "list": cmd_list,
    "proof": cmd_proof,
    "checkpoint": cmd_checkpoint,
    "redeem": cmd_redeem,
}


async def run_async(args: argparse.Namespace) -> int:
    """Run one parsed verb that needs no subprocess management; CliError propagates."""
    if args.verb == "ledger":
        return cmd_ledger_verify(args)
    if args.verb == "keys" and args.keys_verb == "generate":
        return cmd_keys_generate(args)
    if args.verb == "audit":
        return await cmd_audit(args)
    endpoint = resolve_endpoint(args)
    if args.verb == "admin":
        return await cmd_admin(args, endpoint)
    api = Api(endpoint)
    try:
        if args.verb == "keys":
            return await cmd_keys_export(api, args)
        return await API_VERBS[args.verb](api, args)
    finally:
        await api.close()


def report(err: CliError) -> int:
    """The one-line rejection on stderr; the exit code."""
    print(f"error: {err.reason}: {err.message}", file=sys.stderr)
    return err.code


async def run(argv: Sequence[str] | None = None) -> int:
    """Parse and run (in-process: what tests call); never exits the interpreter."""
    args = build_parser().parse_args(argv)
    try:
        return await run_async(args)
    except CliError as err:
        return report(err)


def main(argv: Sequence[str] | None = None) -> None:
    """Console script `golden-press`: ends with os._exit (Temporal SDK exit-time crash)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        sys.stdout.flush()
        os._exit(int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE)
    try:
        if args.verb == "dev":
            from service import devstack

            code = devstack.dev_up(args.detach) if args.dev_verb == "up" else devstack.dev_down()
        elif args.verb == "demo":
            from service.demo import run_demo

            code = run_demo()
        else:
            code = asyncio.run(run_async(args))
    except CliError as err:
        code = report(err)
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
