"""Key and ledger verbs: keys generate/export, and `ledger verify` (offline, no server)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import ValidationError

from golden_press.errors import one_line
from golden_press.merkle import hash_b64
from service.cli.client import (
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Api,
    CliError,
    read_text,
    settings,
    write_text,
)
from service.cli.output import (
    colour,
    emit_json,
    verification,
)


async def public_keys_json(api: Api) -> str:
    """Trust roots for offline verifiers, from the API's public keys."""
    from golden_press.bundle import dump_trust_roots
    from service.store.keys import PublicKeyRow, trust_roots_from_keys

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
    has_witnesses = any(k.purpose == "witness" for k in resp.keys)
    try:
        roots = trust_roots_from_keys(
            rows, resp.ledger_origin, resp.witness_quorum if has_witnesses else None
        )
        return dump_trust_roots(roots) + "\n"
    except LookupError as exc:
        raise CliError("Unavailable", str(exc), EXIT_UNAVAILABLE) from exc


def default_keys_file() -> Path:
    """Where `keys export` writes and `ledger verify` reads trust roots by default."""
    return settings().state_dir / "public-keys.json"


def vkeys_of(text: str) -> list[str]:
    """C2SP vkeys of trust roots JSON: ledger keys (type 0x01), then witness keys (0x04)."""
    from golden_press.bundle import load_trust_roots

    roots = load_trust_roots(text)
    return [v.vkey for v in roots.ledger_verifiers()] + list(roots.witnesses)


async def cmd_keys_export(api: Api, args: argparse.Namespace) -> int:
    """Write the trust roots (issuer, ledger and witness public keys, the witness quorum) for
    offline verification, and the ledger and witness keys as C2SP vkeys beside them."""
    path = Path(args.output) if args.output else default_keys_file()
    text = await public_keys_json(api)
    write_text(path, text)
    vkeys = vkeys_of(text)
    vkeys_path = path.with_suffix(".vkeys")
    write_text(vkeys_path, "".join(f"{v}\n" for v in vkeys))
    roots = json.loads(text)
    if args.json:
        emit_json(
            {
                "trust_roots": roots,
                "path": str(path),
                "vkeys": vkeys,
                "vkeys_path": str(vkeys_path),
            }
        )
    else:
        print(f"public keys written to {path}, vkeys to {vkeys_path}")
        for key_id, pub in roots["issuer_keys"].items():
            print(f"  issuer   {key_id}  {pub}")
        for vkey in vkeys:
            kind = "witness" if vkey in roots["witnesses"] else "ledger"
            print(f"  {kind:<8} {vkey}")
        if roots["witnesses"]:
            quorum = roots["witness_quorum"]
            print(f"  quorum   {len(roots['witnesses']) if quorum is None else quorum}")
    return 0


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    """Offline: signature, ledger entry, inclusion proof and checkpoint, with pinned keys only."""
    from golden_press.bundle import (
        is_redacted,
        load_bundle,
        load_trust_roots,
        verify_bundle,
        verify_public_bundle,
    )
    from golden_press.errors import GoldenError

    # The file the user named first: a missing bundle is FileNotFound (like `verify PATH`), not
    # a complaint about the trust roots it would be checked against.
    bundle_text = read_text(args.bundle)
    keys_path = Path(args.keys) if args.keys else default_keys_file()
    if not keys_path.is_file():
        raise CliError(
            "InvalidRequest",
            f"no trust roots at {keys_path}: run `golden-press keys export` (or pass --keys)",
            EXIT_USAGE,
        )
    try:
        roots = load_trust_roots(read_text(str(keys_path)))
    except ValueError as exc:  # a file the operator gave that cannot work: usage (exit 2)
        why = one_line(exc) if isinstance(exc, ValidationError) else str(exc).splitlines()[0]
        raise CliError(
            "InvalidRequest", f"{keys_path} is not a trust roots file: {why}", EXIT_USAGE
        ) from exc
    bundle = None
    try:
        bundle = load_bundle(bundle_text)
        holder = not is_redacted(bundle.ticket) and bool(bundle.user_salt)
        verify = verify_bundle if holder else verify_public_bundle
        checkpoint = verify(bundle, roots)
        cosigners = roots.witness_policy().open(
            bundle.checkpoint, roots.ledger_verifiers(), roots.ledger_origin
        )
    except GoldenError as err:
        ticket = bundle.ticket.model_dump(mode="json") if bundle is not None else None
        raise CliError(
            err.reason.value,
            err.message,
            extra={
                "verification": verification(
                    valid=False,
                    signature_valid=None,
                    proof_valid=None,
                    state=None,
                    redeemable=None,
                    reason=err.reason.value,
                    message=err.message,
                    ticket=ticket,
                    checkpoint=None,
                    leaf_index=bundle.leaf_index if bundle is not None else None,
                    offline=True,
                )
            },
        ) from err
    assert bundle is not None
    t = bundle.ticket
    if args.json:
        emit_json(
            {
                "verification": verification(
                    valid=True,
                    signature_valid=True if holder else None,
                    proof_valid=True,
                    state=None,
                    redeemable=None,
                    reason="",
                    message="",
                    ticket=t.model_dump(mode="json"),
                    checkpoint={
                        "origin": checkpoint.origin,
                        "tree_size": checkpoint.size,
                        "root_hash": hash_b64(checkpoint.root),
                    },
                    leaf_index=bundle.leaf_index,
                    offline=True,
                )
            }
        )
    else:
        quorum = roots.witness_policy().quorum
        lines = [
            f"issuer signature (key {t.key_id})" if holder else "",
            "ledger entry matches the ticket and its holder"
            if holder
            else "ledger entry matches the ticket (public bundle: the holder is not shown)",
            f"inclusion proof: leaf {bundle.leaf_index} of {checkpoint.size}",
            f"checkpoint signed by the ledger key ({checkpoint.origin})",
            f"cosigned by {len(cosigners.cosigned_by)} witness(es), quorum {quorum}: "
            + (", ".join(sorted(cosigners.cosigned_by)) or "none")
            if roots.witnesses
            else "",
        ]
        for line in filter(None, lines):
            print(f"{colour('ok', 'ok')}  {line}")
        whose = f" of {t.user_id}" if holder else ""
        print(colour(f"bundle verifies offline: golden ticket #{t.serial}{whose}", "ok"))
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """Create the issuer and ledger key files (mode 0600); never overwrites an existing key."""
    from golden_press.signing import key_id_for
    from service.store.key_files import KeyFileError, generate_key_file

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
        except OSError as exc:
            raise CliError(
                "InvalidRequest", f"cannot write {path}: {exc.strerror or exc}", EXIT_USAGE
            ) from exc
        made[name] = {"path": str(path), "key_id": key_id_for(bytes(key.verify_key))}
        if not args.json:
            print(f"{name:<7} {path} written (key id {made[name]['key_id']})")
    if args.json:
        emit_json({"keys": made})
    return 0
