"""PostgreSQL over verified TLS with the password in a password file: a real secured server.

A private cluster (initdb + pg_ctl, as the dev stack starts it) is switched to `ssl = on` with a
certificate from a test CA and a pg_hba.conf that accepts only TLS connections with a SCRAM
password. golden-press takes all of it through the DSN (libpq keywords asyncpg reads):
`sslmode=verify-full&sslrootcert=...&passfile=...`; nothing secret is in the DSN itself.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from golden_press.redact import redact_dsn
from service.devstack.servers import PostgresCluster, _chown_postgres, find_postgres_bin_dir
from service.store.db import create_pool
from service.store.migrate import migrate
from tests.helpers.tls import TestCA

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(find_postgres_bin_dir() is None, reason="no initdb/pg_ctl on this machine"),
]

PASSWORD = "s3cret-over-tls"


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


@pytest.fixture
def tls_postgres(ca: TestCA) -> Iterator[int]:
    """A private cluster that takes only TLS + SCRAM password connections over TCP (its port)."""
    base = Path(tempfile.mkdtemp(prefix="golden-pgtls-"))
    base.chmod(0o755)  # the postgres user must reach the data dir
    cluster = PostgresCluster.start(base / "data")
    try:
        leaf = ca.server("postgres")
        for source, name in ((leaf.cert_file, "server.crt"), (leaf.key_file, "server.key")):
            shutil.copy(source, cluster.data_dir / name)
            os.chmod(cluster.data_dir / name, 0o600)
            _chown_postgres(cluster.data_dir / name)
        (cluster.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all golden 127.0.0.1/32 scram-sha-256\n"
        )

        async def secure() -> None:
            conn = await asyncpg.connect(cluster.dsn)  # still trust: the old pg_hba.conf
            try:
                await conn.execute("SET password_encryption = 'scram-sha-256'")
                await conn.execute(f"CREATE ROLE golden LOGIN PASSWORD '{PASSWORD}'")
                await conn.execute("ALTER DATABASE golden OWNER TO golden")
                await conn.execute("ALTER SYSTEM SET ssl = on")
                await conn.execute("SELECT pg_reload_conf()")
            finally:
                await conn.close()

        asyncio.run(secure())
        yield cluster.port
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def passfile(path: Path, port: int, password: str) -> Path:
    """A libpq password file (mode 0600, else libpq and asyncpg ignore it)."""
    path.write_text(f"127.0.0.1:{port}:*:golden:{password}\n")
    os.chmod(path, 0o600)
    return path


async def test_verified_tls_and_a_password_file(
    tls_postgres: int, ca: TestCA, tmp_path: Path
) -> None:
    port = tls_postgres
    secrets = passfile(tmp_path / "pgpass", port, PASSWORD)
    dsn = (
        f"postgresql://golden@127.0.0.1:{port}/golden"
        f"?sslmode=verify-full&sslrootcert={ca.cert_file}&passfile={secrets}"
    )
    assert redact_dsn(dsn) == dsn  # nothing secret in it: the password is in the file
    assert await asyncio.wait_for(migrate(dsn), 60)  # the schema, through the secured DSN
    pool = await create_pool(dsn, max_size=2)
    try:
        row = await pool.fetchrow(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        assert row["ssl"] is True and row["version"].startswith("TLSv1.")
        assert await pool.fetchval("SELECT count(*) FROM golden_config") == 1
    finally:
        await pool.close()

    # Plaintext is refused (no pg_hba.conf line for it), and so is a server the CA did not sign.
    plain = dsn.replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(plain)
    other = TestCA(tmp_path / "other")
    with pytest.raises((OSError, asyncpg.PostgresError)):  # ssl.SSLCertVerificationError
        await asyncpg.connect(dsn.replace(str(ca.cert_file), str(other.cert_file)))
    # A wrong password in the file fails authentication, and says nothing of the password.
    wrong = passfile(tmp_path / "pgpass-wrong", port, "not-it")
    with pytest.raises(asyncpg.InvalidPasswordError) as err:
        await asyncpg.connect(dsn.replace(str(secrets), str(wrong)))
    assert "not-it" not in str(err.value)
