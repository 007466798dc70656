"""`golden-press dev up/down`: the embedded dev stack (PostgreSQL, NATS, Temporal, witness, worker,
API).

Each server comes from the environment when its variable is set (GOLDEN_PG_DSN, GOLDEN_NATS_URL,
TEMPORAL_ADDRESS), else it is started privately with its state under GOLDEN_STATE_DIR. What was
started is written to `stack.json` in the state dir (pids and start times, so `dev down` never
signals a reused pid), which is how `dev down`, `ensure_stack()` and later CLI calls find it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import secrets
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from pydantic import BaseModel, Field

from golden_press.checkpoint import NoteVerifier
from golden_press.cosignature import CosignatureVerifier, Witness, format_witnesses
from golden_press.redact import redact_dsn
from golden_press.settings import Settings
from service.devstack.servers import (
    HOST,
    SEARCH_ATTRIBUTES,
    ChildProcess,
    NatsServer,
    PostgresCluster,
    ServerError,
    TemporalDevServer,
    free_port,
    log_tail,
    pid_alive,
    port_in_use,
    process_start_time,
    run_async,
    stop_pid,
    with_fresh_ports,
)
from service.store.key_files import KeyFileError, ensure_key_file, load_key_file, read_tokens
from service.store.migrate import migrate

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = "stack.json"
#: How the worker and the API are started (cwd = repo root; settings come from the environment).
WORKER_CMD: list[str] = [sys.executable, "worker.py"]
API_CMD: list[str] = [sys.executable, "-m", "service.api.server"]
WORKER_READY_TIMEOUT_S = 120.0  # first start imports and validates every workflow: seconds
API_READY_TIMEOUT_S = 60.0
#: The dev stack's one witness (docs/witnesses.md); the log trusts it with quorum 1.
WITNESS_CMD: list[str] = [sys.executable, "-m", "service.witness", "serve"]
WITNESS_NAME = "witness.golden-press.local/w1"
WITNESS_READY_TIMEOUT_S = 30.0


class StackInfo(BaseModel):
    """Addresses of a running dev stack: the `dev up --detach` JSON line, plus the child env."""

    temporal: str
    ui: str | None
    postgres: str
    nats: str
    grpc: str
    namespace: str
    task_queue: str
    token: str
    #: The API serves TLS (GOLDEN_TLS_CERT_FILE/GOLDEN_TLS_KEY_FILE were set).
    tls: bool = False
    #: Base URL of the public ledger's tiles over HTTP (c2sp.org/tlog-tiles).
    tiles: str | None = None
    #: Submission URL of the witness the stack runs (None when GOLDEN_WITNESSES was given).
    witness: str | None = None
    #: Environment (GOLDEN_*, TEMPORAL_*, OTEL_*) that points a process at this stack.
    env: dict[str, str] = Field(default_factory=dict, exclude=True)

    def json_line(self) -> str:
        """The one line `dev up --detach` prints."""
        # A DSN's password never reaches a terminal or a CI log (use sslmode/passfile in the DSN).
        fields = {**self.model_dump(), "postgres": redact_dsn(self.postgres)}
        return json.dumps(fields, separators=(",", ":"))

    def settings(self) -> Settings:
        """Settings of a client of this stack (what the worker and the API were given)."""
        return Settings(**self.env)  # type: ignore[arg-type,call-arg]


@dataclass
class _Proc:
    """One process of the stack as recorded in stack.json."""

    name: str
    pid: int
    start_time: int | None
    pgid: int | None  # signal the whole group (our children run in their own session)
    first_signal: int = signal.SIGTERM

    def alive(self) -> bool:
        return pid_alive(self.pid, self.start_time)

    def stop(self) -> bool:
        return stop_pid(
            self.pid,
            pgid=self.pgid,
            start_time=self.start_time,
            first_signal=self.first_signal,
            timeout=30.0,
        )


@dataclass
class _Stack:
    """What one `dev up` started, in start order; stopped in reverse."""

    state_dir: Path
    parts: list[tuple[str, Any]] = field(default_factory=list)  # (name, server or ChildProcess)
    info: StackInfo | None = None

    def add(self, name: str, part: Any) -> None:
        self.parts.append((name, part))

    def start(self, proc: ChildProcess, ready: Callable[[], bool], timeout: float) -> ChildProcess:
        """Spawn a part and wait until `ready`; one that never gets there is stopped and is no
        part of the stack (with_fresh_ports may start it again on other ports)."""
        proc.spawn()
        self.add(proc.component, proc)
        try:
            proc.wait_ready(ready, timeout)
        except ServerError:
            self.parts.remove((proc.component, proc))
            raise
        return proc

    def procs(self) -> list[_Proc]:
        return [p for name, part in self.parts if (p := _proc_of(name, part)) is not None]

    def first_exit(self) -> str | None:
        """A one-line reason when a part of the stack has stopped on its own."""
        for name, part in self.parts:
            if isinstance(part, ChildProcess):
                code = part.exited()
                if code is not None:
                    return f"{name} exited with code {code}: {log_tail(part.log_file)}"
            elif part.pid is not None and not pid_alive(part.pid):
                return f"{name} (pid {part.pid}) is gone"
        return None

    def stop(self) -> None:
        for _name, part in reversed(self.parts):
            with contextlib.suppress(Exception):
                part.stop()
        self.parts.clear()

    def detach(self) -> None:
        for _name, part in self.parts:
            if hasattr(part, "detach"):
                part.detach()
            elif isinstance(part, ChildProcess):
                part.proc = None  # no longer ours to stop; `dev down` stops it by pid

    def save(self, supervisor: int | None) -> None:
        assert self.info is not None
        sup = (
            None
            if supervisor is None
            else _Proc("supervisor", supervisor, process_start_time(supervisor), None)
        )
        _record(self.state_dir, self.info, self.procs(), sup)


def _proc_of(name: str, part: Any) -> _Proc | None:
    """How stack.json records a started part (None: it has no process)."""
    if isinstance(part, ChildProcess):
        pid = part.proc.pid if part.proc else None
        pgid, first = pid, signal.SIGTERM
    elif isinstance(part, PostgresCluster):
        pid, pgid, first = part.pid, None, signal.SIGINT  # SIGINT = fast shutdown
    else:
        pid, pgid, first = part.pid, part.pid, signal.SIGTERM
    if pid is None:
        return None
    return _Proc(name, pid, process_start_time(pid), pgid, first)


def _record(state_dir: Path, info: StackInfo, procs: list[_Proc], supervisor: _Proc | None) -> None:
    """Write stack.json: what `dev down`, `dev status` and later CLI calls know of the stack."""
    state = {
        "version": 1,
        "info": info.model_dump(),
        "env": info.env,
        "processes": [vars(p) for p in procs],
        "supervisor": None
        if supervisor is None
        else {"pid": supervisor.pid, "start_time": supervisor.start_time},
    }
    _write_private(state_dir / STACK_FILE, json.dumps(state, indent=2) + "\n")


# --------------------------------------------------------------------------- state dir


def _settings() -> Settings:
    """Settings from the environment (ignore: mypy without the pydantic plugin wants aliases)."""
    return Settings()


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (keys, tokens), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One `dev up`/`dev down`/`ensure_stack` at a time per state dir."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class _Recorded:
    info: StackInfo
    procs: list[_Proc]
    supervisor: _Proc | None


def _read_state(state_dir: Path) -> _Recorded | None:
    try:
        raw = json.loads((state_dir / STACK_FILE).read_text())
        info = StackInfo(**raw["info"], env=raw.get("env", {}))
        procs = [_Proc(**p) for p in raw["processes"]]
        sup = raw.get("supervisor")
        supervisor = _Proc("supervisor", sup["pid"], sup["start_time"], None) if sup else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return _Recorded(info, procs, supervisor)


def _stop_recorded(state_dir: Path, recorded: _Recorded) -> list[str]:
    """Stop a recorded stack (supervisor first: it stops its own children); names not stopped."""
    if recorded.supervisor is not None:
        stop_pid(recorded.supervisor.pid, start_time=recorded.supervisor.start_time, timeout=60.0)
    failed = [p.name for p in reversed(recorded.procs) if not p.stop()]
    if not failed:
        with contextlib.suppress(FileNotFoundError):
            (state_dir / STACK_FILE).unlink()
    return failed


class StackDown(Exception):
    """A dev stack is recorded but part of it is not running (see `golden-press dev status`)."""

    def __init__(self, state_dir: Path, dead: list[str]) -> None:
        super().__init__(
            f"the dev stack in {state_dir} is partly down ({', '.join(dead)} not running);"
            " see `golden-press dev status`, restart the missing parts with `golden-press dev up`"
        )
        self.dead = dead


def _dead(recorded: _Recorded) -> list[str]:
    """Names of the recorded parts that are not running (the supervisor of a foreground up too)."""
    members = [*recorded.procs, *([recorded.supervisor] if recorded.supervisor else [])]
    return [p.name for p in members if not p.alive()]


def _running(state_dir: Path) -> _Recorded | None:
    """The recorded stack if all of it still runs. A half-dead one is left exactly as it is:
    only `dev down` stops parts of a stack (an operator may be debugging the rest)."""
    recorded = _read_state(state_dir)
    if recorded is None or _dead(recorded):
        return None
    return recorded


def running_stack(state_dir: Path | None = None) -> StackInfo | None:
    """The dev stack running from this state dir, None when none is recorded, StackDown when
    one is recorded but part of it is not running (for CLI verbs that want its env)."""
    state_dir = (state_dir or _settings().state_dir).resolve()
    recorded = _read_state(state_dir)
    if recorded is None:
        return None
    dead = _dead(recorded)
    if dead:
        raise StackDown(state_dir, dead)
    return recorded.info


def _port(address: str | None) -> int | None:
    """The port of host:port, a URL or a DSN (None when there is none)."""
    if not address:
        return None
    tail = address.rsplit("@", 1)[-1].split("://")[-1]
    host_port = tail.split("/", 1)[0]
    _, _, port = host_port.rpartition(":")
    return int(port) if port.isdigit() else None


def _restart_missing(state_dir: Path, recorded: _Recorded) -> list[str]:
    """Start again, on their recorded ports and data, only the parts that are not running.

    stack.json is written again as soon as each part has a process (and whatever happens): a
    part restarted before a later one fails stays recorded, so `dev down` stops it and the next
    `dev up` does not start it twice on a port it already holds.
    """
    info, logs = recorded.info, state_dir / "logs"
    child_env = {**os.environ, **info.env, "PYTHONUNBUFFERED": "1"}
    restarted: list[str] = []
    procs = list(recorded.procs)

    def record() -> None:
        recorded.procs = list(procs)
        recorded.supervisor = None  # whatever supervised it is gone: `dev down` stops it by pid
        _record(state_dir, info, procs, None)

    def track(index: int, part: Any) -> None:
        """Record a part that now has a process (before it is even ready: it is ours to stop)."""
        found = _proc_of(procs[index].name, part)
        if found is not None:
            procs[index] = found
        record()

    def spawned(index: int, part: ChildProcess, ready: Callable[[], bool], timeout: float) -> None:
        part.spawn()
        track(index, part)
        part.wait_ready(ready, timeout)

    try:
        for index, proc in enumerate(recorded.procs):
            if proc.alive():
                continue
            part: Any
            if proc.name == "postgres":
                part = PostgresCluster.start(
                    state_dir / "postgres", _port(info.postgres), log_file=logs / "postgres.log"
                )
            elif proc.name == "nats":
                part = NatsServer.start(
                    state_dir / "nats", _port(info.nats), log_file=logs / "nats.log"
                )
            elif proc.name == "temporal":
                part = TemporalDevServer.start(
                    state_dir / "temporal.db",
                    _port(info.temporal),
                    _port(info.ui),
                    log_file=logs / "temporal.log",
                )
            elif proc.name == "witness":
                port = _port(info.witness)
                ledger_key = info.env.get("GOLDEN_LEDGER_KEY_FILE")
                if port is None or not ledger_key:
                    raise ServerError("witness", "stack.json records no witness URL or ledger key")
                if port_in_use(HOST, port):
                    raise ServerError("witness", f"port {HOST}:{port} is in use")
                part, _ = _witness_process(
                    state_dir, port, info.settings().ledger_origin, Path(ledger_key), restart=True
                )
                spawned(index, part, partial(port_in_use, HOST, port), WITNESS_READY_TIMEOUT_S)
            elif proc.name == "worker":
                part = ChildProcess("worker", WORKER_CMD, logs / "worker.log", child_env, REPO_ROOT)
                part.spawn()
            elif proc.name == "api":
                # A TLS API (GOLDEN_TLS_* recorded in the stack's env) is checked over TLS.
                credentials = _api_health_credentials(info.settings())
                part = ChildProcess("api", API_CMD, logs / "api.log", child_env, REPO_ROOT)
                serving = partial(_grpc_serving, info.grpc, credentials)
                spawned(index, part, serving, API_READY_TIMEOUT_S)
            else:
                raise ServerError(proc.name, "cannot restart an unknown part of the stack")
            track(index, part)
            stack = _Stack(state_dir)
            stack.add(proc.name, part)
            stack.detach()
            restarted.append(proc.name)
    finally:
        record()
    return restarted


@dataclass(frozen=True)
class StackStatus:
    """`dev status`: each recorded part, alive or not (no parts: no stack is recorded)."""

    state_dir: Path
    parts: list[dict[str, Any]]
    info: StackInfo | None

    @property
    def all_running(self) -> bool:
        """A stack is recorded and every part of it runs."""
        return bool(self.parts) and all(p["alive"] for p in self.parts)


def stack_status() -> StackStatus:
    """Each recorded part of the dev stack of this state dir, alive or not (touches nothing)."""
    state_dir = _settings().state_dir.resolve()
    recorded = _read_state(state_dir)
    if recorded is None:
        return StackStatus(state_dir, [], None)
    parts = [{"name": p.name, "pid": p.pid, "alive": p.alive()} for p in recorded.procs]
    if recorded.supervisor is not None:
        sup = recorded.supervisor
        parts.append({"name": "supervisor", "pid": sup.pid, "alive": sup.alive()})
    return StackStatus(state_dir, parts, recorded.info)


# --------------------------------------------------------------------------- bring-up


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


async def _prepare_stream(url: str, settings: Settings) -> None:
    """Create or update the JetStream stream (its config lives in service.store.outbox)."""
    from service.store.nats_client import connect_nats
    from service.store.outbox import ensure_stream

    nc = await connect_nats(
        settings.model_copy(update={"nats_url": url}),
        max_reconnect_attempts=0,
        allow_reconnect=False,
    )
    try:
        await ensure_stream(nc.jetstream(), settings)
    finally:
        await nc.close()


async def _temporal_client(address: str, namespace: str) -> Any:
    from service.sagas.client import connect_client

    return await connect_client(
        _settings().model_copy(
            update={"temporal_address": address, "temporal_namespace": namespace}
        )
    )


async def _prepare_temporal(address: str, namespace: str) -> None:
    """Register any missing search attribute (a dev server got them on its command line)."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    client = await _temporal_client(address, namespace)
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{kind.upper()}")
        for name, kind in SEARCH_ATTRIBUTES.items()
        if name not in listed.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )


async def _poller_identities(address: str, namespace: str, task_queue: str) -> set[str]:
    """Identities of the workers recently polling the task queue for workflow tasks."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    client = await _temporal_client(address, namespace)
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return {poller.identity for poller in described.pollers}


def _grpc_serving(address: str, credentials: Any = None) -> bool:
    """gRPC health check of the API (a server without the health service counts once it answers)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = (
        grpc.secure_channel(address, credentials)
        if credentials is not None
        else grpc.insecure_channel(address)
    )
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNIMPLEMENTED
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


#: Variables every process of the stack gets and `dev up` records: the API's TLS files and the
#: OpenTelemetry settings (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, ...).
PASSED_THROUGH_PREFIXES = ("GOLDEN_TLS_", "OTEL_")


def _passed_through(environ: Mapping[str, str]) -> dict[str, str]:
    """The TLS and OpenTelemetry variables of this environment, for the stack's processes."""
    return {k: v for k, v in environ.items() if k.startswith(PASSED_THROUGH_PREFIXES) and v}


def _api_health_credentials(settings: Settings) -> Any:
    """Channel credentials to health-check a TLS API (None: it serves plaintext).

    The CA is GOLDEN_TLS_CA_FILE, else the server certificate itself (a self-signed one); under
    mutual TLS the check presents GOLDEN_TLS_CLIENT_CERT_FILE/KEY, as the CLI will.
    """
    from service.api.tls import TlsConfigError, channel_credentials, server_tls_files

    try:
        files = server_tls_files(
            settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
        )
        if files is None:
            return None
        if files.mutual and settings.tls_client_cert_file is None:
            raise TlsConfigError(
                "mutual TLS: set GOLDEN_TLS_CLIENT_CERT_FILE and GOLDEN_TLS_CLIENT_KEY_FILE too "
                "(dev up health-checks the API, and the CLI needs them)"
            )
        return channel_credentials(
            settings.tls_ca_file or files.cert_file,
            settings.tls_client_cert_file,
            settings.tls_client_key_file,
        )
    except TlsConfigError as exc:
        raise ServerError("api", str(exc)) from exc


def _parse_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    try:
        return host or HOST, int(port)
    except ValueError as exc:
        raise ServerError("api", f"GOLDEN_GRPC_ADDR={addr!r} is not host:port") from exc


def _private_file(path: Path) -> Path:
    return path if path.is_absolute() else Path.cwd() / path


def _ensure_token(path: Path) -> str:
    """The first token of the API token file, creating the file (0600) with a fresh one."""
    existing = read_tokens(path)
    if existing:
        return existing[0]
    token = secrets.token_urlsafe(32)
    _write_private(path, token + "\n")
    return token


def _timed(progress: bool, what: str, start: Callable[[], str]) -> str:
    began = time.monotonic()
    where = start()
    _say(progress, f"  {what:<9} {where}  ({time.monotonic() - began:.1f} s)")
    return where


def _bring_up(settings: Settings, state_dir: Path, progress: bool) -> _Stack:
    """Start (or adopt) every part; on any failure stop what was started and re-raise."""
    stack = _Stack(state_dir)
    explicit = settings.model_fields_set
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        worker_script = REPO_ROOT / "worker.py"
        if WORKER_CMD[1:] == ["worker.py"] and not worker_script.exists():
            raise ServerError("worker", f"{worker_script} not found")
        if API_CMD[1:] == ["-m", "service.api.server"] and (
            importlib.util.find_spec("service.api.server") is None
        ):
            raise ServerError("api", "module service.api.server not found")
        # The API's addresses: the user's (checked now, before anything starts), else picked
        # when the API starts (again, should another process take a picked port first).
        grpc_given = settings.grpc_addr if "grpc_addr" in explicit else None
        if grpc_given and port_in_use(*_parse_addr(grpc_given)):
            raise ServerError("api", f"port {grpc_given} is in use (GOLDEN_GRPC_ADDR)")
        http_given = settings.http_addr if "http_addr" in explicit else None
        if http_given and port_in_use(*_parse_addr(http_given)):
            raise ServerError("api", f"port {http_given} is in use (GOLDEN_HTTP_ADDR)")
        tiles_dir = (
            settings.tiles_dir
            if "tiles_dir" in explicit and settings.tiles_dir
            else state_dir / "tiles"
        )

        def postgres() -> str:
            if "pg_dsn" in explicit:
                return settings.pg_dsn
            cluster = PostgresCluster.start(state_dir / "postgres", log_file=logs / "postgres.log")
            stack.add("postgres", cluster)
            return cluster.dsn

        dsn = _timed(progress, "postgres", postgres)
        try:
            run_async(lambda: migrate(dsn))
        except Exception as exc:
            raise ServerError(
                "postgres", f"cannot prepare the database at {redact_dsn(dsn)}: {exc}"
            ) from exc

        def nats_server() -> str:
            if "nats_url" in explicit:
                return settings.nats_url
            server = NatsServer.start(state_dir / "nats", log_file=logs / "nats.log")
            stack.add("nats", server)
            return server.url

        nats_url = _timed(progress, "nats", nats_server)
        try:
            run_async(lambda: _prepare_stream(nats_url, settings))
        except Exception as exc:
            raise ServerError(
                "nats", f"cannot create stream {settings.stream_name}: {exc}"
            ) from exc

        ui: list[str | None] = [None]

        def temporal() -> str:
            if "temporal_address" in explicit:
                return settings.temporal_address
            server = TemporalDevServer.start(
                state_dir / "temporal.db", log_file=logs / "temporal.log"
            )
            stack.add("temporal", server)
            ui[0] = server.ui_url
            return server.address

        address = _timed(progress, "temporal", temporal)
        namespace, task_queue = settings.temporal_namespace, settings.task_queue
        try:
            run_async(lambda: _prepare_temporal(address, namespace))
            pollers_before = run_async(lambda: _poller_identities(address, namespace, task_queue))
        except Exception as exc:
            raise ServerError("temporal", f"cannot use {address}/{namespace}: {exc}") from exc

        keys = state_dir / "keys"
        signing = _private_file(
            settings.signing_key_file if "signing_key_file" in explicit else keys / "issuer.key"
        )
        ledger = _private_file(
            settings.ledger_key_file if "ledger_key_file" in explicit else keys / "ledger.key"
        )
        tokens = _private_file(
            settings.api_tokens_file if "api_tokens_file" in explicit else state_dir / "api-tokens"
        )
        try:
            ensure_key_file(signing)
            ensure_key_file(ledger)
            token = _ensure_token(tokens)
        except Exception as exc:
            raise ServerError("keys", str(exc)) from exc

        witness_url, witnesses = None, settings.witnesses
        if "witnesses" not in explicit:
            witness_url, witnesses = with_fresh_ports(
                lambda: _start_witness(stack, state_dir, settings, ledger, progress)
            )
        env = {
            "GOLDEN_WITNESSES": witnesses,
            "GOLDEN_WITNESS_QUORUM": settings.witness_quorum,
            "GOLDEN_PG_DSN": dsn,
            "GOLDEN_NATS_URL": nats_url,
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": namespace,
            "GOLDEN_TASK_QUEUE": task_queue,
            "GOLDEN_SIGNING_KEY_FILE": str(signing),
            "GOLDEN_LEDGER_KEY_FILE": str(ledger),
            "GOLDEN_API_TOKENS_FILE": str(tokens),
            "GOLDEN_TILES_DIR": str(tiles_dir),
            "GOLDEN_STATE_DIR": str(state_dir),
            "GOLDEN_STREAM": settings.stream_name,
            "GOLDEN_SUBJECT_PREFIX": settings.subject_prefix,
        }
        env.update(_passed_through(os.environ))
        health_credentials = _api_health_credentials(settings)
        child_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}

        began = time.monotonic()
        worker = ChildProcess("worker", WORKER_CMD, logs / "worker.log", child_env, REPO_ROOT)
        worker.spawn()
        stack.add("worker", worker)

        def api_serving() -> None:
            env["GOLDEN_GRPC_ADDR"] = grpc_given or f"{HOST}:{free_port()}"
            env["GOLDEN_HTTP_ADDR"] = http_given or f"{HOST}:{free_port()}"
            stack.start(
                ChildProcess("api", API_CMD, logs / "api.log", {**child_env, **env}, REPO_ROOT),
                lambda: _grpc_serving(env["GOLDEN_GRPC_ADDR"], health_credentials),
                API_READY_TIMEOUT_S,
            )

        def worker_polling() -> bool:
            now = run_async(lambda: _poller_identities(address, namespace, task_queue))
            return bool(now - pollers_before)

        # The worker imports and validates every workflow while the API starts.
        with_fresh_ports(api_serving)
        grpc_addr = env["GOLDEN_GRPC_ADDR"]
        _say(progress, f"  {'grpc api':<9} {grpc_addr}  ({time.monotonic() - began:.1f} s)")
        worker.wait_ready(worker_polling, WORKER_READY_TIMEOUT_S)
        _say(
            progress, f"  {'worker':<9} task queue {task_queue}  ({time.monotonic() - began:.1f} s)"
        )

        stack.info = StackInfo(
            temporal=address,
            ui=ui[0],
            postgres=dsn,
            nats=nats_url,
            grpc=grpc_addr,
            namespace=namespace,
            task_queue=task_queue,
            token=token,
            tls=health_credentials is not None,
            tiles=f"http://{env['GOLDEN_HTTP_ADDR']}/",
            witness=witness_url,
            env=env,
        )
        return stack
    except BaseException:
        stack.stop()
        raise


def _start_witness(
    stack: _Stack, state_dir: Path, settings: Settings, ledger_key_file: Path, progress: bool
) -> tuple[str, str]:
    """Run one witness of the dev ledger; return its URL and the GOLDEN_WITNESSES value."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    proc, witness = _witness_process(state_dir, port, settings.ledger_origin, ledger_key_file)
    began = time.monotonic()
    stack.start(proc, lambda: port_in_use(HOST, port), WITNESS_READY_TIMEOUT_S)
    _say(progress, f"  {'witness':<9} {url}  ({time.monotonic() - began:.1f} s)")
    return url, format_witnesses([Witness(witness, url)])


def _witness_process(
    state_dir: Path, port: int, ledger_origin: str, ledger_key_file: Path, *, restart: bool = False
) -> tuple[ChildProcess, CosignatureVerifier]:
    """The dev stack's witness serving on `port` (not yet spawned), its key and state under
    state_dir/witness (kept across restarts), and the verifier of its cosignatures.

    On a restart both keys must already exist: the stack's GOLDEN_WITNESSES names the witness's
    public key and the log is signed with the ledger's, so a fresh key would make the API drop
    every cosignature (or the witness refuse every checkpoint) without a word.
    """
    base = state_dir / "witness"
    key_file = _private_file(base / "witness.key")
    try:
        if restart:
            key = _kept_key(
                key_file,
                "the stack's GOLDEN_WITNESSES names the key it held; restore it, or "
                "`golden-press dev down` and `dev up` to announce a new witness key",
            )
            ledger_key = _kept_key(
                ledger_key_file, "the stack's ledger is signed with it; restore it"
            )
        else:
            key = ensure_key_file(key_file)
            ledger_key = ensure_key_file(ledger_key_file)
    except Exception as exc:
        raise ServerError("witness", str(exc)) from exc
    ledger_vkey = NoteVerifier(ledger_origin, bytes(ledger_key.verify_key)).vkey
    cmd = [
        *WITNESS_CMD,
        *("--addr", f"{HOST}:{port}", "--name", WITNESS_NAME, "--key", str(key_file)),
        *("--state", str(base / "state.json"), "--log", ledger_vkey),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = ChildProcess("witness", cmd, state_dir / "logs" / "witness.log", env, REPO_ROOT)
    return proc, CosignatureVerifier(WITNESS_NAME, bytes(key.verify_key))


def _kept_key(path: Path, why: str) -> SigningKey:
    """A key the running stack already uses: loaded, never generated again."""
    if not path.exists():
        raise KeyFileError(f"key file {path} is missing and is not generated again: {why}")
    return load_key_file(path)


def _print_human(info: StackInfo, state_dir: Path) -> None:
    rows = [
        ("Temporal", f"{info.temporal}  (namespace {info.namespace})"),
        ("Web UI", info.ui or "(external Temporal: see its own UI)"),
        ("PostgreSQL", redact_dsn(info.postgres)),
        ("NATS", info.nats),
        ("gRPC API", f"{info.grpc}{'  (TLS)' if info.tls else ''}"),
        ("tiles", info.tiles or "(not served)"),
        ("task queue", info.task_queue),
        ("API token", info.token),
        ("witness", info.witness or "(GOLDEN_WITNESSES)"),
        ("logs", str(state_dir / "logs")),
    ]
    print("golden-press dev stack is up; Ctrl-C stops it.")
    for name, value in rows:
        print(f"  {name:<11} {value}")
    print("Point other shells at it with:")
    for name, value in info.env.items():
        shown = redact_dsn(value) if name == "GOLDEN_PG_DSN" else value
        print(f"  export {name}={shlex.quote(shown)}")
    sys.stdout.flush()


def _supervise(stack: _Stack) -> int:
    """Block until Ctrl-C/SIGTERM (exit 0) or until a part dies (exit 1); then stop everything."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    # SIGHUP too: closing the terminal must not leave the servers running.
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    code, reason = 0, None
    try:
        while not stop.wait(0.5):
            reason = stack.first_exit()
            if reason:
                code = 1
                break
    finally:
        print("stopping the dev stack ...", file=sys.stderr, flush=True)
        stack.stop()
        with contextlib.suppress(FileNotFoundError):
            (stack.state_dir / STACK_FILE).unlink()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if reason:
        print(f"error: DevStackFailed: {reason}", file=sys.stderr)
    return code


# --------------------------------------------------------------------------- entry points


#: What `up` calls once the stack serves, before a foreground stack is supervised: its addresses
#: and, when it found the stack partly down, the parts it restarted (else None).
Announce = Callable[[StackInfo, list[str] | None], None]


def _announce_plainly(detach: bool, state_dir: Path) -> Announce:
    """`dev up` without --json: detached, the one JSON line of the interface sheet (scripts read
    it); in the foreground, the addresses and exports for people."""

    def announce(info: StackInfo, restarted: list[str] | None) -> None:
        if detach or restarted is not None:
            print(info.json_line(), flush=True)
        else:
            _print_human(info, state_dir)

    return announce


def up(detach: bool, announce: Announce | None = None) -> int:
    """Start the stack (or find it running, or restart only its missing parts) and announce it;
    detached, return 0; in the foreground, supervise it until it stops (its exit code).

    Raises ServerError when it cannot start (everything started is stopped again).
    """
    settings = _settings()
    state_dir = settings.state_dir.resolve()
    announce = announce or _announce_plainly(detach, state_dir)
    with _locked(state_dir):
        partial = _read_state(state_dir)
        if partial is not None and _dead(partial):
            restarted = _restart_missing(state_dir, partial)
            what = ", ".join(restarted) or "nothing (only the supervisor had gone)"
            print(f"restarted {what}", file=sys.stderr, flush=True)
            if not detach:
                print("the stack runs detached: `golden-press dev down` stops it", file=sys.stderr)
            announce(partial.info, restarted)
            return 0
        recorded = _running(state_dir)
        if recorded is not None:
            if detach:
                announce(recorded.info, None)
                return 0
            raise ServerError(
                "dev stack",
                f"already running from {state_dir}; stop it with `golden-press dev down`",
            )
        if not detach:
            print(f"starting the dev stack in {state_dir} ...", file=sys.stderr, flush=True)
        stack = _bring_up(settings, state_dir, progress=not detach)
        assert stack.info is not None
        if detach:
            stack.save(supervisor=None)
            stack.detach()
            announce(stack.info, None)
            return 0
        stack.save(supervisor=os.getpid())
    announce(stack.info, None)
    return _supervise(stack)


def dev_up(detach: bool) -> int:
    """`golden-press dev up [--detach]` without --json (and `python -m service.devstack.stack`)."""
    try:
        return up(detach)
    except ServerError as exc:
        print(f"error: DevStackFailed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: Interrupted: {INTERRUPTED}", file=sys.stderr)
        return 130


#: What an interrupted bring-up left: nothing (every part started was stopped again).
INTERRUPTED = "interrupted; everything started was stopped"


@dataclass(frozen=True)
class Stopped:
    """What `dev down` did: whether a stack was recorded, and the parts it could not stop."""

    state_dir: Path
    was_running: bool
    failed: list[str]


def down() -> Stopped:
    """Stop what `dev up` started from this state dir; leave nothing."""
    state_dir = _settings().state_dir.resolve()
    with _locked(state_dir):
        recorded = _read_state(state_dir)
        if recorded is None:
            return Stopped(state_dir, False, [])
        failed = _stop_recorded(state_dir, recorded)
    return Stopped(state_dir, True, failed)


def dev_down() -> int:
    """`golden-press dev down` without --json (and `python -m service.devstack.stack down`)."""
    stopped = down()
    if stopped.failed:
        print(f"error: DevStackFailed: could not stop {', '.join(stopped.failed)}", file=sys.stderr)
        return 1
    if not stopped.was_running:
        print(f"no dev stack is running from {stopped.state_dir}")
    else:
        print(f"dev stack in {stopped.state_dir} stopped")
    return 0


def ensure_stack() -> StackInfo:
    """The running dev stack, started detached first when there is none (`golden-press demo`)."""
    settings = _settings()
    state_dir = settings.state_dir.resolve()
    with _locked(state_dir):
        partial = _read_state(state_dir)
        if partial is not None and _dead(partial):
            _restart_missing(state_dir, partial)
        recorded = _running(state_dir)
        if recorded is not None:
            return recorded.info
        print(f"starting the dev stack in {state_dir} ...", file=sys.stderr, flush=True)
        stack = _bring_up(settings, state_dir, progress=True)
        assert stack.info is not None
        stack.save(supervisor=None)
        stack.detach()
        return stack.info


def main(argv: list[str] | None = None) -> int:
    """`python -m service.devstack.stack up [--detach] | down` (= `golden-press dev ...`)."""
    parser = argparse.ArgumentParser(prog="python -m service.devstack.stack")
    verbs = parser.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up")
    up.add_argument("--detach", action="store_true")
    verbs.add_parser("down")
    args = parser.parse_args(argv)
    return dev_up(args.detach) if args.verb == "up" else dev_down()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the Temporal SDK may crash at interpreter exit (sdk-python#300)
