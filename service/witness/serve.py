"""`golden-press witness serve` (also `python -m service.witness`): run one witness until SIGTERM.

Prints one JSON line when it listens: `name`, `vkey` (what logs put in GOLDEN_WITNESSES), `url`
(the submission prefix) and `logs` (the origins it follows).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from golden_press.checkpoint import NoteVerifier
from golden_press.settings import Settings
from service.store.key_files import KeyFileError, ensure_key_file
from service.witness.server import Witness, WitnessHTTPServer, WitnessState, WitnessStateError

DEFAULT_NAME = "witness.golden-press.local/w1"
DEFAULT_ADDR = "127.0.0.1:7380"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `witness serve`; files default to $GOLDEN_STATE_DIR/witness/."""
    parser.add_argument("--addr", default=DEFAULT_ADDR, help=f"listen address ({DEFAULT_ADDR})")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"witness key name ({DEFAULT_NAME})")
    parser.add_argument(
        "--key", metavar="FILE", help="private key file, 0600 (generated when absent)"
    )
    parser.add_argument(
        "--state", metavar="FILE", help="latest cosigned checkpoint per log (fsynced JSON)"
    )
    parser.add_argument(
        "--log",
        metavar="VKEY",
        action="append",
        default=[],
        help="a log's checkpoint key as a vkey (name = origin); repeat for several logs",
    )
    parser.add_argument("--prefix", default="", help="URL path prefix of add-checkpoint")


class ServeError(Exception):
    """A witness that cannot start; the message is one line."""


def build(args: argparse.Namespace) -> WitnessHTTPServer:
    """The witness and its HTTP server, bound and ready to serve."""
    base = Settings().state_dir / "witness"
    key_file = Path(args.key) if args.key else base / "witness.key"
    state_file = Path(args.state) if args.state else base / "state.json"
    if not args.log:
        raise ServeError("give at least one --log VKEY (the ledger's checkpoint key)")
    logs: dict[str, list[NoteVerifier]] = {}
    for vkey in args.log:
        try:
            verifier = NoteVerifier.from_vkey(vkey)
        except ValueError as exc:
            raise ServeError(f"--log {vkey[:60]!r}: {exc}") from exc
        logs.setdefault(verifier.name, []).append(verifier)
    try:
        key = ensure_key_file(key_file)
        state = WitnessState(state_file)
    except (KeyFileError, WitnessStateError) as exc:
        raise ServeError(str(exc)) from exc
    host, _, port = args.addr.rpartition(":")
    try:
        witness = Witness(key, args.name, logs, state)
        return WitnessHTTPServer((host or "127.0.0.1", int(port)), witness, args.prefix)
    except (ValueError, OSError) as exc:
        raise ServeError(f"cannot serve on {args.addr}: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; 0 on a clean stop, 2 when it cannot start."""
    try:
        server = build(args)
    except ServeError as exc:
        print(f"golden-press witness: {exc}", file=sys.stderr)
        return 2
    return serve(server)


def serve(server: WitnessHTTPServer) -> int:
    """Print the one JSON line, then serve until SIGTERM or SIGINT (0: a clean stop)."""
    witness = server.witness
    info: dict[str, Any] = {
        "name": witness.name,
        "vkey": witness.verifier.vkey,
        "url": server.url,
        "logs": witness.origins,
    }
    print(json.dumps(info, separators=(",", ":")), flush=True)

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m service.witness [serve] --log VKEY ...`."""
    parser = argparse.ArgumentParser(prog="golden-press witness serve")
    add_arguments(parser)
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["serve"]:
        args_in = args_in[1:]
    return run(parser.parse_args(args_in))


__all__ = ["ServeError", "add_arguments", "build", "main", "run", "serve"]
