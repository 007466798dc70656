"""Temporal connection options come from the SDK's envconfig (profiles, API key, mTLS files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from golden_press.settings import Settings
from service.sagas.client import connect_config

PROFILES = """
[profile.default]
address = "temporal.internal:7233"
namespace = "golden"

[profile.cloud]
address = "golden.a1b2c.tmprl.cloud:7233"
namespace = "golden.a1b2c"
api_key = "cloud-key"
"""


@pytest.fixture(autouse=True)
def no_temporal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings also read the process environment: keep the machine's TEMPORAL_* out."""
    for name in list(os.environ):
        if name.startswith("TEMPORAL_"):
            monkeypatch.delenv(name)


def settings_from(env: dict[str, str]) -> Settings:
    """Settings as a process with exactly this environment would read them."""
    return Settings.model_validate(env)


def test_profile_file_and_profile_selection(tmp_path: Path) -> None:
    config_file = tmp_path / "temporal.toml"
    config_file.write_text(PROFILES)
    env = {"TEMPORAL_CONFIG_FILE": str(config_file)}
    config = connect_config(settings_from(env), env)
    assert config["target_host"] == "temporal.internal:7233"
    assert config["namespace"] == "golden"
    assert "tls" not in config

    env["TEMPORAL_PROFILE"] = "cloud"
    config = connect_config(settings_from(env), env)
    assert config["target_host"] == "golden.a1b2c.tmprl.cloud:7233"
    assert config["api_key"] == "cloud-key"
    assert config["tls"] is True  # an API key implies TLS


def test_mtls_from_environment_variables(tmp_path: Path) -> None:
    (tmp_path / "client.pem").write_bytes(b"CERT")
    (tmp_path / "client.key").write_bytes(b"KEY")
    (tmp_path / "ca.pem").write_bytes(b"CA")
    env = {
        "TEMPORAL_ADDRESS": "temporal.prod:7233",
        "TEMPORAL_NAMESPACE": "golden-prod",
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(tmp_path / "client.pem"),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(tmp_path / "client.key"),
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(tmp_path / "ca.pem"),
        "TEMPORAL_TLS_SERVER_NAME": "temporal.prod",
    }
    config = connect_config(settings_from(env), env)
    assert config["target_host"] == "temporal.prod:7233"
    assert config["namespace"] == "golden-prod"
    tls = config["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key, tls.server_root_ca_cert) == (
        b"CERT",
        b"KEY",
        b"CA",
    )
    assert tls.domain == "temporal.prod"


def test_settings_built_in_code_name_their_server() -> None:
    """The tests and the dev stack pass an address explicitly: it wins over the environment."""
    env = {"TEMPORAL_ADDRESS": "elsewhere:7233"}
    settings = Settings(temporal_address="127.0.0.1:7999", temporal_namespace="t")  # type: ignore[call-arg]
    config = connect_config(settings, env)
    assert (config["target_host"], config["namespace"]) == ("127.0.0.1:7999", "t")
    # Nothing set anywhere: the local default.
    assert connect_config(settings_from({}), {})["target_host"] == "127.0.0.1:7233"
