"""Secret files: private Ed25519 seeds and API token files on disk.

Key files are refused when group or others can read them; the messages never quote a key.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from nacl.signing import SigningKey


class KeyFileError(Exception):
    """A key file is missing, malformed or not private; the message is one line, never the key."""


def generate_key_file(path: Path, *, overwrite: bool = False) -> SigningKey:
    """Write a fresh Ed25519 seed (base64, one line) with mode 0600 and return the key."""
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path} exists; refusing to overwrite a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(bytes(key)).decode("ascii") + "\n")
    os.chmod(path, 0o600)
    return key


def load_key_file(path: Path) -> SigningKey:
    """Read a private key, refusing files that group or others may read or write."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise KeyFileError(
            f"key file {path} does not exist (run `golden-press keys generate`)"
        ) from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} has mode {stat.S_IMODE(mode):04o}; it must not be readable by "
            f"group or others (chmod 600 {path})"
        )
    try:
        seed = base64.b64decode(path.read_text().strip(), validate=True)
    except ValueError as exc:
        raise KeyFileError(f"key file {path} is not base64") from exc
    if len(seed) != 32:
        raise KeyFileError(f"key file {path} must hold a 32-byte Ed25519 seed, got {len(seed)}")
    return SigningKey(seed)


def ensure_key_file(path: Path) -> SigningKey:
    """Load the key, generating it first when absent (dev stack and tests)."""
    if not path.exists():
        return generate_key_file(path)
    return load_key_file(path)


def read_tokens(path: Path) -> tuple[str, ...]:
    """Bearer tokens of a tokens file, one per line, in order (blank lines and # comments
    skipped); a missing file has none. The API accepts all of them, clients present the first."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return ()
    return tuple(t.strip() for t in lines if t.strip() and not t.strip().startswith("#"))
