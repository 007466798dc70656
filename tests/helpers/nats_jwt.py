"""NATS decentralised-auth (JWT) identities and a `.creds` file, made at test time with `nkeys`
(nothing committed, no `nsc` needed).

Follows github.com/nats-io/jwt v2 (read at commit 82017236da50e4a0173091105d82d46228b8dccf):
- header.go: header {"typ": "JWT", "alg": "ed25519-nkey"};
- claims.go (ClaimsData.doEncode): base64url without padding; `iss` is the signer's public key;
  `jti` is the unpadded base32 of SHA-512/256 over the JSON of the standard claims with `jti`
  empty (omitted); the signature covers "<header>.<payload>" (v2; v1 signed the payload only);
- decoder.go: the version is `nats.version` (2), the kind is `nats.type`;
- operator_claims.go / account_claims.go / user_claims.go: the `nats` object, an account signed by
  an operator key, a user by an account key; NewAccountClaims / NewUserClaims start with every
  limit at NoLimit (-1): a missing limit is 0, which the server enforces as zero (no connections);
- creds_utils.go (FormatUserConfig, DecorateSeed): the `.creds` layout `nsc` writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

NO_LIMIT = -1


@dataclass(frozen=True)
class Identity:
    """An nkey: its seed (secret) and public key."""

    seed: bytes
    public_key: str

    @classmethod
    def new(cls, prefix: int) -> Identity:
        """A fresh key of a kind: nkeys.PREFIX_BYTE_OPERATOR / _ACCOUNT / _USER."""
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        return cls(seed, nkeys.from_seed(seed).public_key.decode())

    def sign(self, data: bytes) -> bytes:
        return bytes(nkeys.from_seed(self.seed).sign(data))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def encode(subject: str, name: str, nats: dict[str, Any], signer: Identity) -> str:
    """A v2 JWT for `subject` signed by `signer`, `nats` holding the kind-specific claims."""
    header = _b64(_json({"typ": "JWT", "alg": "ed25519-nkey"}))
    # Go marshals ClaimsData in field order (aud exp jti iat iss name nbf sub), omitting empties.
    standard = {"iat": int(time.time()), "iss": signer.public_key, "name": name, "sub": subject}
    jti = base64.b32encode(hashlib.new("sha512_256", _json(standard)).digest()).rstrip(b"=")
    claims = {"jti": jti.decode(), **standard, "nats": {**nats, "version": 2}}
    signed = f"{header}.{_b64(_json(claims))}"
    return f"{signed}.{_b64(signer.sign(signed.encode()))}"


def operator_jwt(operator: Identity, name: str = "golden-press-test") -> str:
    """A self-signed operator JWT (what the server's `operator:` setting trusts)."""
    return encode(operator.public_key, name, {"type": "operator"}, operator)


def account_jwt(account: Identity, operator: Identity, name: str = "GOLDEN") -> str:
    """An account JWT signed by the operator, unlimited like NewAccountClaims (JetStream off)."""
    limits = {
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        "imports": NO_LIMIT,
        "exports": NO_LIMIT,
        "wildcards": True,
        "conn": NO_LIMIT,
        "leaf": NO_LIMIT,
    }
    return encode(account.public_key, name, {"limits": limits, "type": "account"}, operator)


def user_jwt(user: Identity, account: Identity, name: str = "golden-press") -> str:
    """A user JWT signed by the account key, unlimited like NewUserClaims."""
    nats = {"subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT, "type": "user"}
    return encode(user.public_key, name, nats, account)


def write_creds(path: Path, jwt: str, user: Identity) -> Path:
    """The `.creds` file (user JWT + user seed) as `nsc` writes it, mode 0600 (it holds a
    secret)."""
    text = (
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    path.write_text(text)
    return path


__all__ = ["Identity", "account_jwt", "encode", "operator_jwt", "user_jwt", "write_creds"]
