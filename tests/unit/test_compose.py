"""docker-compose.yml and the Dockerfile, checked without a container engine (CI has none)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import opentelemetry.environment_variables
import opentelemetry.sdk.environment_variables
import pytest
import yaml

from golden_press.sagas import SEARCH_ATTRIBUTES
from golden_press.settings import Settings
from service.observability import tracing

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"

APP_SERVICES = ("migrate", "worker", "api")
ONE_SHOT = {"migrate", "temporal-setup", "temporal-schema"}
NATS_NODES = ("nats-1", "nats-2", "nats-3")
#: Long-running services something waits on (or an operator watches): each needs a healthcheck.
NEEDS_HEALTHCHECK = {"postgresql", "temporal", "temporal-ui", *NATS_NODES, "worker", "api"}
#: Temporal's own variable names; the Settings aliases already use them, listed for clarity.
TEMPORAL_NAMES = {"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE"}
#: The OTEL_* names OpenTelemetry's API and SDK read (a misspelt one is read by nobody).
OTEL_NAMES = {
    value
    for module in (opentelemetry.environment_variables, opentelemetry.sdk.environment_variables)
    for key, value in vars(module).items()
    if key.startswith("OTEL_") and isinstance(value, str)
}
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
INTERPOLATED = re.compile(r"(?<!\$)\$\{[^}]*\}")


def load_compose() -> dict[str, Any]:
    """The compose file as PyYAML reads it (anchors and merge keys resolved)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    """Service name -> definition."""
    return load_compose()["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or as a list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    """A service's command as argv."""
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency -> condition (short list syntax means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def container_ports(service: dict[str, Any]) -> set[int]:
    """Container-side ports a service publishes."""
    found = set()
    for port in service.get("ports") or []:
        text = str(port["target"]) if isinstance(port, dict) else str(port)
        found.add(int(text.split("/")[0].rsplit(":", 1)[-1]))
    return found


def host_ports(service: dict[str, Any]) -> list[str]:
    """Host-side ports a service publishes (empty entries mean an ephemeral port)."""
    found = []
    for port in service.get("ports") or []:
        text = str(port.get("published", "")) if isinstance(port, dict) else str(port)
        parts = text.split("/")[0].split(":")
        found.append(parts[-2] if len(parts) >= 2 else "")
    return found


def settings_env_names() -> set[str]:
    """Every environment variable name golden_press.settings.Settings reads."""
    return {field.alias for field in Settings.model_fields.values() if field.alias}


#: Keys of the compose specification this file may use (a typo such as `depend_on` fails here).
SERVICE_KEYS = {
    "build",
    "cap_drop",
    "command",
    "configs",
    "container_name",
    "depends_on",
    "deploy",
    "entrypoint",
    "environment",
    "env_file",
    "expose",
    "extra_hosts",
    "healthcheck",
    "hostname",
    "image",
    "init",
    "labels",
    "logging",
    "networks",
    "ports",
    "profiles",
    "pull_policy",
    "read_only",
    "restart",
    "secrets",
    "security_opt",
    "stop_grace_period",
    "stop_signal",
    "tmpfs",
    "ulimits",
    "user",
    "volumes",
    "working_dir",
}
TOP_LEVEL_KEYS = {"name", "services", "networks", "volumes", "secrets", "configs", "include"}
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval"}
SECRET_KEYS = {"source", "target", "uid", "gid", "mode"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
RESTART = {"no", "always", "on-failure", "unless-stopped"}


def test_only_compose_spec_keys() -> None:
    compose = load_compose()
    problems = [
        f"top level: {k}" for k in compose if k not in TOP_LEVEL_KEYS and not k.startswith("x-")
    ]
    for name, svc in compose["services"].items():
        problems += [f"{name}: {k}" for k in svc if k not in SERVICE_KEYS]
        problems += [
            f"{name}.healthcheck: {k}"
            for k in svc.get("healthcheck") or {}
            if k not in HEALTHCHECK_KEYS
        ]
        for secret in svc.get("secrets") or []:
            if isinstance(secret, dict):
                problems += [f"{name}.secrets: {k}" for k in secret if k not in SECRET_KEYS]
        problems += [
            f"{name}: condition {c}" for c in depends_on(svc).values() if c not in CONDITIONS
        ]
        if str(svc.get("restart", "no")) not in RESTART:
            problems.append(f"{name}: restart {svc['restart']}")
        test = (svc.get("healthcheck") or {}).get("test")
        if test is not None and not (
            isinstance(test, str) or test[0] in {"CMD", "CMD-SHELL", "NONE"}
        ):
            problems.append(f"{name}: healthcheck test must start with CMD or CMD-SHELL")
    for name, secret in (compose.get("secrets") or {}).items():
        if not ({"file", "environment", "external"} & set(secret)):
            problems.append(f"secret {name} has no source")
    assert not problems, f"not in the compose specification: {problems}"


def test_every_service_has_image_or_build() -> None:
    missing = [
        name for name, svc in services().items() if not (svc.get("image") or svc.get("build"))
    ]
    assert not missing, f"services without image or build: {missing}"


def test_expected_services_present() -> None:
    expected = {
        "postgresql",
        "temporal-schema",
        "temporal",
        "temporal-ui",
        "temporal-setup",
        *NATS_NODES,
        *APP_SERVICES,
    }
    assert expected <= set(services()), f"missing services: {sorted(expected - set(services()))}"


def test_long_running_services_have_healthchecks() -> None:
    svcs = services()
    without = [
        n for n in sorted(NEEDS_HEALTHCHECK) if not (svcs[n].get("healthcheck") or {}).get("test")
    ]
    assert not without, f"long-running services without a healthcheck: {without}"


def test_depends_on_targets_exist_with_the_right_condition() -> None:
    svcs = services()
    problems = []
    for name, svc in svcs.items():
        for target, condition in depends_on(svc).items():
            if target not in svcs:
                problems.append(f"{name} depends on unknown service {target}")
            elif target in ONE_SHOT and condition != "service_completed_successfully":
                problems.append(
                    f"{name} -> {target}: a one-shot needs service_completed_successfully"
                )
            elif target not in ONE_SHOT and condition != "service_healthy":
                problems.append(f"{name} -> {target}: wait for service_healthy, not {condition}")
            elif condition == "service_healthy" and not svcs[target].get("healthcheck"):
                problems.append(
                    f"{name} waits for {target} to be healthy but it has no healthcheck"
                )
    assert not problems, "\n".join(problems)


def test_one_shots_do_not_restart() -> None:
    svcs = services()
    assert all(str(svcs[n].get("restart", "no")) == "no" for n in ONE_SHOT)


def test_worker_runs_two_replicas_without_fixed_names_or_host_ports() -> None:
    worker = services()["worker"]
    assert worker["deploy"]["replicas"] == 2
    # A container_name or a host port would make the second replica fail to start.
    assert "container_name" not in worker
    assert not worker.get("ports")


def test_ports() -> None:
    svcs = services()
    assert 50051 in container_ports(svcs["api"])
    assert 7233 in container_ports(svcs["temporal"])
    assert 8080 in container_ports(svcs["temporal-ui"])
    grpc_port = int(env_of(svcs["api"])["GOLDEN_GRPC_ADDR"].rsplit(":", 1)[1])
    assert grpc_port in container_ports(svcs["api"]), "api publishes a port it does not listen on"
    published = [p for svc in svcs.values() for p in host_ports(svc) if p]
    assert len(published) == len(set(published)), f"a host port is published twice: {published}"
    for name in ("worker", "api"):
        metrics = env_of(svcs[name]).get("GOLDEN_METRICS_PORT")
        assert metrics and metrics != "0", f"{name} has no Prometheus endpoint"
        assert metrics in {str(p) for p in svcs[name].get("expose", [])}, (
            f"{name}: expose {metrics}"
        )


def test_app_env_names_are_read_by_the_code() -> None:
    known = settings_env_names() | TEMPORAL_NAMES | OTEL_NAMES
    unknown = {
        f"{name}: {var}"
        for name in APP_SERVICES
        for var in env_of(services()[name])
        if var not in known
    }
    assert not unknown, f"environment variables no code reads: {sorted(unknown)}"


def test_app_services_share_one_configuration() -> None:
    svcs = services()
    shared = ("GOLDEN_PG_DSN", "GOLDEN_NATS_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE")
    for var in (*shared, "GOLDEN_TASK_QUEUE"):
        values = {env_of(svcs[n]).get(var) for n in APP_SERVICES}
        assert len(values) == 1 and None not in values, f"{var} differs or is missing: {values}"


def test_app_env_points_at_services_of_this_file() -> None:
    svcs = services()
    env = env_of(svcs["worker"])
    for var in ("GOLDEN_PG_DSN", "GOLDEN_NATS_URL"):
        # `${VAR:?message}` would end the URL's authority at its `?`: substitute first.
        for url in INTERPOLATED.sub("x", env[var]).split(","):
            assert urlsplit(url).hostname in svcs, f"{var} names a host outside the file"
    assert env["TEMPORAL_ADDRESS"].rsplit(":", 1)[0] in svcs


def test_temporal_uses_postgresql_persistence() -> None:
    svcs = services()
    env = env_of(svcs["temporal"])
    assert env["DB"] == "postgres12"
    assert env["POSTGRES_SEEDS"] in svcs
    assert {"DB_PORT", "POSTGRES_USER", "POSTGRES_PWD"} <= set(env)
    assert (
        env_of(svcs["temporal-ui"])["TEMPORAL_ADDRESS"]
        == env_of(svcs["worker"])["TEMPORAL_ADDRESS"]
    )


def test_temporal_setup_registers_the_search_attributes() -> None:
    svcs = services()
    setup = svcs["temporal-setup"]
    script = " ".join(command_of(setup) + [str(e) for e in setup.get("entrypoint") or []])
    # The names come from golden_press.sagas, the one home of saga identity; compose's shell step
    # cannot import it, so this test holds the two together.
    for attribute, kind in SEARCH_ATTRIBUTES.items():
        assert attribute in script, f"{attribute} is not registered"
        assert f"--type {kind}" in script
    for var in TEMPORAL_NAMES:
        assert env_of(setup)[var] == env_of(svcs["worker"])[var], f"temporal-setup {var} differs"


def _mode(value: Any) -> int:
    """A compose octal mode: PyYAML (YAML 1.1) keeps `0o400` as a string, compose reads an int."""
    return int(value, 8) if isinstance(value, str) else int(value)


def test_file_settings_come_from_private_secrets() -> None:
    compose = load_compose()
    top_level = set(compose.get("secrets") or {})
    for name in APP_SERVICES:
        svc = compose["services"][name]
        mounted = {}
        for secret in svc.get("secrets") or []:
            secret = {"source": secret} if isinstance(secret, str) else secret
            assert secret["source"] in top_level, f"{name}: unknown secret {secret['source']}"
            target = secret.get("target", secret["source"])
            mounted[target if target.startswith("/") else f"/run/secrets/{target}"] = secret
        for var, value in env_of(svc).items():
            if not var.endswith("_FILE"):
                continue
            assert value in mounted, f"{name}: {var}={value} is not a mounted secret"
            mode = _mode(mounted[value].get("mode", 0o444))
            assert not mode & (stat.S_IRWXG | stat.S_IRWXO), f"{name}: {var} mode {mode:o}"


#: Where a container serves TLS from: GOLDEN_TLS_CERT_FILE and GOLDEN_TLS_KEY_FILE (both needed).
TLS_SERVER_VARS = ("GOLDEN_TLS_CERT_FILE", "GOLDEN_TLS_KEY_FILE")
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "[::1]", "localhost"}


def published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, container port) of each port a service publishes; "" = every interface."""
    found = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            found.append((str(port.get("host_ip", "")), int(port["target"])))
            continue
        # [HOST:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]; HOST may be an IPv6 address.
        parts = str(port).split("/")[0].rsplit(":", 2)
        found.append((parts[0] if len(parts) == 3 else "", int(parts[-1])))
    return found


def mounted_secret_files(doc: dict[str, Any], name: str) -> dict[str, str]:
    """Path in the container -> host file, for each secret service `name` mounts from a file."""
    top_level = doc.get("secrets") or {}
    mounted = {}
    for secret in doc["services"][name].get("secrets") or []:
        secret = {"source": secret} if isinstance(secret, str) else secret
        target = secret.get("target", secret["source"])
        path = target if target.startswith("/") else f"/run/secrets/{target}"
        mounted[path] = str((top_level.get(secret["source"]) or {}).get("file", ""))
    return mounted


def plaintext_api_problems(doc: dict[str, Any]) -> list[str]:
    """Services serving the gRPC API without TLS, or publishing it in plaintext off loopback."""
    problems = []
    for name, svc in doc["services"].items():
        env = env_of(svc)
        if "GOLDEN_GRPC_ADDR" not in env:
            continue
        port = int(env["GOLDEN_GRPC_ADDR"].rsplit(":", 1)[1])
        tls = all(env.get(var) for var in TLS_SERVER_VARS)
        for host, target in published(svc):
            if target == port and not tls and host not in LOOPBACK_HOSTS:
                problems.append(f"{name} publishes plaintext gRPC on {host or '0.0.0.0'}:{port}")
    return problems


def api_tls_problems(doc: dict[str, Any]) -> list[str]:
    """What keeps the compose API from serving TLS from mounted secret files, checked healthy."""
    api = doc["services"]["api"]
    env = env_of(api)
    mounted = mounted_secret_files(doc, "api")
    problems = []
    # The server's pair, and the CA its healthcheck verifies it against.
    for var in (*TLS_SERVER_VARS, "GOLDEN_TLS_CA_FILE"):
        if mounted.get(env.get(var, ""), "") == "":
            problems.append(f"api: {var} is not a secret mounted from a file")
    test = " ".join(str(part) for part in (api.get("healthcheck") or {}).get("test") or [])
    if "insecure_channel" in test or "secure_channel" not in test:
        problems.append("api: the healthcheck does not dial TLS")
    for needed in ("GOLDEN_TLS_CA_FILE", "GOLDEN_TLS_CLIENT_CERT_FILE", "HealthStub", "SERVING"):
        if needed not in test:
            problems.append(f"api: the healthcheck does not use {needed}")
    # Whatever else dials the API (a CLI or demo container) verifies it with a CA.
    addr_port = env.get("GOLDEN_GRPC_ADDR", ":50051").rsplit(":", 1)[1]
    for name, svc in doc["services"].items():
        text = " ".join([*env_of(svc).values(), *command_of(svc)])
        if name != "api" and f"api:{addr_port}" in text:
            ca = env_of(svc).get("GOLDEN_TLS_CA_FILE", "")
            if mounted_secret_files(doc, name).get(ca, "") == "":
                problems.append(f"{name} dials the API without GOLDEN_TLS_CA_FILE from a secret")
    return problems


def test_api_serves_tls_from_secrets_and_is_checked_over_tls() -> None:
    """Bearer tokens cross the network: the API in compose serves TLS, never plaintext off
    loopback, and its healthcheck speaks TLS (a plaintext one would mark a TLS API unhealthy)."""
    doc = load_compose()
    assert plaintext_api_problems(doc) == []
    assert api_tls_problems(doc) == []


def test_the_tls_checks_catch_a_plaintext_api() -> None:
    """The checks can fail: the API without its TLS settings, with a plaintext healthcheck, or a
    CLI container dialling it without a CA is reported; a loopback-only publish is not."""
    doc = load_compose()
    api = doc["services"]["api"]
    for var in TLS_SERVER_VARS:
        del api["environment"][var]
    assert plaintext_api_problems(doc) == ["api publishes plaintext gRPC on 0.0.0.0:50051"]
    api["ports"] = ["127.0.0.1:50051:50051", {"target": 50051, "host_ip": "::1"}]
    assert plaintext_api_problems(doc) == []
    api["ports"] = [{"target": 50051, "published": "50051"}]
    assert plaintext_api_problems(doc) == ["api publishes plaintext gRPC on 0.0.0.0:50051"]
    problems = api_tls_problems(doc)
    assert all(
        f"api: {var} is not a secret mounted from a file" in problems for var in TLS_SERVER_VARS
    )

    doc = load_compose()
    doc["services"]["api"]["healthcheck"]["test"][-1] = (
        "import grpc; grpc.insecure_channel('127.0.0.1:50051')"
    )
    doc["services"]["cli"] = {
        "image": "golden-press:local",
        "command": ["golden-press", "get", "x", "--addr", "api:50051"],
    }
    assert api_tls_problems(doc)[0] == "api: the healthcheck does not dial TLS"
    assert "cli dials the API without GOLDEN_TLS_CA_FILE from a secret" in api_tls_problems(doc)


#: `${NAME:-default}` (compose interpolation with a default).
WITH_DEFAULT = re.compile(r"^\$\{([A-Z_][A-Z0-9_]*):-([^}]*)\}$")


def otel_env(service: str, shell: dict[str, str]) -> dict[str, str]:
    """The OTEL_* environment compose gives a service when `docker compose up` runs in a shell
    with these variables (each entry must pass the shell's value through, with a default)."""
    resolved = {}
    for name, value in env_of(services()[service]).items():
        if name.startswith("OTEL_"):
            found = WITH_DEFAULT.match(value)
            assert found and found.group(1) == name, f"{service}: {name}={value!r}"
            resolved[name] = shell.get(name) or found.group(2)
    return resolved


@pytest.mark.parametrize("service", ["worker", "api"])
def test_tracing_is_off_in_compose_until_the_shell_turns_it_on(service: str) -> None:
    """Worker and API pass the standard OTEL_* variables through from the shell: off by default
    (the defaults are the SDK's own, so an unset variable behaves as unset), on with an
    endpoint, over HTTP too, or on the console. No OTEL_SERVICE_NAME: each process names itself."""
    assert "OTEL_SERVICE_NAME" not in env_of(services()[service])
    off = otel_env(service, {})
    assert tracing.exporter_choice(off) == tracing.ExporterChoice((), "grpc", ())
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4317"}
    assert tracing.exporter_choice(otel_env(service, endpoint)).exporters == ("otlp",)
    http = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    assert tracing.exporter_choice(otel_env(service, http)).protocol == "http/protobuf"
    console = tracing.exporter_choice(otel_env(service, {"OTEL_TRACES_EXPORTER": "console"}))
    assert console.exporters == ("console",)
    sampled = otel_env(
        service,
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    )
    assert sampled["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
    assert {"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_RESOURCE_ATTRIBUTES"} <= set(off)


def test_keys_only_where_they_sign() -> None:
    svcs = services()
    assert {"GOLDEN_SIGNING_KEY_FILE", "GOLDEN_LEDGER_KEY_FILE"} <= set(env_of(svcs["worker"]))
    for name in ("api", "migrate"):
        assert "GOLDEN_SIGNING_KEY_FILE" not in env_of(svcs[name])


def _module_file(argv: list[str]) -> Path:
    """The repository file an app command runs (`python X.py` or `python -m pkg.mod`)."""
    assert argv and argv[0] in {"python", "python3"}, f"not a python command: {argv}"
    if argv[1] == "-m":
        return ROOT / (argv[2].replace(".", "/") + ".py")
    return ROOT / argv[1]


def test_app_commands_reference_files_in_the_repo() -> None:
    missing = []
    for name in APP_SERVICES:
        path = _module_file(command_of(services()[name]))
        if not path.is_file():
            missing.append(f"{name}: {path.relative_to(ROOT)}")
    assert not missing, f"app commands run files that do not exist: {missing}"


def test_configuration_is_documented() -> None:
    doc = OPERATIONS_DOC.read_text()
    names = {var for n in APP_SERVICES for var in env_of(services()[n])}
    names |= set(INTERPOLATION.findall(COMPOSE_FILE.read_text()))
    undocumented = sorted(n for n in names if f"`{n}`" not in doc)
    assert not undocumented, f"not documented in docs/operations.md: {undocumented}"


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "pip install ." in text
    assert "python -m service.devstack.protogen" in text
    runtime = text.rsplit("\nFROM ", 1)[-1]
    assert "grpcio-tools" not in runtime and "COPY --from=proto" in runtime, (
        "protobuf code is generated in the build stage; the runtime image needs no grpcio-tools"
    )
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must not run as root"
    app_uids = {str(s.get("uid")) for n in APP_SERVICES for s in services()[n].get("secrets") or []}
    assert app_uids <= {users[-1].split(":")[0]}, "secret owner differs from the image's user"


def _compose_cli() -> list[str] | None:
    """Compose v2 (`docker compose`), when installed; v1 predates parts of the spec we use."""
    if shutil.which("docker") is None:
        return None
    probe = subprocess.run(
        ["docker", "compose", "version", "--short"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if probe.returncode != 0 or not probe.stdout.strip().lstrip("v").startswith("2"):
        return None
    return ["docker", "compose"]


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose on this machine")
    # A copy beside dummy secret files, so validation never reads real key material.
    (tmp_path / "secrets").mkdir()
    for name in (
        "issuer.key",
        "ledger.key",
        "api-tokens",
        "api-tls.crt",
        "api-tls.key",
        "api-tls-ca.pem",
    ):
        (tmp_path / "secrets" / name).write_text("dummy\n")
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    env = {**os.environ, "POSTGRES_PASSWORD": "validation-only"}
    result = subprocess.run(
        [*cli, "-f", str(tmp_path / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
