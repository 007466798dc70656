"""NATS over TLS with a client certificate, over TLS with nkey authentication, and over TLS with
a decentralised-auth credentials file (operator mode), through the one connect function (settings
only), against real nats-servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nkeys
import pytest
from nats.errors import Error as NatsError
from nats.errors import NoServersError

from golden_press.settings import Settings
from service.devstack.servers import find_binary, free_port, port_in_use
from service.store.nats_client import connect_nats
from tests.helpers.nats_jwt import Identity, account_jwt, operator_jwt, user_jwt, write_creds
from tests.helpers.tls import Leaf, TestCA

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


@pytest.fixture
def tls_nats(tmp_path: Path, ca: TestCA) -> Iterator[str]:
    """A private nats-server that requires TLS and verifies client certificates."""
    leaf = ca.server("nats")
    with configured_nats(nats_binary(), tmp_path / "nats", leaf, client_ca=ca) as url:
        yield url


async def test_nats_mutual_tls_from_settings(tls_nats: str, ca: TestCA) -> None:
    client = ca.client("nats-client")
    settings = Settings(  # type: ignore[call-arg]
        nats_url=tls_nats,
        nats_tls_ca_file=ca.cert_file,
        nats_tls_cert_file=client.cert_file,
        nats_tls_key_file=client.key_file,
    )
    await round_trip(settings, "golden.tls.check")

    # Without the client certificate the server refuses the connection.
    bare = settings.model_copy(update={"nats_tls_cert_file": None, "nats_tls_key_file": None})
    await refused(bare, (NoServersError, OSError, asyncio.TimeoutError))


def nkey_seed_file(path: Path) -> str:
    """A fresh user nkey: its seed written to `path` (mode 0600); returns the public key."""
    user = Identity.new(nkeys.PREFIX_BYTE_USER)
    path.write_bytes(user.seed + b"\n")
    os.chmod(path, 0o600)
    return user.public_key


@pytest.fixture
def nkey_nats(tmp_path: Path, ca: TestCA) -> Iterator[tuple[str, Path]]:
    """A private nats-server: TLS (server certificate only) and one user who signs with an nkey."""
    binary = nats_binary()
    leaf = ca.server("nats-nkey")
    seed = tmp_path / "user.nk"
    public = nkey_seed_file(seed)
    auth = f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n'
    with configured_nats(binary, tmp_path / "nats-nkey", leaf, auth) as url:
        yield url, seed


def nats_binary() -> Path:
    """The nats-server binary, or the test is skipped."""
    binary = find_binary("nats-server")
    if binary is None:
        pytest.skip("no nats-server binary")
    return binary


@contextlib.contextmanager
def configured_nats(
    binary: Path, stem: Path, leaf: Leaf, auth: str = "", client_ca: TestCA | None = None
) -> Iterator[str]:
    """nats-server from a config file (`stem`.conf, its log `stem`.log): TLS with `leaf` (and,
    given `client_ca`, a client certificate it signed required), the `auth` lines as given;
    yields its tls:// URL once it listens."""
    port = free_port()
    config = stem.with_suffix(".conf")
    tls = f'cert_file: "{leaf.cert_file}", key_file: "{leaf.key_file}"'
    if client_ca is not None:
        tls += f', ca_file: "{client_ca.cert_file}", verify: true'
    config.write_text(f"listen: 127.0.0.1:{port}\ntls {{ {tls} }}\n" + auth)
    log = stem.with_suffix(".log")
    proc = subprocess.Popen(
        [str(binary), "-c", str(config)], stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )
    try:
        for _ in range(200):
            if port_in_use("127.0.0.1", port):
                break
            if proc.poll() is not None:
                raise RuntimeError(log.read_text())
            time.sleep(0.02)
        yield f"tls://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def round_trip(settings: Settings, subject: str) -> None:
    """Connect as the settings say (no retry), publish one message and receive it back."""
    nc = await connect_nats(settings, max_reconnect_attempts=0, allow_reconnect=False)
    try:
        sub = await nc.subscribe(subject)
        await nc.publish(subject, b"signed in")
        assert (await sub.next_msg(timeout=5)).data == b"signed in"
    finally:
        await nc.close()


async def refused(
    settings: Settings,
    errors: type[BaseException] | tuple[type[BaseException], ...],
    match: str | None = None,
) -> None:
    """A connection as the settings say (no retry, 2 s to connect) fails with `errors` (its
    message matching `match`)."""
    with pytest.raises(errors, match=match):
        nc = await connect_nats(
            settings, max_reconnect_attempts=0, allow_reconnect=False, connect_timeout=2
        )
        await nc.close()


async def test_nats_nkey_over_tls_from_settings(
    nkey_nats: tuple[str, Path], ca: TestCA, tmp_path: Path
) -> None:
    """GOLDEN_NATS_NKEY_SEED_FILE signs the server's nonce (needs nats-py's nkeys extra); no
    seed, or another user's seed, is refused."""
    url, seed = nkey_nats
    settings = Settings(  # type: ignore[call-arg]
        nats_url=url, nats_tls_ca_file=ca.cert_file, nats_nkey_seed_file=seed
    )
    await round_trip(settings, "golden.nkey.check")

    stranger = tmp_path / "stranger.nk"
    nkey_seed_file(stranger)
    for denied in (
        settings.model_copy(update={"nats_nkey_seed_file": None}),
        settings.model_copy(update={"nats_nkey_seed_file": stranger}),
    ):
        await refused(denied, (NatsError, NoServersError, OSError, asyncio.TimeoutError))


@pytest.fixture
def operator_nats(tmp_path: Path, ca: TestCA) -> Iterator[tuple[str, Path]]:
    """A private nats-server in operator (decentralised JWT) mode over TLS: it trusts a fresh
    operator and knows one account (MEMORY resolver); yields its URL and the `.creds` file of a
    user that account signed. No system account: the server only warns without one."""
    binary = nats_binary()
    leaf = ca.server("nats-operator")
    operator = Identity.new(nkeys.PREFIX_BYTE_OPERATOR)
    account = Identity.new(nkeys.PREFIX_BYTE_ACCOUNT)
    user = Identity.new(nkeys.PREFIX_BYTE_USER)
    creds = write_creds(tmp_path / "user.creds", user_jwt(user, account), user)
    auth = (
        f"operator: {operator_jwt(operator)}\n"
        "resolver: MEMORY\n"
        f"resolver_preload: {{ {account.public_key}: {account_jwt(account, operator)} }}\n"
    )
    with configured_nats(binary, tmp_path / "nats-operator", leaf, auth) as url:
        yield url, creds


async def test_nats_creds_file_in_operator_mode_from_settings(
    operator_nats: tuple[str, Path], ca: TestCA, tmp_path: Path
) -> None:
    """GOLDEN_NATS_CREDS_FILE (user JWT + seed, what `nsc` writes) signs in to a server that
    trusts only JWTs chained to its operator; no creds file, or a user whose account the operator
    never signed, is refused."""
    url, creds = operator_nats
    assert creds.stat().st_mode & 0o777 == 0o600
    settings = Settings(  # type: ignore[call-arg]
        nats_url=url, nats_tls_ca_file=ca.cert_file, nats_creds_file=creds
    )
    await round_trip(settings, "golden.creds.check")

    rogue_account = Identity.new(nkeys.PREFIX_BYTE_ACCOUNT)
    rogue = Identity.new(nkeys.PREFIX_BYTE_USER)
    rogue_creds = write_creds(tmp_path / "rogue.creds", user_jwt(rogue, rogue_account), rogue)
    for denied in (
        settings.model_copy(update={"nats_creds_file": None}),
        settings.model_copy(update={"nats_creds_file": rogue_creds}),
    ):
        # The server's own verdict (not a TLS or network failure): the JWT chain is checked.
        await refused(denied, NatsError, match="Authorization Violation")
