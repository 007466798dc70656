"""The CLI's side of the wire: where the API is, one gRPC call, and the error report.

Where it connects: GOLDEN_GRPC_ADDR and the first token of GOLDEN_API_TOKENS_FILE when set, else
the dev stack recorded in GOLDEN_STATE_DIR/stack.json (`golden-press dev up`), else the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from golden_press import errors
from golden_press.settings import Settings, settings_problem
from service.api.channel import ClientTls, bearer, client_tls, first_token, open_channel

if TYPE_CHECKING:
    from service.devstack.stack import StackInfo

#: Exit codes (README, "Exit codes"): 0 done; 1 a rejection (a reason type: the request was
#: judged and refused, a ticket or bundle does not verify, the audit found something); 2 usage
#: (bad arguments, a missing file); 3 a server the verb needs is unreachable; 4 the call's
#: deadline passed while its saga still runs (it may yet finish: see the workflow).
EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = errors.EXIT_USAGE
EXIT_UNAVAILABLE = errors.EXIT_UNAVAILABLE
EXIT_STILL_RUNNING = 4
#: How long issue/redeem wait for their saga by default (--timeout).
WRITE_TIMEOUT_S = 120.0


class CliError(Exception):
    """A failure to report as `error: <reason>: <message>` (or a JSON error) with an exit code.

    `extra` joins the JSON error document (e.g. the `verification` of a ticket that failed it).
    """

    def __init__(
        self,
        reason: str,
        message: str,
        code: int = EXIT_REJECTED,
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.code = code
        self.extra = extra or {}


def settings() -> Settings:
    """Settings from the environment (mypy without the pydantic plugin wants the aliases); a
    variable that does not parse is a usage error naming it."""
    try:
        return Settings()
    except ValidationError as exc:
        raise CliError("InvalidRequest", settings_problem(exc), EXIT_USAGE) from exc


@dataclass(frozen=True)
class Endpoint:
    """Where the API is and the token writes present."""

    address: str
    token: str
    dsn: str
    #: Temporal of the running dev stack (admin revoke), empty: from settings.
    temporal: str = ""
    task_queue: str = ""
    #: TLS: the CA that signed the API's certificate (None: plaintext) and, for mutual TLS,
    #: the client certificate and key.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def one_error(exc: BaseException) -> str:
    """An exception as one short line (no traceback, no pages of caller input)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def dev_stack(needed: bool) -> StackInfo | None:
    """The dev stack recorded in the state dir, when one runs. A stack that is partly down is
    never touched (only `dev down` stops parts of it); it is an error only when this verb
    needs it (`needed`), and otherwise simply not used."""
    from service.devstack.stack import StackDown, running_stack

    try:
        return running_stack()
    except StackDown as err:
        if needed:
            raise CliError("Unavailable", str(err), EXIT_UNAVAILABLE) from err
        return None


def require_dsn(dsn: str) -> str:
    """The database a verb writes to must be named: by GOLDEN_PG_DSN or a running dev stack."""
    if not dsn:
        raise CliError(
            "Unavailable",
            "no database named: set GOLDEN_PG_DSN or start the dev stack (`golden-press dev up`)",
            EXIT_UNAVAILABLE,
        )
    return dsn


def resolve_endpoint(args: argparse.Namespace, *, needs_dsn: bool = False) -> Endpoint:
    """--addr/--token flags, else the environment, else the running dev stack, else (the API
    address only) the defaults. The database is never a default: see require_dsn."""
    s = settings()
    address = getattr(args, "addr", None) or os.environ.get("GOLDEN_GRPC_ADDR", "")
    token = first_token(s.api_tokens_file) if os.environ.get("GOLDEN_API_TOKENS_FILE") else ""
    dsn = os.environ.get("GOLDEN_PG_DSN", "")
    temporal = task_queue = ""
    stack_env: dict[str, str] = {}
    if not (address and dsn):
        info = dev_stack(needed=not address or (needs_dsn and not dsn))
        if info is not None:
            address = address or info.grpc
            token = token or info.token
            dsn = dsn or info.postgres
            stack_env = info.env
            if not os.environ.get("TEMPORAL_ADDRESS"):
                temporal, task_queue = info.temporal, info.task_queue
    # --ca-file/--cert-file/--key-file, else GOLDEN_TLS_*, else what the dev stack was given.
    tls = client_tls(args, stack_env)
    return Endpoint(
        address=address or s.grpc_addr,
        token=getattr(args, "token", None) or token or first_token(s.api_tokens_file),
        dsn=dsn,
        temporal=temporal,
        task_queue=task_queue,
        ca_file=tls.ca_file,
        cert_file=tls.cert_file,
        key_file=tls.key_file,
    )


class Api:
    """A gRPC channel and stub plus bearer metadata for writes."""

    def __init__(self, endpoint: Endpoint) -> None:

        from service.api.pb import golden_pb2, golden_pb2_grpc

        self.endpoint = endpoint
        self.pb = golden_pb2
        from service.api.tls import TlsConfigError

        tls = ClientTls(endpoint.ca_file, endpoint.cert_file, endpoint.key_file)
        try:
            self.channel = open_channel(endpoint.address, tls)
        except TlsConfigError as exc:
            raise CliError("InvalidRequest", str(exc), EXIT_USAGE) from exc
        self.stub = golden_pb2_grpc.GoldenPressStub(self.channel)

    @property
    def auth(self) -> list[tuple[str, str]]:
        """Bearer metadata: writes need it, and reads show holders only with it."""
        return bearer(self.endpoint.token)

    async def call(
        self,
        method: str,
        request: Any,
        *,
        write: bool = False,
        deadline_s: float = WRITE_TIMEOUT_S,
        workflow_id: str = "",
        hint: str = "",
    ) -> Any:
        """One RPC; a failed call becomes a CliError carrying the ErrorInfo reason.

        The token (when known) goes with every call: without it GetTicket, ListTickets and
        GetInclusionProof answer with the public view (docs/privacy.md). A write whose deadline
        passes while its saga runs is not an outage: it says `still running: workflow <id>`
        (EXIT_STILL_RUNNING) and `hint`: what to do next (the same issuance request joins its
        saga, and the user has not seen the request id the CLI generated; a redemption is
        followed with `status`).
        """
        import grpc

        from service.api.convert import error_reason

        fn = getattr(self.stub, method)
        try:
            return await fn(request, metadata=self.auth or None, timeout=deadline_s)
        except grpc.aio.AioRpcError as err:
            reason = error_reason(err) or err.code().name
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and workflow_id:
                then = f"; {hint}" if hint else ""
                raise CliError(
                    "StillRunning",
                    f"still running: workflow {workflow_id}{then}",
                    EXIT_STILL_RUNNING,
                ) from err
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                if not error_reason(err):
                    raise CliError(
                        "Unavailable",
                        f"cannot reach the golden-press API at {self.endpoint.address} "
                        "(is `golden-press dev up` running? TLS: does --ca-file match the "
                        "server, and does it want a client certificate?)"
                        if self.endpoint.ca_file
                        else f"cannot reach the golden-press API at {self.endpoint.address} "
                        "(is `golden-press dev up` running?)",
                        EXIT_UNAVAILABLE,
                    ) from err
            raise CliError(reason, err.details() or err.code().name) from err

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()


def error_document(err: CliError) -> dict[str, Any]:
    """The JSON error envelope: {"ok": false, "error": {reason, message, exit_code}, ...extra}."""
    return {
        "ok": False,
        "error": {"reason": err.reason, "message": err.message, "exit_code": err.code},
        **err.extra,
    }


def report(err: CliError, *, as_json: bool = False) -> int:
    """The rejection: one JSON document on stdout with --json, else one line on stderr."""
    if as_json:
        print(json.dumps(error_document(err), indent=2, default=str))
    else:
        print(f"error: {err.reason}: {err.message}", file=sys.stderr)
    return err.code


def is_file(path: str) -> bool:
    """An existing regular file."""
    return Path(path).is_file()


def looks_like_path(value: str) -> bool:
    """A file name rather than an id: has a directory part or a file extension, or starts ./~."""
    return (
        "/" in value
        or "\\" in value
        or value.startswith((".", "~"))
        or Path(value).suffix.lower() in {".json", ".bundle", ".txt"}
    )


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def read_text(path: str) -> str:
    """A file the user named; a missing one is FileNotFound (usage), not a traceback."""
    try:
        return Path(path).read_text()
    except FileNotFoundError as exc:
        raise CliError("FileNotFound", f"no such file: {path}", EXIT_USAGE) from exc
    except OSError as exc:
        raise CliError("InvalidRequest", f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from exc
