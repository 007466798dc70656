"""DSNs are printed and logged only with their passwords masked."""

from __future__ import annotations

import pytest

from golden_press.redact import redact_dsn


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/golden",
            "postgresql://postgres@127.0.0.1:5432/golden",
        ),
        (
            "postgresql://app:s3cr%40t@db.internal:5432/golden?sslmode=verify-full&sslrootcert=/ca.pem",
            "postgresql://app:***@db.internal:5432/golden?sslmode=verify-full&sslrootcert=/ca.pem",
        ),
        (
            "postgres://app@db/golden?password=hunter2&sslmode=require",
            "postgres://app@db/golden?password=***&sslmode=require",
        ),
        (
            "postgresql://app@db/golden?passfile=/run/secrets/pgpass&sslmode=require",
            "postgresql://app@db/golden?passfile=/run/secrets/pgpass&sslmode=require",
        ),
        (
            "host=db user=app password='a b' dbname=golden sslmode=require",
            "host=db user=app password=*** dbname=golden sslmode=require",
        ),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected
    for secret in ("s3cr", "hunter2", "a b"):
        assert secret not in redact_dsn(dsn) or secret in expected
