"""How a client dials the gRPC API: the TLS flags, their environment defaults, the channel.

One place for every client of the API (the CLI and the starters), so they take the same flags
(`--ca-file`, `--cert-file`, `--key-file`), read the same variables (GOLDEN_TLS_CA_FILE,
GOLDEN_TLS_CLIENT_CERT_FILE, GOLDEN_TLS_CLIENT_KEY_FILE) and refuse the same half
configurations (service.api.tls.channel_credentials). No CA: plaintext, fine on loopback only.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from golden_press.errors import InvalidRequest
from service.store.key_files import read_tokens

if TYPE_CHECKING:  # grpc loads only when a channel opens: `--help` and offline verbs stay quick
    import grpc

#: (argparse dest, flag, environment variable, help) of each client TLS setting.
TLS_OPTIONS = (
    (
        "ca_file",
        "--ca-file",
        "GOLDEN_TLS_CA_FILE",
        "dial TLS trusting this CA (default: GOLDEN_TLS_CA_FILE; none: plaintext)",
    ),
    (
        "cert_file",
        "--cert-file",
        "GOLDEN_TLS_CLIENT_CERT_FILE",
        "client certificate for mutual TLS (GOLDEN_TLS_CLIENT_CERT_FILE)",
    ),
    (
        "key_file",
        "--key-file",
        "GOLDEN_TLS_CLIENT_KEY_FILE",
        "its private key (GOLDEN_TLS_CLIENT_KEY_FILE)",
    ),
)


@dataclass(frozen=True)
class ClientTls:
    """The CA that signed the API's certificate (None: plaintext) and, for mutual TLS, the
    client certificate and key."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """--ca-file, --cert-file and --key-file, each defaulting to its GOLDEN_TLS_* variable."""
    for dest, flag, _variable, text in TLS_OPTIONS:
        parser.add_argument(flag, dest=dest, help=text)


def client_tls(args: argparse.Namespace, *fallbacks: Mapping[str, str]) -> ClientTls:
    """Each setting from its flag, else the environment, else the first fallback mapping that
    has its variable (the CLI passes what the running dev stack was given)."""
    found: dict[str, Path | None] = {}
    for dest, _flag, variable, _text in TLS_OPTIONS:
        value = getattr(args, dest, None) or os.environ.get(variable)
        for fallback in fallbacks:
            value = value or fallback.get(variable)
        found[dest] = Path(value) if value else None
    return ClientTls(**found)


def open_channel(address: str, tls: ClientTls) -> grpc.aio.Channel:
    """A grpc.aio channel to the API: TLS (mutual with a client certificate) when a CA is given.

    Raises service.api.tls.TlsConfigError for half a configuration or an unreadable file.
    """
    import grpc

    from service.api.tls import channel_credentials

    credentials = channel_credentials(tls.ca_file, tls.cert_file, tls.key_file)
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, credentials)


def first_token(path: Path) -> str:
    """The token a client presents: the first of a GOLDEN_API_TOKENS_FILE, read by the API's
    own reader ("" when the file is missing or empty; InvalidRequest when it cannot be read,
    rather than calling unauthenticated and being told so)."""
    try:
        tokens = read_tokens(path)
    except OSError as exc:
        raise InvalidRequest(f"cannot read the tokens file {path}: {exc.strerror or exc}") from exc
    return tokens[0] if tokens else ""


def bearer(token: str) -> list[tuple[str, str]]:
    """The call metadata that carries a bearer token (none without one)."""
    return [("authorization", f"Bearer {token}")] if token else []
