"""docker-compose.yml against the Compose specification's JSON schema, and its production shape.

No container engine runs in CI, so the file is checked statically: the Compose specification's
schema (the copy the pinned check-jsonschema dev dependency vendors), pinned image versions,
healthchecks, the 3-node NATS cluster, Temporal's own role and database set up by its schema tool
(tests/integration/test_compose_temporal_db.py runs the psql part for real), and the search
attributes the setup registers against the ones the workflows upsert.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml

from golden_press import sagas

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ONE_SHOT = {"migrate", "temporal-setup", "temporal-schema"}
NATS_NODES = ("nats-1", "nats-2", "nats-3")
#: name:tag with an exact version (X.Y.Z, optionally suffixed; PostgreSQL's are X.Y since 10),
#: optionally @sha256:<digest> (added at release, see docs/operations.md "Image pins").
PINNED = re.compile(
    r"^(postgres:\d+\.\d+|[a-z0-9./_-]+:\d+\.\d+\.\d+)[A-Za-z0-9._-]*(@sha256:[0-9a-f]{64})?$"
)


def compose_schema() -> dict[str, Any]:
    """The Compose specification's JSON schema, as vendored by check-jsonschema."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def load_compose() -> dict[str, Any]:
    """The compose file as PyYAML reads it (anchors and merge keys resolved)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def schema_errors(document: dict[str, Any]) -> list[str]:
    """Every violation of the Compose schema, as `path: message` lines."""
    validator = jsonschema.Draft202012Validator(
        compose_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_compose_file_matches_the_compose_specification_schema() -> None:
    assert schema_errors(load_compose()) == []


def test_the_schema_check_catches_a_misspelt_key() -> None:
    """The check can fail: a typo or a wrongly typed value is reported."""
    doc = load_compose()
    doc["services"]["api"]["depend_on"] = ["postgresql"]
    doc["services"]["nats-1"]["healthcheck"]["interval"] = 5
    errors = schema_errors(doc)
    assert any("depend_on" in e for e in errors), errors
    assert any("nats-1/healthcheck/interval" in e for e in errors), errors


def test_every_image_is_pinned_to_an_exact_version() -> None:
    for floating in ("nats:2-alpine", "postgres:16", "temporalio/ui:latest", "nats:2.11-alpine"):
        assert not PINNED.match(floating), floating
    assert PINNED.match("nats:2.11.9-alpine@sha256:" + "0" * 64)
    loose = {
        name: svc["image"]
        for name, svc in load_compose()["services"].items()
        if "build" not in svc and not PINNED.match(svc["image"])
    }
    assert not loose, f"images without an exact version tag: {loose}"


def test_every_long_running_service_has_a_healthcheck() -> None:
    services = load_compose()["services"]
    assert ONE_SHOT <= set(services)
    missing = [
        name
        for name, svc in services.items()
        if name not in ONE_SHOT and not (svc.get("healthcheck") or {}).get("test")
    ]
    assert not missing, f"services without a healthcheck: {missing}"
    assert services["temporal-ui"]["healthcheck"]["test"]


def test_nats_is_a_three_node_jetstream_cluster_and_the_stream_keeps_three_replicas() -> None:
    services = load_compose()["services"]
    routes = set()
    for node in NATS_NODES:
        argv = [str(a) for a in services[node]["command"]]
        flags = dict(a.split("=", 1) for a in argv if a.startswith("--") and "=" in a)
        assert "--jetstream" in argv and flags["--store_dir"] == "/data"
        assert flags["--name"] == node and flags["--cluster_name"] == "golden-press"
        routes.add(flags["--routes"])
        assert any(str(v).endswith(":/data") for v in services[node]["volumes"])
        assert "8222/healthz" in " ".join(map(str, services[node]["healthcheck"]["test"]))
    assert routes == {",".join(f"nats://{n}:6222" for n in NATS_NODES)}
    for app in ("worker", "api", "migrate"):
        env = services[app]["environment"]
        assert env["GOLDEN_STREAM_REPLICAS"] == "3"
        assert {urlsplit(u).hostname for u in env["GOLDEN_NATS_URL"].split(",")} == set(NATS_NODES)
    volumes = {str(services[n]["volumes"][0]).split(":")[0] for n in NATS_NODES}
    assert len(volumes) == 3, "each node needs its own volume"


def test_temporal_runs_the_server_image_on_its_own_role_and_databases() -> None:
    services = load_compose()["services"]
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/server:")
    assert not any("auto-setup" in str(s.get("image", "")) for s in services.values())
    env = temporal["environment"]
    assert env["POSTGRES_USER"] == "temporal" and env["POSTGRES_USER"] != "postgres"
    assert env["DBNAME"] == "temporal" and env["VISIBILITY_DBNAME"] == "temporal_visibility"
    assert "TEMPORAL_DB_PASSWORD" in env["POSTGRES_PWD"]
    assert temporal["depends_on"]["temporal-schema"]["condition"] == (
        "service_completed_successfully"
    )
    schema = services["temporal-schema"]
    assert schema["image"].startswith("temporalio/admin-tools:")
    script = schema["command"][0]
    assert script.count("temporal-sql-tool") == 2
    assert "setup-schema -v 0.0" in script and "update-schema -d" in script


def test_setup_registers_exactly_the_search_attributes_the_workflows_use() -> None:
    script = load_compose()["services"]["temporal-setup"]["command"][0]
    loop = re.search(r"for name in ([A-Za-z ]+); do", script)
    assert loop, "temporal-setup has no search-attribute loop"
    registered = set(loop.group(1).split())
    assert registered == set(sagas.SEARCH_ATTRIBUTES)
