"""`golden-press`: the command line, speaking to the gRPC API (admin verbs go to PostgreSQL).

Where it connects: GOLDEN_GRPC_ADDR and the first token of GOLDEN_API_TOKENS_FILE when set, else
the dev stack recorded in GOLDEN_STATE_DIR/stack.json (`golden-press dev up`), else the defaults.
Every verb takes --json. A rejection exits non-zero with one line: `error: <Reason>: <message>`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence

from service.cli.admin import cmd_admin, cmd_audit
from service.cli.client import (
    EXIT_USAGE,
    Api,
    CliError,
    report,
    resolve_endpoint,
)
from service.cli.keys import cmd_keys_export, cmd_keys_generate, cmd_ledger_verify
from service.cli.output import (
    STATES,
)
from service.cli.tickets import (
    cmd_checkpoint,
    cmd_get,
    cmd_issue,
    cmd_list,
    cmd_proof,
    cmd_redeem,
    cmd_verify,
)


def build_parser() -> argparse.ArgumentParser:
    """Every verb of the interface sheet; each takes --json."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--addr", help="gRPC API address (default: env, dev stack, settings)")
    common.add_argument("--token", help="bearer token for issue/redeem (default: tokens file)")
    common.add_argument(
        "--ca-file", help="dial TLS trusting this CA (default: GOLDEN_TLS_CA_FILE; none: plaintext)"
    )
    common.add_argument(
        "--cert-file", help="client certificate for mutual TLS (GOLDEN_TLS_CLIENT_CERT_FILE)"
    )
    common.add_argument("--key-file", help="its private key (GOLDEN_TLS_CLIENT_KEY_FILE)")

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
            from service.devstack import stack as devstack

            code = devstack.dev_up(args.detach) if args.dev_verb == "up" else devstack.dev_down()
        elif args.verb == "demo":
            from service.cli.demo import run_demo

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
