"""The CLI in-process against a served API: verbs, --json, and one-line rejections."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from service.api.server import bound_port, serve, shutdown
from service.cli import app as cli
from service.cli.client import EXIT_REJECTED, EXIT_UNAVAILABLE, EXIT_USAGE
from tests.helpers.api import write_tokens
from tests.helpers.envelope import run_doc
from tests.helpers.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "cli-token-" + uuid.uuid4().hex


@pytest_asyncio.fixture(loop_scope="session")
async def api_addr(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """Serve the API and point the CLI's environment at it (never at a real dev stack)."""
    tokens = write_tokens(stack.settings, TOKEN)
    server = await serve(
        stack.settings, pool=stack.pool, client=stack.client, address="127.0.0.1:0"
    )
    address = f"127.0.0.1:{bound_port(server)}"
    monkeypatch.setenv("GOLDEN_GRPC_ADDR", address)
    monkeypatch.setenv("GOLDEN_API_TOKENS_FILE", str(tokens))
    monkeypatch.setenv("GOLDEN_PG_DSN", stack.settings.pg_dsn)
    monkeypatch.setenv("GOLDEN_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("TEMPORAL_ADDRESS", stack.settings.temporal_address)
    monkeypatch.setenv("GOLDEN_TASK_QUEUE", stack.settings.task_queue)
    try:
        yield address
    finally:
        await shutdown(server, grace=None)


async def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    capsys.readouterr()
    code = await cli.run([*argv, "--json"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured
    doc = json.loads(out)
    assert doc["ok"] is True, doc
    return doc


async def test_cli_verbs(api_addr: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """issue, get, list, verify, proof, keys export, ledger verify, checkpoint, redeem."""
    issued = await run_json(capsys, "issue", "--user", "alice", "--request-id", "cli-1")
    assert isinstance(issued, dict)
    tid = issued["ticket"]["ticket_id"]
    assert issued["ticket"]["state"] == "issued" and not issued["saga"]["replayed"]
    again = await run_json(capsys, "issue", "--user", "alice", "--request-id", "cli-1")
    assert isinstance(again, dict) and again["saga"]["replayed"]

    got = await run_json(capsys, "get", tid)
    assert isinstance(got, dict) and got["ticket"]["user_id"] == "alice"
    listed = await run_json(capsys, "list", "--user", "alice")
    assert isinstance(listed, dict) and [t["ticket_id"] for t in listed["tickets"]] == [tid]
    verified = await run_json(capsys, "verify", tid)
    assert isinstance(verified, dict)
    assert verified["verification"]["valid"] and verified["verification"]["redeemable"]

    bundle = tmp_path / "bundle.json"
    assert await cli.run(["proof", tid, "-o", str(bundle)]) == 0
    assert json.loads(bundle.read_text())["ticket"]["ticket_id"] == tid
    assert await cli.run(["keys", "export"]) == 0
    assert (tmp_path / "public-keys.json").is_file()
    offline = await run_json(capsys, "ledger", "verify", str(bundle))
    assert isinstance(offline, dict) and offline["verification"]["valid"]
    assert offline["verification"]["ticket"]["ticket_id"] == tid
    by_bundle = await run_json(capsys, "verify", str(bundle))
    assert isinstance(by_bundle, dict) and by_bundle["verification"]["proof_valid"]
    checkpoint = await run_json(capsys, "checkpoint")
    assert isinstance(checkpoint, dict) and checkpoint["checkpoint"]["tree_size"] >= 1

    redeemed = await run_json(capsys, "redeem", tid, "--user", "alice")
    assert isinstance(redeemed, dict) and redeemed["redemption"]["leaf_index"] is not None
    capsys.readouterr()
    assert await cli.run(["list", "--state", "redeemed"]) == 0
    assert "redeemed" in capsys.readouterr().out

    other = await run_json(capsys, "issue", "--user", "erin")
    assert isinstance(other, dict)
    oid = other["ticket"]["ticket_id"]
    revoked = await run_json(capsys, "admin", "revoke", oid, "--reason", "fraud")
    assert isinstance(revoked, dict) and revoked["revocation"]["ticket_id"] == oid
    assert await cli.run(["verify", oid]) == EXIT_REJECTED
    assert capsys.readouterr().err.startswith("error: TicketNotRedeemable: ticket is revoked")


async def test_cli_rejections_are_one_line(
    api_addr: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rejection exits non-zero with `error: <Reason>: <message>` on stderr."""
    await run_json(capsys, "admin", "set-cap", "--cap", "0", "--scope", "live")
    assert await cli.run(["issue", "--user", "bob"]) == EXIT_REJECTED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: CapReached: ")

    assert await cli.run(["get", str(uuid.uuid4())]) == EXIT_REJECTED
    assert capsys.readouterr().err.startswith("error: TicketNotFound: ")

    assert await cli.run(["issue", "--user", "carol", "--token", "wrong"]) == EXIT_REJECTED
    assert capsys.readouterr().err.startswith("error: Unauthenticated: ")

    assert await cli.run(["admin", "deny", "dave"]) == 0
    await run_json(capsys, "admin", "set-cap", "--cap", "5", "--scope", "live")
    assert await cli.run(["issue", "--user", "dave"]) == EXIT_REJECTED
    assert capsys.readouterr().err.startswith("error: UserDenied: ")

    forged = tmp_path / "forged.json"
    forged.write_text("{}")
    assert await cli.run(["ledger", "verify", str(forged), "--keys", str(forged)]) != 0
    assert capsys.readouterr().err.startswith("error: ")

    assert await cli.run(["list", "--addr", "127.0.0.1:1"]) == EXIT_UNAVAILABLE
    assert capsys.readouterr().err.startswith("error: Unavailable: ")


# ---- the contract: one JSON document per call, the same envelope for every verb ----------------


def leaf_verbs(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """'ledger verify' -> its parser, for every runnable verb of the CLI."""
    found: dict[str, Any] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= leaf_verbs(sub, (*prefix, name))
            return found
    return {" ".join(prefix): parser}


#: Verbs whose envelope the test below checks (success and error); dev/demo run servers.
ENVELOPE_TESTED = {
    "issue", "get", "list", "verify", "proof", "checkpoint", "redeem", "status",
    "ledger verify", "audit", "admin set-cap", "admin deny", "admin revoke",
    "keys generate", "keys export",
    "monitor",  # success and violation envelopes: tests/integration/test_public_ledger.py
}  # fmt: skip
#: Verbs that run or stop a whole stack: their envelopes are checked where they run
#: (tests/system/test_devstack.py, test_cli_stack_safety.py); and the witness server, which
#: prints its one JSON line when it listens (tests/system/test_witness_process.py).
STACK_VERBS = {"dev up", "dev down", "dev status", "demo", "witness serve"}


async def test_every_verb_is_covered_by_the_envelope_test() -> None:
    """A new verb fails here until its JSON envelope is tested below (nothing breaks silently)."""
    assert set(leaf_verbs(cli.build_parser())) == ENVELOPE_TESTED | STACK_VERBS


async def test_help_of_every_verb_describes_each_option_and_gives_an_example(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, parser in leaf_verbs(cli.build_parser()).items():
        undocumented = [
            a.dest for a in parser._actions if not a.help or a.help == argparse.SUPPRESS
        ]
        assert not undocumented, f"{name}: options without a description: {undocumented}"
        text = parser.format_help()
        assert "example:\n  golden-press" in text or "example:\n  GOLDEN_" in text, name
        assert "--json" in text, name
    offline = leaf_verbs(cli.build_parser())
    for name in ("ledger verify", "keys generate", "audit", "admin set-cap"):
        assert "--addr" not in offline[name].format_help(), f"{name} shows network options"
    assert "--addr" in offline["issue"].format_help()


def group_verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """'ledger' -> its parser, for every verb that only groups sub-verbs (dev, ledger, ...)."""
    groups: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    groups[name] = sub
    return groups


async def test_help_of_every_group_describes_it_lists_its_verbs_and_gives_an_example() -> None:
    """`golden-press dev --help` (and ledger, admin, keys, witness): a one-line description, each
    sub-verb with its one-line help, and an example that runs one of them."""
    groups = group_verbs(cli.build_parser())
    assert set(groups) == {"dev", "ledger", "admin", "keys", "witness"}
    for name, parser in groups.items():
        description = parser.description or ""
        assert description and "\n" not in description, f"{name}: no one-line description"
        text = parser.format_help()
        assert description in text, name
        [subs] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        flat = " ".join(text.split())  # help lines wrap with the terminal's width
        for verb in subs._choices_actions:
            assert verb.help and f"{verb.dest} {verb.help}" in flat, f"{name} {verb.dest}"
        examples = re.findall(r"^example:\n  golden-press (\S+) (\S+)", text, re.MULTILINE)
        assert examples and examples[0][0] == name and examples[0][1] in subs.choices, text


async def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert await cli.run(["--version"]) == 0
    assert re.fullmatch(r"golden-press \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)
    _code, doc = await run_doc(capsys, "--version")
    assert doc["version"] == cli.version()


async def test_usage_errors_are_json_too(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = await run_doc(capsys, "issue")
    assert code == EXIT_USAGE and doc["error"]["reason"] == "Usage"
    assert "--user" in doc["error"]["message"]


async def test_json_envelope_of_every_verb(
    api_addr: str,
    stack: Stack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Success and error documents of each verb: {"ok": true, <noun>} / {"ok": false, error}."""
    # issue
    _, doc = await run_doc(capsys, "issue", "--user", "uma", "--request-id", "env-1")
    tid = doc["ticket"]["ticket_id"]
    assert doc["saga"] == {
        "workflow_id": "issue-env-1",
        "request_id": "env-1",
        "replayed": False,
        "pending": False,
    }
    code, doc = await run_doc(capsys, "issue", "--user", "")
    assert doc["error"]["reason"] == "InvalidRequest"
    # get
    _, doc = await run_doc(capsys, "get", tid)
    assert doc["ticket"]["ticket_id"] == tid
    _, doc = await run_doc(capsys, "get", str(uuid.uuid4()))
    assert doc["error"]["reason"] == "TicketNotFound"
    # list: its page token, and the next page from it
    await run_doc(capsys, "issue", "--user", "vic")
    _, first = await run_doc(capsys, "list", "--limit", "1")
    assert len(first["tickets"]) == 1 and first["next_page_token"]
    _, rest = await run_doc(capsys, "list", "--page-token", first["next_page_token"])
    assert rest["next_page_token"] == "" and rest["tickets"]
    assert first["tickets"][0]["serial"] < rest["tickets"][0]["serial"]
    code, doc = await run_doc(capsys, "list", "--addr", "127.0.0.1:1")
    assert code == EXIT_UNAVAILABLE and doc["error"]["reason"] == "Unavailable"
    # proof; checkpoint (hashes as base64, like the note)
    bundle = tmp_path / "t.bundle.json"
    _, doc = await run_doc(capsys, "proof", tid, "-o", str(bundle))
    assert doc["path"] == str(bundle) and doc["bundle"]["ticket"]["ticket_id"] == tid
    _, doc = await run_doc(capsys, "proof", str(uuid.uuid4()))
    assert doc["error"]["reason"] == "TicketNotFound"
    _, doc = await run_doc(capsys, "checkpoint")
    note_lines = doc["checkpoint"]["note"].split("\n")
    assert doc["checkpoint"]["root_hash"] == note_lines[2]
    assert base64.b64decode(doc["checkpoint"]["root_hash"], validate=True)
    code, doc = await run_doc(capsys, "checkpoint", "--addr", "127.0.0.1:1")
    assert code == EXIT_UNAVAILABLE
    # verify ID, verify BUNDLE and ledger verify: one verification shape
    _, by_id = await run_doc(capsys, "verify", tid)
    _, by_bundle = await run_doc(capsys, "verify", str(bundle))
    assert await cli.run(["keys", "export"]) == 0
    _, offline = await run_doc(capsys, "ledger", "verify", str(bundle))
    shapes = [set(d["verification"]) for d in (by_id, by_bundle, offline)]
    assert shapes[0] == shapes[1] == shapes[2]
    assert by_bundle["verification"]["checkpoint"] == offline["verification"]["checkpoint"]
    assert offline["verification"]["offline"] and not by_id["verification"]["offline"]
    code, doc = await run_doc(capsys, "verify", str(tmp_path / "missing.bundle.json"))
    assert code == EXIT_USAGE and doc["error"]["reason"] == "FileNotFound"
    assert "no such file" in doc["error"]["message"]
    code, doc = await run_doc(capsys, "ledger", "verify", str(tmp_path / "missing.json"))
    assert code == EXIT_USAGE and doc["error"]["reason"] == "FileNotFound"
    tampered = json.loads(bundle.read_text())
    tampered["leaf_index"] += 1
    (tmp_path / "bad.json").write_text(json.dumps(tampered))
    code, doc = await run_doc(capsys, "ledger", "verify", str(tmp_path / "bad.json"))
    assert code == EXIT_REJECTED and doc["verification"]["valid"] is False
    assert set(doc["verification"]) == shapes[0]
    # keys export / generate
    _, doc = await run_doc(capsys, "keys", "export", "-o", str(tmp_path / "keys.json"))
    assert doc["path"] == str(tmp_path / "keys.json") and doc["trust_roots"]["issuer_keys"]
    code, doc = await run_doc(capsys, "keys", "export", "--addr", "127.0.0.1:1")
    assert code == EXIT_UNAVAILABLE
    monkeypatch.setenv("GOLDEN_SIGNING_KEY_FILE", str(tmp_path / "k" / "issuer.key"))
    monkeypatch.setenv("GOLDEN_LEDGER_KEY_FILE", str(tmp_path / "k" / "ledger.key"))
    _, doc = await run_doc(capsys, "keys", "generate")
    assert set(doc["keys"]) == {"issuer", "ledger"}
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("GOLDEN_SIGNING_KEY_FILE", str(tmp_path / "afile" / "issuer.key"))
    code, doc = await run_doc(capsys, "keys", "generate")
    assert code == EXIT_USAGE and doc["error"]["reason"] == "InvalidRequest"
    # redeem
    _, doc = await run_doc(capsys, "redeem", tid, "--user", "mallory")
    assert doc["error"]["reason"] == "NotIssuee"
    _, doc = await run_doc(capsys, "redeem", tid, "--user", "uma")
    assert doc["redemption"]["ticket_id"] == tid and doc["redemption"]["leaf_index"] is not None
    assert doc["saga"] == {"workflow_id": f"redeem-{tid}", "pending": False}
    # status: a workflow id, and a ticket id (every saga of the ticket)
    _, doc = await run_doc(capsys, "status", "issue-env-1")
    [saga] = doc["sagas"]
    assert saga["status"] == "completed" and saga["outcome"] == "issued"
    assert saga["current_step"] == "done" and saga["workflow_type"] == "IssueTicketWorkflow"
    _, doc = await run_doc(capsys, "status", tid)
    redemptions = [s for s in doc["sagas"] if s["workflow_id"] == f"redeem-{tid}"]
    assert doc["sagas"][0]["workflow_id"] == "issue-env-1"
    assert redemptions[-1]["outcome"] == "redeemed"
    # A second redemption is a later run of redeem-<id>: the one that redeemed stays in view.
    _, doc = await run_doc(capsys, "redeem", tid, "--user", "uma")
    assert doc["error"]["reason"] == "AlreadyRedeemed"
    for _ in range(50):  # earlier runs come from Temporal's visibility store: eventually
        _, doc = await run_doc(capsys, "status", tid)
        again = [s for s in doc["sagas"] if s["workflow_id"] == f"redeem-{tid}"]
        if len(again) > len(redemptions):
            break
        await asyncio.sleep(0.1)
    assert len(again) == len(redemptions) + 1 and len({s["run_id"] for s in again}) == len(again)
    assert [s["outcome"] for s in again[-2:]] == ["redeemed", "rejected"], again
    code, doc = await run_doc(capsys, "status", "issue-no-such-request")
    assert code == EXIT_REJECTED and doc["error"]["reason"] == "SagaNotFound"
    # admin
    _, doc = await run_doc(capsys, "admin", "deny", "zed", "--reason", "bot")
    assert doc["denied"] == {"user_id": "zed", "reason": "bot"}
    _, doc = await run_doc(capsys, "admin", "set-cap", "--cap", "5", "--scope", "live")
    assert doc["cap"]["cap"] == 5
    code, doc = await run_doc(capsys, "admin", "set-cap", "--cap", "-1", "--scope", "live")
    assert code != 0
    _, doc = await run_doc(capsys, "admin", "revoke", str(uuid.uuid4()), "--reason", "x")
    assert doc["error"]["reason"] == "TicketNotFound"
    # audit (clean here), and an audit that cannot reach its database
    for name, value in {
        "GOLDEN_STREAM": stack.settings.stream_name,
        "GOLDEN_SUBJECT_PREFIX": stack.settings.subject_prefix,
        "GOLDEN_SIGNING_KEY_FILE": str(stack.settings.signing_key_file),
        "GOLDEN_LEDGER_KEY_FILE": str(stack.settings.ledger_key_file),
        "GOLDEN_NATS_URL": stack.settings.nats_url,
    }.items():
        monkeypatch.setenv(name, value)
    _, doc = await run_doc(capsys, "audit")
    assert doc["audit"]["findings"] == []
    monkeypatch.setenv("GOLDEN_PG_DSN", "postgresql://nobody@127.0.0.1:1/none")
    code, doc = await run_doc(capsys, "audit")
    assert code == EXIT_UNAVAILABLE and doc["error"]["reason"] == "Unavailable"


async def test_no_wait_returns_the_workflow_id_before_the_saga_ends(
    api_addr: str, stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    _, doc = await run_doc(capsys, "issue", "--user", "nora", "--request-id", "nw-1", "--no-wait")
    assert doc["ticket"] is None
    assert doc["saga"] == {
        "workflow_id": "issue-nw-1",
        "request_id": "nw-1",
        "replayed": False,
        "pending": True,
    }
    result = await stack.client.get_workflow_handle("issue-nw-1").result()
    assert result["outcome"] == "issued" if isinstance(result, dict) else result.outcome
    _, doc = await run_doc(capsys, "status", "issue-nw-1")
    assert doc["sagas"][0]["status"] == "completed"
    # Admission still answers first: a second ticket for nora is refused, not started.
    code, doc = await run_doc(capsys, "issue", "--user", "nora", "--no-wait")
    assert code == EXIT_REJECTED and doc["error"]["reason"] == "OnePerUser"

    capsys.readouterr()
    [ticket] = (await run_doc(capsys, "list", "--user", "nora"))[1]["tickets"]
    _, doc = await run_doc(capsys, "redeem", ticket["ticket_id"], "--user", "nora", "--no-wait")
    wid = f"redeem-{ticket['ticket_id']}"
    assert doc["saga"] == {"workflow_id": wid, "pending": True}
    assert doc["redemption"]["leaf_index"] is None
    await stack.client.get_workflow_handle(wid).result()
    capsys.readouterr()
    assert await cli.run(["status", wid]) == 0
    text = capsys.readouterr().out
    assert wid in text and "completed" in text
