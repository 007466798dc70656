"""The one way every process connects to Temporal (API, CLI, starter, worker, dev stack).

Connection options come from the SDK's own environment configuration (temporalio.envconfig):
TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS (and TEMPORAL_TLS_CLIENT_
CERT_PATH, TEMPORAL_TLS_CLIENT_KEY_PATH, TEMPORAL_TLS_SERVER_CA_CERT_PATH,
TEMPORAL_TLS_SERVER_NAME, ...), TEMPORAL_PROFILE and the TOML file TEMPORAL_CONFIG_FILE points
to. So Temporal Cloud (API key or mTLS) and a self-hosted mTLS cluster need no code here, only
those variables. Settings built in code (the tests, the dev stack's own children) still name
their server and namespace explicitly, and those win.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfigProfile, ClientConnectConfig
from temporalio.runtime import Runtime

from golden_press.errors import Unreachable
from golden_press.settings import Settings
from service.observability import tracing as telemetry


def connect_config(settings: Settings, env: Mapping[str, str] | None = None) -> ClientConnectConfig:
    """Client.connect options: the envconfig profile, then what the settings set explicitly."""
    config: dict[str, Any] = dict(
        ClientConfigProfile.load(override_env_vars=env).to_client_connect_config()
    )
    explicit = settings.model_fields_set
    if "temporal_address" in explicit or "target_host" not in config:
        config["target_host"] = settings.temporal_address
    if "temporal_namespace" in explicit or "namespace" not in config:
        config["namespace"] = settings.temporal_namespace
    return ClientConnectConfig(**config)  # type: ignore[typeddict-item]


async def connect_client(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A Temporal client with the pydantic data converter the worker uses (and tracing, if on).

    A worker built on this client inherits its tracing interceptor.
    """
    tracing = telemetry.active()
    config = connect_config(settings)
    try:
        return await Client.connect(
            **config,
            data_converter=pydantic_data_converter,
            runtime=runtime,
            interceptors=tracing.temporal_interceptors() if tracing else [],
        )
    except (RuntimeError, OSError) as exc:  # the SDK's core reports a failed connect as either
        raise Unreachable("Temporal", config["target_host"], exc) from exc


__all__ = ["connect_client", "connect_config"]
