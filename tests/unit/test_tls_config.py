"""TLS settings: half a configuration is an error, not a silent plaintext server."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.api.tls import TlsConfigError, channel_credentials, is_loopback, server_tls_files


def test_server_files_both_or_neither() -> None:
    assert server_tls_files(None, None, None) is None
    files = server_tls_files(Path("c.pem"), Path("k.pem"), Path("ca.pem"))
    assert files is not None and files.mutual
    with pytest.raises(TlsConfigError, match="both"):
        server_tls_files(Path("c.pem"), None, None)
    with pytest.raises(TlsConfigError, match="GOLDEN_TLS_CLIENT_CA_FILE"):
        server_tls_files(None, None, Path("ca.pem"))


def test_client_certificate_needs_key_and_ca(tmp_path: Path) -> None:
    assert channel_credentials(None) is None
    with pytest.raises(TlsConfigError, match="both"):
        channel_credentials(tmp_path / "ca.pem", tmp_path / "c.pem", None)
    with pytest.raises(TlsConfigError, match="--ca-file"):
        channel_credentials(None, tmp_path / "c.pem", tmp_path / "k.pem")
    with pytest.raises(TlsConfigError, match="cannot read"):
        channel_credentials(tmp_path / "missing.pem")


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.0.1:1", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        (":50051", False),
        ("10.0.0.7:50051", False),
        ("api.example.com:443", False),
    ],
)
def test_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback
