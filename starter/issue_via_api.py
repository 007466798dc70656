"""Minimal API client: mint a Golden Ticket through the gRPC API, over TLS. Copy this file to begin.

    python -m starter.issue_via_api --user alice [--request-id my-key] [--addr HOST:PORT]
        [--ca-file ca.pem [--cert-file client.pem --key-file client.key]]

What a downstream service does (the other starters run inside the service, next to its database
and Temporal): one IssueTicket call with a bearer token, dialled the way the CLI dials: TLS when
given a CA (`--ca-file` / GOLDEN_TLS_CA_FILE) and mutual TLS with a client certificate
(`--cert-file` / GOLDEN_TLS_CLIENT_CERT_FILE, `--key-file` / GOLDEN_TLS_CLIENT_KEY_FILE);
service.api.channel is that shared code. The address is `--addr`, else GOLDEN_GRPC_ADDR; the token
`--token`, else the first line of GOLDEN_API_TOKENS_FILE. A rejection prints
`error: <Reason>: <message>` and exits 1 (the ErrorInfo reason: CapReached, OnePerUser, ...); an
API it cannot reach (or whose certificate it does not trust, or that wants a client certificate)
exits 3.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence

import grpc

from golden_press.errors import InvalidRequest
from service.api.channel import add_tls_arguments, bearer, client_tls, first_token, open_channel
from service.api.convert import error_reason
from service.api.pb import golden_pb2, golden_pb2_grpc
from service.api.tls import TlsConfigError
from starter.environment import run_starter, settings_from_environment

#: Exit codes, as the CLI's: rejected, bad arguments, API unreachable.
EXIT_REJECTED, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3


def parser() -> argparse.ArgumentParser:
    """--user, --request-id, --addr, --token and the TLS flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--user", required=True)
    p.add_argument("--request-id", default="", help="idempotency key (default: fresh)")
    p.add_argument("--addr", help="gRPC API address (default: GOLDEN_GRPC_ADDR)")
    p.add_argument("--token", help="bearer token (default: GOLDEN_API_TOKENS_FILE's first line)")
    add_tls_arguments(p)
    return p


async def run(argv: Sequence[str] | None = None) -> int:
    """Issue one ticket and print it; the exit code."""
    args = parser().parse_args(argv)
    settings = settings_from_environment()
    if settings is None:
        return EXIT_USAGE
    try:
        token = args.token or first_token(settings.api_tokens_file)
        channel = open_channel(args.addr or settings.grpc_addr, client_tls(args))
    except (TlsConfigError, InvalidRequest) as err:
        detail = err.message if isinstance(err, InvalidRequest) else str(err)
        print(f"error: InvalidRequest: {detail}", file=sys.stderr)
        return EXIT_USAGE
    request = golden_pb2.IssueTicketRequest(
        user_id=args.user, request_id=args.request_id or f"starter-{uuid.uuid4()}"
    )
    async with channel:
        try:
            resp = await golden_pb2_grpc.GoldenPressStub(channel).IssueTicket(
                request, metadata=bearer(token), timeout=120
            )
        except grpc.aio.AioRpcError as err:
            reason = error_reason(err)
            print(f"error: {reason or err.code().name}: {err.details()}", file=sys.stderr)
            return EXIT_REJECTED if reason else EXIT_UNAVAILABLE
    ticket = resp.ticket
    print(f"ticket {ticket.ticket_id} serial {ticket.serial} for {ticket.user_id}")
    print(f"  workflow {resp.workflow_id}")
    return 0


def main() -> None:
    """Run, exit with os._exit (as the other starters)."""
    run_starter(run())


if __name__ == "__main__":
    main()
