"""`golden-press monitor SOURCE [--follow] [--state FILE] [--json]`: audit the public log.

SOURCE is a tiles base URL (`http(s)://...`), a tiles directory, or a gRPC address
(`grpc://host:port`, or a bare `host:port` that is not a directory). The monitor reads only
public data: no database, no token, no private key. The log's key comes from `--vkey` (a C2SP
verifier key `name+id+base64`) or the trust roots file (`--keys`, default
STATE_DIR/public-keys.json, as written by `keys export`). Witness keys and the quorum of
cosignatures each checkpoint needs come from `--witness`/`--quorum`, else GOLDEN_WITNESSES and
GOLDEN_WITNESS_QUORUM, else the trust roots file. The checks are golden_press.monitor's.

Exit 0 when everything holds, 1 naming the first violation, 2 on a usage error. The state file
(`--state`) remembers the last verified checkpoint so the next run detects a rollback or a
fork; it is only written after a clean verification.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from golden_press.bundle import TrustRoots, load_trust_roots
from golden_press.checkpoint import ED25519_TYPE, NoteVerifier, parse_vkey
from golden_press.cosignature import (
    COSIGNATURE_TYPE,
    CosignatureVerifier,
    WitnessPolicy,
    parse_quorum,
)
from golden_press.errors import GoldenError
from golden_press.monitor import (
    LogSource,
    Monitor,
    MonitorState,
    Progress,
    SourceUnreachable,
    Violation,
    ViolationKind,
)
from golden_press.tiles import Tile, encode_bundle
from service.api.channel import ClientTls, add_tls_arguments, client_tls
from service.cli.client import EXIT_REJECTED, EXIT_UNAVAILABLE, EXIT_USAGE, CliError, settings
from service.cli.keys import default_keys_file
from service.cli.output import emit_json
from service.cli.tiles_client import HttpSource

EXIT_VIOLATION = EXIT_REJECTED  # 1: the log breaks a rule
#: What --follow looks at again rather than exits on: an outage, cosignatures not there yet.
_RETRIED = frozenset({ViolationKind.UNREADABLE, ViolationKind.NO_QUORUM})
GRPC_PAGE = 256  # one entry bundle's worth per GetEntries call


class DirectorySource:
    """A tiles directory on disk (what the tile publisher writes)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def checkpoint(self) -> str:
        """The `checkpoint` file."""
        return (self.directory / "checkpoint").read_text("utf-8")

    def read(self, tile: Tile) -> bytes | None:
        """A tile file; a missing file raises (the log must serve it)."""
        return (self.directory / tile.path).read_bytes()


class GrpcSource:
    """The gRPC API: entries by GetEntries pages; no hash tiles (the tree is rebuilt instead)."""

    def __init__(self, address: str, tls: ClientTls | None = None, timeout: float = 30.0) -> None:
        from service.api.pb import golden_pb2, golden_pb2_grpc
        from service.api.tls import TlsConfigError, channel_credentials

        self._pb = golden_pb2
        self._timeout = timeout  # every call's deadline: a server that never answers is an error
        tls = tls or ClientTls()
        try:
            credentials = channel_credentials(tls.ca_file, tls.cert_file, tls.key_file)
        except TlsConfigError as exc:
            raise CliError("InvalidRequest", str(exc), EXIT_USAGE) from exc
        self._channel = (
            grpc.insecure_channel(address)
            if credentials is None
            else grpc.secure_channel(address, credentials)
        )
        self._stub = golden_pb2_grpc.GoldenPressStub(self._channel)

    def checkpoint(self) -> str:
        """GetCheckpoint's signed note."""
        try:
            answer = self._stub.GetCheckpoint(
                self._pb.GetCheckpointRequest(), timeout=self._timeout
            )
            return str(answer.checkpoint)
        except grpc.RpcError as exc:
            raise _rpc_error("GetCheckpoint", exc) from exc

    def read(self, tile: Tile) -> bytes | None:
        """An entry bundle built from GetEntries; hash tiles are not served (None)."""
        if not tile.is_bundle:
            return None
        start = tile.index * 256
        try:
            resp = self._stub.GetEntries(
                self._pb.GetEntriesRequest(start=start, end=start + tile.width),
                timeout=self._timeout,
            )
        except grpc.RpcError as exc:
            raise _rpc_error("GetEntries", exc) from exc
        return encode_bundle(list(resp.entries))

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


#: gRPC codes that mean no answer came from the API (down, unresolvable, silent past the deadline).
_UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def _rpc_error(method: str, exc: grpc.RpcError) -> OSError:
    """SourceUnreachable when the API could not be reached, else an unreadable answer."""
    code = exc.code()
    error = SourceUnreachable if code in _UNREACHABLE_CODES else OSError
    return error(f"{method}: {code.name}: {exc.details()}")


def open_source(spec: str, parallel: int = 4, tls: ClientTls | None = None) -> LogSource:
    """The source a SOURCE argument names (`tls`: how a gRPC source dials the API)."""
    if spec.startswith(("http://", "https://")):
        return HttpSource(spec, parallel=parallel)
    if spec.startswith("grpc://"):
        return GrpcSource(spec.removeprefix("grpc://"), tls)
    path = Path(spec)
    if path.is_dir():
        return DirectorySource(path)
    if ":" in spec and not path.exists():
        return GrpcSource(spec, tls)
    raise CliError(
        "InvalidRequest", f"monitor source {spec!r}: not a URL, directory or address", EXIT_USAGE
    )


def _unusable_key(exc: Exception) -> CliError:
    """No ledger key to check the log against: a usage error (exit 2) saying why."""
    return CliError(
        "InvalidRequest",
        f"no usable ledger key (--vkey or --keys): {exc}".splitlines()[0],
        EXIT_USAGE,
    )


def _trust_roots(args: argparse.Namespace) -> TrustRoots | None:
    """The trust roots file (--keys, default public-keys.json) unless --vkey names the key."""
    if args.vkey:
        return None
    keys_file = Path(args.keys) if args.keys else default_keys_file()
    try:
        return load_trust_roots(keys_file.read_text("utf-8"))
    except (OSError, ValueError, GoldenError) as exc:
        raise _unusable_key(exc) from exc


def load_verifiers(
    args: argparse.Namespace, roots: TrustRoots | None = None
) -> tuple[list[NoteVerifier], str]:
    """The log's key(s) and origin: --vkey, else the trust roots file."""
    try:
        if args.vkey:
            verifiers = [NoteVerifier.from_vkey(v) for v in _vkeys(args.vkey, ED25519_TYPE)]
            origins = sorted({v.name for v in verifiers})
            if len(origins) != 1:
                raise ValueError(f"--vkey names keys of several logs: {', '.join(origins)}")
            return verifiers, origins[0]
        roots = roots or _trust_roots(args)
        assert roots is not None
        return roots.ledger_verifiers(), roots.ledger_origin
    except (OSError, ValueError, GoldenError) as exc:
        raise _unusable_key(exc) from exc


def load_witness_policy(args: argparse.Namespace, roots: TrustRoots | None) -> WitnessPolicy:
    """Which witnesses must cosign, first found: --witness, GOLDEN_WITNESSES, the trust roots.

    The quorum is --quorum, else the one configured with those witnesses
    (GOLDEN_WITNESS_QUORUM, or the trust roots' `witness_quorum`), else all of them. No
    witnesses anywhere: the ledger's signature alone, as before witnesses existed.
    """
    try:
        quorum: str | int | None
        if args.witness:
            verifiers = tuple(
                CosignatureVerifier.from_vkey(v)
                for value in args.witness
                for v in _vkeys(value, COSIGNATURE_TYPE)
            )
            quorum = os.environ.get("GOLDEN_WITNESS_QUORUM")
        elif os.environ.get("GOLDEN_WITNESSES", "").strip():
            configured = settings()
            verifiers, quorum = configured.witness_policy().witnesses, configured.witness_quorum
        elif roots is not None:
            policy = roots.witness_policy()
            verifiers, quorum = policy.witnesses, policy.quorum
        else:
            verifiers, quorum = (), None
        named = "GOLDEN_WITNESS_QUORUM"
        if args.quorum is not None:
            quorum, named = args.quorum, "--quorum"
        return WitnessPolicy(verifiers, parse_quorum(quorum, len(verifiers), named))
    except (OSError, ValueError, GoldenError) as exc:
        raise CliError("InvalidRequest", f"witnesses: {exc}".splitlines()[0], EXIT_USAGE) from exc


def _vkeys(value: str, key_type: bytes) -> list[str]:
    """The vkeys a --vkey or --witness value names: itself, or the lines of a file holding one
    or more. A file of several (`keys export`'s `.vkeys`: ledger keys, then witness keys) gives
    those of `key_type`; the others are for the other flag."""
    candidate = Path(value)
    if not candidate.is_file():
        return [value]
    lines = [line.strip() for line in candidate.read_text("utf-8").splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines or [""]  # one key (or none): its parser names what is wrong with it
    picked = [line for line in lines if parse_vkey(line).key_type == key_type]
    if not picked:
        raise ValueError(f"{value}: none of its {len(lines)} vkeys has type 0x{key_type.hex()}")
    return picked


def _load_state(path: Path | None) -> MonitorState | None:
    if path is None or not path.exists():
        return None
    try:
        return MonitorState.model_validate_json(path.read_text("utf-8"))
    except ValueError as exc:
        raise CliError(
            "InvalidRequest", f"state file {path}: not a monitor state", EXIT_USAGE
        ) from exc


def _save_state(path: Path | None, state: MonitorState) -> None:
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(state.model_dump_json(indent=2) + "\n", "utf-8")
    tmp.replace(path)


def _progress_printer() -> Callable[[Progress], None]:
    """Progress lines on stderr (long runs), so --json stdout stays one document."""
    started = time.monotonic()

    def show(p: Progress) -> None:
        rate = p.entries / max(time.monotonic() - started, 1e-9)
        print(
            f"monitor: {p.entries:,} entries verified (tree size {p.target:,}), "
            f"{p.fetches:,} fetches, {rate:,.0f} entries/s",
            file=sys.stderr,
            flush=True,
        )

    return show


def run_monitor(args: argparse.Namespace) -> int:
    """The verb's body (synchronous: it runs on a thread of its own)."""
    roots = _trust_roots(args)
    verifiers, origin = load_verifiers(args, roots)
    witnesses = load_witness_policy(args, roots)
    state_path = Path(args.state) if args.state else None
    state = _load_state(state_path)
    source = open_source(args.source, args.parallel, client_tls(args))
    try:
        return _follow(args, source, verifiers, origin, state, witnesses, state_path)
    finally:
        close = getattr(source, "close", None)  # the gRPC source holds a channel
        if close is not None:
            close()


def _follow(
    args: argparse.Namespace,
    source: LogSource,
    verifiers: list[NoteVerifier],
    origin: str,
    state: MonitorState | None,
    witnesses: WitnessPolicy,
    state_path: Path | None,
) -> int:
    """Check once, or with --follow until a violation; the exit code."""
    monitor = Monitor(
        source, verifiers, origin, state, on_progress=_progress_printer(), witnesses=witnesses
    )
    started = time.monotonic()
    short_since: float | None = None  # when the newest checkpoint first lacked its quorum
    while True:
        try:
            state = monitor.check()
        except SourceUnreachable as exc:
            message = f"monitor source {args.source} unreachable: {exc}".splitlines()[0]
            if not args.follow:
                raise CliError("Unavailable", message, EXIT_UNAVAILABLE) from exc
            print(f"monitor: {message}; retrying", file=sys.stderr, flush=True)
            time.sleep(args.interval)
            continue
        except Violation as found:
            if not args.follow or found.kind not in _RETRIED:
                return _report(args, monitor, found, started)
            if found.kind is ViolationKind.NO_QUORUM:
                # The log publishes a checkpoint before its witnesses answer: wait for them,
                # up to --quorum-wait, before calling the missing cosignatures a violation.
                short_since = short_since or time.monotonic()
                if time.monotonic() - short_since > args.quorum_wait:
                    return _report(args, monitor, found, started)
            print(f"monitor: {found}; retrying", file=sys.stderr, flush=True)
            time.sleep(args.interval)
            continue
        short_since = None
        _save_state(state_path, state)
        _report(args, monitor, None, started)
        if not args.follow:
            return 0
        time.sleep(args.interval)


def _report(
    args: argparse.Namespace, monitor: Monitor, found: Violation | None, started: float
) -> int:
    """One JSON document per verified checkpoint ({"ok": true, "monitor": ...}); a violation is
    the CLI's error envelope (reason MonitorViolation, exit 1) with the same `monitor` noun."""
    state = monitor.state
    doc: dict[str, Any] = {
        "tree_size": state.size if state and found is None else monitor.size,
        "root_hash": state.root_b64 if state and found is None else None,
        "entries_verified": monitor.progress.entries,
        "fetches": monitor.progress.fetches,
        "cosigned_by": sorted(state.cosigned_by) if state and found is None else [],
        "seconds": round(time.monotonic() - started, 3),
        "violation": None,
    }
    if found is not None:
        doc["violation"] = {"kind": found.kind.value, "leaf": found.leaf, "message": found.message}
        raise CliError("MonitorViolation", str(found), EXIT_VIOLATION, extra={"monitor": doc})
    if args.json:
        emit_json({"monitor": doc})
    else:
        print(
            f"ok: tree size {doc['tree_size']}, root {doc['root_hash']}: signature, consistency,"
            " tiles, entries, lifecycles and supply all hold",
            flush=True,
        )
    return 0


async def cmd_monitor(args: argparse.Namespace) -> int:
    """`golden-press monitor`: runs off the event loop (its gRPC source is synchronous)."""
    return await asyncio.to_thread(run_monitor, args)


def _seconds(text: str) -> float:
    """A finite, non-negative number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _fetchers(text: str) -> int:
    """How many tile fetches in flight: at least 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def add_monitor_arguments(mon: argparse.ArgumentParser) -> None:
    """The verb's arguments (the parser comes from the CLI's verb factory)."""
    mon.add_argument(
        "source", metavar="SOURCE", help="tiles base URL, tiles directory, or grpc://HOST:PORT"
    )
    mon.add_argument("--follow", action="store_true", help="keep polling for new checkpoints")
    mon.add_argument(
        "--interval", type=_seconds, default=5.0, help="seconds between polls (default 5)"
    )
    mon.add_argument(
        "--parallel",
        type=_fetchers,
        default=4,
        metavar="N",
        help="tile fetches in flight over HTTP (default 4; 1: one at a time)",
    )
    mon.add_argument("--state", metavar="FILE", help="last verified checkpoint (read, updated)")
    add_tls_arguments(mon)  # a grpc:// source dials TLS like every verb that calls the API
    mon.add_argument(
        "--vkey",
        help="the log's C2SP verifier key, or a file of vkeys (`keys export`'s .vkeys: its "
        "ledger keys)",
    )
    mon.add_argument(
        "--keys",
        metavar="FILE",
        help="trust roots from `keys export` (default: STATE_DIR/public-keys.json)",
    )
    mon.add_argument(
        "--witness",
        action="append",
        metavar="VKEY",
        help="a witness's C2SP vkey (name+id+key), or a file of vkeys (`keys export`'s "
        ".vkeys: its witness keys); repeatable. Default: "
        "GOLDEN_WITNESSES, else the trust roots' witnesses",
    )
    mon.add_argument(
        "--quorum",
        metavar="N",
        help="cosignatures needed from distinct known witnesses (default: "
        "GOLDEN_WITNESS_QUORUM or the trust roots' quorum, else all)",
    )
    mon.add_argument(
        "--quorum-wait",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="with --follow: how long a new checkpoint may lack its quorum before exit 1 "
        "(default 120)",
    )


__all__ = [
    "EXIT_USAGE",
    "DirectorySource",
    "GrpcSource",
    "HttpSource",
    "add_monitor_arguments",
    "cmd_monitor",
    "load_witness_policy",
    "open_source",
    "run_monitor",
]
