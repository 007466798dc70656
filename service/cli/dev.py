"""`golden-press dev up|down|status` and `demo`: the dev stack's verbs, printed like every verb.

service.devstack starts and stops the processes and says what it did; this module prints it: for
people, or with --json as ONE document in the envelope every verb uses ({"ok": true, <nouns>} or
{"ok": false, "error": {reason, message, exit_code}, <nouns>}). What people read while a stack
starts (progress, the demo's walk-through) goes to stderr under --json, so stdout holds the one
document. `dev up --detach` without --json keeps its bare one-line JSON (the interface sheet's
stable line that scripts read); with --json the same keys are the document's `stack`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from service.cli.client import EXIT_REJECTED, EXIT_UNAVAILABLE, CliError
from service.cli.output import emit_json

if TYPE_CHECKING:
    from service.devstack.stack import StackInfo


@contextlib.contextmanager
def people_to_stderr(as_json: bool) -> Iterator[Any]:
    """Under --json, everything printed for people goes to stderr; yields the real stdout."""
    real = sys.stdout
    if not as_json:
        yield real
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield real


def emit_to(stream: Any, document: dict[str, Any]) -> None:
    """emit_json on a given stream (the real stdout while people's output is redirected)."""
    with contextlib.redirect_stdout(stream):
        emit_json(document)
    stream.flush()


def stack_document(info: StackInfo) -> dict[str, Any]:
    """The stack's addresses: the keys of the `dev up --detach` line (DSN password redacted)."""
    return dict(json.loads(info.json_line()))


def cmd_dev(args: argparse.Namespace) -> int:
    """Run `dev up`, `dev down` or `dev status`."""
    if args.dev_verb == "up":
        return dev_up(args.detach, args.json)
    if args.dev_verb == "status":
        return dev_status(args.json)
    return dev_down(args.json)


def dev_up(detach: bool, as_json: bool) -> int:
    """Start the stack; --json: {"ok": true, "stack": {...}, "restarted": [...] | null} once it
    serves (a foreground stack is then supervised; its later end is its exit code)."""
    from service.devstack import stack as devstack

    if not as_json:
        return devstack.dev_up(detach)
    with people_to_stderr(as_json) as stdout:

        def announce(info: StackInfo, restarted: list[str] | None) -> None:
            emit_to(stdout, {"stack": stack_document(info), "restarted": restarted})

        try:
            return devstack.up(detach, announce)
        except devstack.ServerError as exc:
            raise CliError("DevStackFailed", str(exc), EXIT_REJECTED) from exc
        except KeyboardInterrupt as exc:
            raise CliError("Interrupted", devstack.INTERRUPTED, 130) from exc


def dev_down(as_json: bool) -> int:
    """Stop the stack; --json: {"ok": true, "stopped": bool, "state_dir": ...}."""
    from service.devstack import stack as devstack

    if not as_json:
        return devstack.dev_down()
    stopped = devstack.down()
    nouns = {"stopped": stopped.was_running, "state_dir": str(stopped.state_dir)}
    if stopped.failed:
        raise CliError(
            "DevStackFailed",
            f"could not stop {', '.join(stopped.failed)}",
            EXIT_REJECTED,
            extra=nouns,
        )
    emit_json(nouns)
    return 0


def dev_status(as_json: bool) -> int:
    """Each part, running or not; exit 0 only when all run (else Unavailable, exit 3)."""
    from service.devstack.stack import stack_status

    status = stack_status()
    if not as_json:
        if status.info is None:
            print(f"no dev stack is recorded in {status.state_dir}")
        else:
            print(f"dev stack in {status.state_dir}")
            for p in status.parts:
                state = "running" if p["alive"] else "NOT RUNNING"
                print(f"  {p['name']:<10} pid {p['pid']:<8} {state}")
        return 0 if status.all_running else EXIT_UNAVAILABLE
    nouns: dict[str, Any] = {"state_dir": str(status.state_dir), "parts": status.parts}
    if status.info is not None:
        nouns["stack"] = {k: v for k, v in stack_document(status.info).items() if k != "token"}
    if status.all_running:
        emit_json(nouns)
        return 0
    down = [p["name"] for p in status.parts if not p["alive"]]
    raise CliError(
        "Unavailable",
        f"not running: {', '.join(down)} (`golden-press dev up` restarts only those)"
        if status.info is not None
        else f"no dev stack is recorded in {status.state_dir}",
        EXIT_UNAVAILABLE,
        extra=nouns,
    )


def demo(as_json: bool) -> int:
    """`golden-press demo`; --json: the walk-through on stderr, {"ok": true, "demo": {...}}."""
    from service.cli.demo import run_demo
    from service.devstack.servers import ServerError

    with people_to_stderr(as_json) as stdout:
        summary: dict[str, Any] = {}
        try:
            code = run_demo(summary)
        except ServerError as exc:  # the stack it needs could not start (as `dev up`)
            raise CliError("DevStackFailed", str(exc), EXIT_REJECTED) from exc
        if as_json:
            emit_to(stdout, {"demo": summary})
    return code
