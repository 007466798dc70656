"""`golden-press`: the command line, speaking to the gRPC API (admin verbs go to PostgreSQL).

Where it connects: GOLDEN_GRPC_ADDR and the first token of GOLDEN_API_TOKENS_FILE when set, else
the dev stack recorded in GOLDEN_STATE_DIR/stack.json (`golden-press dev up`), else the defaults.
Every verb takes --json. A rejection exits non-zero with one line: `error: <Reason>: <message>`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

from golden_press.errors import InvalidRequest, Unreachable
from service.api.channel import add_tls_arguments
from service.cli.admin import cmd_admin, cmd_audit
from service.cli.client import (
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    WRITE_TIMEOUT_S,
    Api,
    CliError,
    one_error,
    report,
    resolve_endpoint,
    settings,
)
from service.cli.dev import cmd_dev
from service.cli.dev import demo as cmd_demo
from service.cli.keys import cmd_keys_export, cmd_keys_generate, cmd_ledger_verify
from service.cli.monitor import add_monitor_arguments, cmd_monitor
from service.cli.output import (
    STATES,
    emit_json,
)
from service.cli.status import cmd_status
from service.cli.tickets import (
    cmd_checkpoint,
    cmd_get,
    cmd_issue,
    cmd_list,
    cmd_proof,
    cmd_redeem,
    cmd_verify,
)
from service.witness.serve import ServeError
from service.witness.serve import add_arguments as add_witness_arguments
from service.witness.serve import build as build_witness
from service.witness.serve import serve as serve_witness


class CliParser(argparse.ArgumentParser):
    """argparse whose usage errors become CliError (so --json reports them as JSON too)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


class UsageError(CliError):
    """A command line that does not parse (exit 2), with the parser that refused it."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__("Usage", message, EXIT_USAGE)
        self.parser = parser


class ShowVersion(Exception):
    """`--version` was given."""


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, *_args: Any, **_kwargs: Any) -> None:
        raise ShowVersion


def version() -> str:
    """The installed package's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("golden-press")
    except PackageNotFoundError:
        return "unknown"


def _verb(
    verbs: Any, name: str, summary: str, example: str, parents: Sequence[argparse.ArgumentParser]
) -> argparse.ArgumentParser:
    """One verb: a one-line help, the same as its description, and an example as epilog."""
    return verbs.add_parser(  # type: ignore[no-any-return]
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=parents,
    )


def _group(verbs: Any, name: str, summary: str, example: str, dest: str) -> Any:
    """A verb that groups sub-verbs (`dev`, `ledger`, ...): like _verb, a one-line help that is
    also its description and an example; its --help lists each sub-verb with its one line."""
    group = verbs.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=f"example:\n  {example}\n\n`golden-press {name} VERB --help` describes each verb.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return group.add_subparsers(dest=dest, required=True, metavar="VERB", title="verbs")


#: --timeout of the verbs that wait for a saga.
TIMEOUT_HELP = (
    "seconds to wait for the saga (default 120); past it the saga goes on and the call says"
    " `still running: workflow <id>` with exit code 4"
)


def build_parser() -> argparse.ArgumentParser:
    """Every verb of the interface sheet; each takes --json; only verbs that call the API
    take --addr/--token (offline verbs such as `ledger verify` and `keys generate` do not)."""
    output = CliParser(add_help=False)
    output.add_argument(
        "--json", action="store_true", help="print one JSON document (errors included)"
    )
    network = CliParser(add_help=False)
    network.add_argument(
        "--addr",
        metavar="HOST:PORT",
        help="gRPC API address (default: GOLDEN_GRPC_ADDR, the running dev stack, settings)",
    )
    network.add_argument(
        "--token",
        help="bearer token for issue and redeem (default: GOLDEN_API_TOKENS_FILE's first line)",
    )
    add_tls_arguments(network)
    saga = CliParser(add_help=False)  # the verbs that start a saga and wait for it
    saga.add_argument("--timeout", type=float, default=WRITE_TIMEOUT_S, help=TIMEOUT_HELP)
    saga.add_argument(
        "--no-wait",
        action="store_true",
        help="return once the saga has started: print its workflow id (see `status`)",
    )
    local = [output]
    remote = [output, network]
    starts_saga = [output, network, saga]

    parser = CliParser(
        prog="golden-press",
        description="Mint, verify and redeem the five Golden Tickets.",
        epilog="example:\n  golden-press demo\n\n"
        "`golden-press VERB --help` describes each verb; --json prints one JSON document.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="print the version of golden-press and exit"
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    dev_verbs = _group(
        verbs,
        "dev",
        "run the embedded dev stack on this machine (up, down, status)",
        "golden-press dev up --detach",
        "dev_verb",
    )
    up = _verb(
        dev_verbs,
        "up",
        "start PostgreSQL, NATS, Temporal, a witness, the worker and the API"
        " (state in GOLDEN_STATE_DIR, default .golden/)",
        "golden-press dev up --detach",
        local,
    )
    up.add_argument(
        "--detach", action="store_true", help="start in the background, print one JSON line"
    )
    _verb(
        dev_verbs,
        "down",
        "stop everything `dev up` started",
        "golden-press dev down",
        local,
    )
    _verb(
        dev_verbs,
        "status",
        "each part of the dev stack, running or not (exit 0 only when all run)",
        "golden-press dev status",
        local,
    )
    _verb(
        verbs,
        "demo",
        "issue 5, refuse the 6th, verify, prove, redeem (starts a dev stack if none runs)",
        "golden-press demo",
        local,
    )

    issue = _verb(
        verbs, "issue", "mint a ticket for a user", "golden-press issue --user alice", starts_saga
    )
    issue.add_argument("--user", required=True, help="the user the ticket is for")
    issue.add_argument(
        "--request-id",
        help="idempotency key: a retry with the same key returns the same ticket "
        "(default: a fresh one)",
    )

    verify = _verb(
        verbs,
        "verify",
        "verify a ticket id or a proof bundle file against the API's keys and state",
        "golden-press verify ticket.bundle.json",
        remote,
    )
    verify.add_argument(
        "subject", metavar="ID|BUNDLE", help="a ticket id, or the path of a proof bundle"
    )

    get = _verb(verbs, "get", "show a ticket", "golden-press get 3f2c...e1", remote)
    get.add_argument("ticket_id", metavar="ID", help="the ticket id")

    lst = _verb(verbs, "list", "list tickets by serial", "golden-press list --state issued", remote)
    lst.add_argument("--state", choices=STATES, help="only tickets in this state")
    lst.add_argument("--user", help="only this user's tickets")
    lst.add_argument(
        "--limit", type=int, default=10_000, help="at most this many tickets (default 10000)"
    )
    lst.add_argument(
        "--page-token",
        default="",
        help="continue after a previous list (its next_page_token)",
    )

    proof = _verb(
        verbs,
        "proof",
        "export a ticket's proof bundle (inclusion proof and signed checkpoint)",
        "golden-press proof 3f2c...e1 -o ticket.bundle.json",
        remote,
    )
    proof.add_argument("ticket_id", metavar="ID", help="the ticket id")
    proof.add_argument(
        "-o", "--output", metavar="BUNDLE", help="write the bundle to this file (default: stdout)"
    )

    _verb(
        verbs,
        "checkpoint",
        "show the ledger's latest signed checkpoint",
        "golden-press checkpoint --json",
        remote,
    )

    redeem = _verb(
        verbs,
        "redeem",
        "redeem a ticket for its issuee",
        "golden-press redeem 3f2c...e1 --user alice",
        starts_saga,
    )
    redeem.add_argument("ticket_id", metavar="ID", help="the ticket id")
    redeem.add_argument("--user", required=True, help="who presents the ticket (the issuee)")
    redeem.add_argument(
        "--bundle",
        metavar="BUNDLE",
        help="the proof bundle the holder carries (default: fetch it from the API first)",
    )

    status = _verb(
        verbs,
        "status",
        "show a saga's current step, last error and attempts (from Temporal)",
        "golden-press status issue-my-request-1",
        remote,
    )
    status.add_argument(
        "subject",
        metavar="ID",
        help="a ticket id (every saga of that ticket) or a workflow id",
    )

    ledger_verbs = _group(
        verbs,
        "ledger",
        "check the ledger offline, with pinned public keys only (verify)",
        "golden-press ledger verify ticket.bundle.json --keys public-keys.json",
        "ledger_verb",
    )
    lv = _verb(
        ledger_verbs,
        "verify",
        "verify a proof bundle offline, with pinned public keys only (no server)",
        "golden-press ledger verify ticket.bundle.json --keys public-keys.json",
        local,
    )
    lv.add_argument("bundle", metavar="BUNDLE", help="the proof bundle file")
    lv.add_argument(
        "--keys",
        metavar="FILE",
        help="trust roots from `keys export` (default: STATE_DIR/public-keys.json)",
    )

    _verb(
        verbs,
        "audit",
        "check tickets, ledger, checkpoints, outbox and events against each other",
        "golden-press audit --json",
        local,
    )
    add_monitor_arguments(
        _verb(
            verbs,
            "monitor",
            "verify the public ledger from public data only (tiles URL, directory or gRPC)",
            "golden-press monitor http://127.0.0.1:8081/ --vkey 'origin+1a2b3c4d+AQ...' "
            "--state monitor.json --follow",
            local,
        )
    )

    admin_verbs = _group(
        verbs,
        "admin",
        "operator verbs, straight to PostgreSQL (set-cap, deny, revoke)",
        "golden-press admin set-cap --cap 5 --scope lifetime",
        "admin_verb",
    )
    sc = _verb(
        admin_verbs,
        "set-cap",
        "change the cap and its scope",
        "golden-press admin set-cap --cap 5 --scope lifetime",
        local,
    )
    sc.add_argument("--cap", type=int, required=True, help="how many tickets may count")
    sc.add_argument(
        "--scope",
        choices=("live", "lifetime"),
        required=True,
        help="live: redeemed and revoked tickets free their slot; lifetime: five, ever",
    )
    deny = _verb(
        admin_verbs,
        "deny",
        "put a user on the deny-list",
        "golden-press admin deny mallory --reason 'bot'",
        local,
    )
    deny.add_argument("user", metavar="USER", help="the user id to deny")
    deny.add_argument("--reason", default="", help="why (kept with the entry)")
    rv = _verb(
        admin_verbs,
        "revoke",
        "revoke a ticket (fraud): a ledger entry, an event, never valid again",
        "golden-press admin revoke 3f2c...e1 --reason 'stolen'",
        local,
    )
    rv.add_argument("ticket_id", metavar="ID", help="the ticket id")
    rv.add_argument(
        "--reason",
        required=True,
        help="why, e.g. 'fraud' (written to the PUBLIC ledger entry for ever, and the event: "
        "never a user id or personal data; docs/privacy.md)",
    )

    key_verbs = _group(
        verbs,
        "keys",
        "create the key files or export the public keys (generate, export)",
        "golden-press keys export -o public-keys.json",
        "keys_verb",
    )
    _verb(
        key_verbs,
        "generate",
        "create the issuer and ledger key files (mode 0600; never overwrites)",
        "GOLDEN_SIGNING_KEY_FILE=secrets/issuer.key golden-press keys generate",
        local,
    )
    ke = _verb(
        key_verbs,
        "export",
        "write every public key (trust roots) for `ledger verify`",
        "golden-press keys export -o public-keys.json",
        remote,
    )
    ke.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write them (default: STATE_DIR/public-keys.json)",
    )

    witness_verbs = _group(
        verbs,
        "witness",
        "run a C2SP tlog-witness that cosigns the ledger's checkpoints (serve)",
        "golden-press witness serve --log 'golden-press.local/ledger+1a2b3c4d+AT...'",
        "witness_verb",
    )
    add_witness_arguments(
        _verb(
            witness_verbs,
            "serve",
            "cosign checkpoints that extend what this witness saw (docs/witnesses.md)",
            "golden-press witness serve --log 'golden-press.local/ledger+1a2b3c4d+AT...'",
            local,
        )
    )
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
    "status": cmd_status,
}


async def run_async(args: argparse.Namespace) -> int:
    """Run one parsed verb that needs no subprocess management; CliError propagates, a server
    a verb could not connect to is Unavailable naming that server, and input the verb cannot
    use (a tokens file it cannot read, ...) is InvalidRequest, exit 2, whichever verb."""
    try:
        return await _run_verb(args)
    except Unreachable as exc:
        raise CliError("Unavailable", str(exc), EXIT_UNAVAILABLE) from exc
    except InvalidRequest as exc:
        raise CliError("InvalidRequest", exc.message, EXIT_USAGE) from exc


async def _run_verb(args: argparse.Namespace) -> int:
    if args.verb == "ledger":
        return cmd_ledger_verify(args)
    if args.verb == "keys" and args.keys_verb == "generate":
        return cmd_keys_generate(args)
    if args.verb == "audit":
        return await cmd_audit(args)
    if args.verb == "monitor":
        return await cmd_monitor(args)
    endpoint = resolve_endpoint(args, needs_dsn=args.verb == "admin")
    if args.verb == "admin":
        return await cmd_admin(args, endpoint)
    api = Api(endpoint)
    try:
        if args.verb == "keys":
            return await cmd_keys_export(api, args)
        return await API_VERBS[args.verb](api, args)
    finally:
        await api.close()


def wants_json(argv: Sequence[str] | None) -> bool:
    """--json anywhere on the command line (known before parsing, for usage errors)."""
    return "--json" in (sys.argv[1:] if argv is None else list(argv))


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; raises UsageError or ShowVersion instead of exiting."""
    return build_parser().parse_args(argv)


def show_version(as_json: bool) -> int:
    """`--version`: the version line, or its JSON document."""
    if as_json:
        emit_json({"version": version()})
    else:
        print(f"golden-press {version()}")
    return 0


def report_usage(err: UsageError, as_json: bool) -> int:
    """A command line that does not parse: usage and the error, or the JSON error."""
    if not as_json:
        err.parser.print_usage(sys.stderr)
    return report(err, as_json=as_json)


async def run(argv: Sequence[str] | None = None) -> int:
    """Parse and run (in-process: what tests call); never exits the interpreter."""
    as_json = wants_json(argv)
    try:
        args = parse(argv)
    except ShowVersion:
        return show_version(as_json)
    except UsageError as err:
        return report_usage(err, as_json)
    try:
        return await run_async(args)
    except CliError as err:
        return report(err, as_json=as_json)


def run_local(args: argparse.Namespace, as_json: bool) -> int:
    """Run a parsed verb in this process, the ones managing processes included; every failure
    is reported like a rejection (the JSON envelope with --json), never a traceback."""
    try:
        if args.verb in ("dev", "witness", "demo"):
            settings()  # a variable that does not parse is named before anything starts
        if args.verb == "dev":
            return cmd_dev(args)
        if args.verb == "witness":
            try:
                witness = build_witness(args)
            except ServeError as exc:  # no --log, a bad vkey, key or state file, a busy port
                raise CliError("InvalidRequest", str(exc), EXIT_USAGE) from exc
            return serve_witness(witness)
        if args.verb == "demo":
            return cmd_demo(args.json)
        return asyncio.run(run_async(args))
    except CliError as err:
        return report(err, as_json=as_json)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise  # main() ends quietly: there is no one left to report to
    except Exception as exc:  # a bug or an unexpected outage: one line, never a traceback
        return report(CliError("Internal", one_error(exc)), as_json=as_json)


def main(argv: Sequence[str] | None = None) -> None:
    """Console script `golden-press`: ends with os._exit (Temporal SDK exit-time crash)."""
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`golden-press list --json | head -1`): nothing more to tell it,
        # and no traceback about it. The exit code a shell shows for a tool killed by SIGPIPE.
        code = 128 + signal.SIGPIPE
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(code)


def _main(argv: Sequence[str] | None) -> int:
    as_json = wants_json(argv)
    try:
        args = parse(argv)
    except ShowVersion:
        return show_version(as_json)
    except UsageError as err:
        return report_usage(err, as_json)
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    return run_local(args, as_json)


if __name__ == "__main__":
    main()
