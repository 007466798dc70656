"""Settings from the environment (interface-sheet names); never read by workflows."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from golden_press.cosignature import Witness, WitnessPolicy, parse_witnesses

DEFAULT_STATE_DIR = Path(".golden")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class Settings(BaseSettings):
    """Everything a worker, the API or the CLI needs to find its peers and keys."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    pg_dsn: str = Field("postgresql://postgres@127.0.0.1:5432/golden", alias="GOLDEN_PG_DSN")
    nats_url: str = Field("nats://127.0.0.1:4222", alias="GOLDEN_NATS_URL")
    temporal_address: str = Field("127.0.0.1:7233", alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field("default", alias="TEMPORAL_NAMESPACE")
    task_queue: str = Field("golden-press", alias="GOLDEN_TASK_QUEUE")
    signing_key_file: Path = Field(
        DEFAULT_STATE_DIR / "keys" / "issuer.key", alias="GOLDEN_SIGNING_KEY_FILE"
    )
    ledger_key_file: Path = Field(
        DEFAULT_STATE_DIR / "keys" / "ledger.key", alias="GOLDEN_LEDGER_KEY_FILE"
    )
    ledger_origin: str = Field("golden-press.local/ledger", alias="GOLDEN_LEDGER_ORIGIN")
    grpc_addr: str = Field("127.0.0.1:50051", alias="GOLDEN_GRPC_ADDR")
    api_tokens_file: Path = Field(DEFAULT_STATE_DIR / "api-tokens", alias="GOLDEN_API_TOKENS_FILE")
    state_dir: Path = Field(DEFAULT_STATE_DIR, alias="GOLDEN_STATE_DIR")
    #: NATS stream and subject prefix; tests use a fresh pair per run.
    stream_name: str = Field("CHOCO_MONETIZATION", alias="GOLDEN_STREAM")
    #: Replicas of the event stream (3 on a 3-node JetStream cluster). 0 (unset): a new stream
    #: gets 1 and an existing stream keeps what its operator gave it; 1-5: enforced at every start.
    stream_replicas: int = Field(0, alias="GOLDEN_STREAM_REPLICAS", ge=0, le=5)
    subject_prefix: str = Field("choco.events.monetization", alias="GOLDEN_SUBJECT_PREFIX")
    #: Anti-gaming: attempts per user per window before `RateLimited`.
    rate_limit_attempts: int = Field(5, alias="GOLDEN_RATE_LIMIT_ATTEMPTS")
    rate_limit_window_s: float = Field(60.0, alias="GOLDEN_RATE_LIMIT_WINDOW_S")
    #: How long a `reserved` slot may wait before the reconciler may void it.
    reservation_lease_s: float = Field(300.0, alias="GOLDEN_RESERVATION_LEASE_S")
    metrics_port: int = Field(0, alias="GOLDEN_METRICS_PORT")
    #: How often a worker with a metrics port re-reads the deployment gauges (outbox, cap, ...).
    gauges_interval_s: float = Field(15.0, alias="GOLDEN_GAUGES_INTERVAL_S")
    #: NATS TLS (a CA, a client certificate when the server verifies clients) and credentials.
    nats_tls_ca_file: Path | None = Field(None, alias="GOLDEN_NATS_TLS_CA_FILE")
    nats_tls_cert_file: Path | None = Field(None, alias="GOLDEN_NATS_TLS_CERT_FILE")
    nats_tls_key_file: Path | None = Field(None, alias="GOLDEN_NATS_TLS_KEY_FILE")
    nats_creds_file: Path | None = Field(None, alias="GOLDEN_NATS_CREDS_FILE")
    nats_nkey_seed_file: Path | None = Field(None, alias="GOLDEN_NATS_NKEY_SEED_FILE")
    #: gRPC API server TLS (both or neither); a client CA makes it mutual TLS.
    tls_cert_file: Path | None = Field(None, alias="GOLDEN_TLS_CERT_FILE")
    tls_key_file: Path | None = Field(None, alias="GOLDEN_TLS_KEY_FILE")
    tls_client_ca_file: Path | None = Field(None, alias="GOLDEN_TLS_CLIENT_CA_FILE")
    #: gRPC API clients (CLI, dev stack health check): the CA to trust, and a client certificate.
    tls_ca_file: Path | None = Field(None, alias="GOLDEN_TLS_CA_FILE")
    tls_client_cert_file: Path | None = Field(None, alias="GOLDEN_TLS_CLIENT_CERT_FILE")
    tls_client_key_file: Path | None = Field(None, alias="GOLDEN_TLS_CLIENT_KEY_FILE")
    #: API processes sharing GOLDEN_GRPC_ADDR (SO_REUSEPORT), each with its own admission
    #: snapshot: refusals and verifications cost only CPU, so more processes use more cores.
    api_processes: int = Field(1, ge=1, le=64, alias="GOLDEN_API_PROCESSES")
    #: Scheduling niceness of the API processes (0: unchanged). Where API, worker, Temporal and
    #: PostgreSQL share cores, a positive value lets the winners' sagas run before a herd's
    #: refusals (docs/operations.md); 0 by default, as a nice API starts slowly on a busy box.
    api_nice: int = Field(0, ge=0, le=19, alias="GOLDEN_API_NICE")
    #: Scheduling niceness of the worker (0: unchanged). Negative runs the sagas' steps before
    #: anything else on shared cores (a herd's refusals, the client): the winners first. The
    #: worker needs little CPU, so what it takes first costs the API little. Below 0 needs
    #: CAP_SYS_NICE; without it the worker logs a warning and runs unchanged.
    worker_nice: int = Field(0, ge=-20, le=19, alias="GOLDEN_WORKER_NICE")
    #: Log level of the API and the worker (DEBUG, INFO, WARNING, ERROR; any case). At DEBUG
    #: the API writes one `rpc` line per call, reads and business rejections included; at INFO
    #: (the default) only successful writes get one: a herd's refusals are counted by the
    #: metrics, and a line each cost ~7% of the API's CPU (docs/benchmarks.md).
    log_level: LogLevel = Field("INFO", alias="GOLDEN_LOG_LEVEL")
    #: asyncpg's RESET round trip (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) every time
    #: the API or the worker hands a connection back to its pool. Off by default: nothing here
    #: leaves session state behind (service.store.db.skip_pool_reset says why), and the trip is
    #: ~5% of an API request. On: for code added later that sets session state.
    pg_pool_reset: bool = Field(False, alias="GOLDEN_PG_POOL_RESET")
    #: synchronous_commit for the API's sessions, whose only writes are rate-limit counters. Off
    #: by default: a database crash may lose the last few counters (a user gets a few more
    #: attempts), and a herd's refusals do not each wait for a WAL flush. Tickets, ledger and
    #: outbox are written by the worker, always durably, whatever this says.
    rate_limit_durable: bool = Field(False, alias="GOLDEN_RATE_LIMIT_DURABLE")
    #: A sole API process (GOLDEN_API_PROCESSES=1) whose in-flight gate is full refuses a new
    #: request from memory, before its admission statement (issue 15). On by default; off: the
    #: statement (a rate-limit write) runs first, as before, and the gate refuses after it.
    admission_memory_gate: bool = Field(True, alias="GOLDEN_ADMISSION_MEMORY_GATE")
    #: Where the worker publishes the ledger as C2SP tlog-tiles files (unset: not published).
    tiles_dir: Path | None = Field(None, alias="GOLDEN_TILES_DIR")
    #: host:port where the API serves tiles_dir over HTTP (unset: not served).
    http_addr: str | None = Field(None, alias="GOLDEN_HTTP_ADDR")
    #: Witnesses the log submits checkpoints to: `<vkey> <url>` entries separated by commas or
    #: newlines (golden_press.cosignature.parse_witnesses). Empty: no witnesses.
    witnesses: str = Field("", alias="GOLDEN_WITNESSES")
    #: How many of them must cosign a checkpoint before verification and redemption trust it:
    #: an integer, or empty / `all` for every configured witness.
    witness_quorum: str = Field("", alias="GOLDEN_WITNESS_QUORUM")

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, value: object) -> object:
        """GOLDEN_LOG_LEVEL=debug means DEBUG."""
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _files_follow_state_dir(self) -> Settings:
        """Key and token files default to the state dir, wherever GOLDEN_STATE_DIR points."""
        defaults = {
            "signing_key_file": Path("keys") / "issuer.key",
            "ledger_key_file": Path("keys") / "ledger.key",
            "api_tokens_file": Path("api-tokens"),
        }
        for name, relative in defaults.items():
            if name not in self.model_fields_set:
                object.__setattr__(self, name, self.state_dir / relative)
        return self

    @model_validator(mode="after")
    def _witnesses_parse(self) -> Settings:
        """A malformed GOLDEN_WITNESSES or GOLDEN_WITNESS_QUORUM stops the process at start."""
        self.witness_policy()
        return self

    def environment(self) -> dict[str, str]:
        """The variables (GOLDEN_*, TEMPORAL_ADDRESS/NAMESPACE) that give a child process these
        settings, unset optional files left unset: what tests and benches start processes with."""
        env = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if info.alias and value is not None:
                env[info.alias] = str(value)
        return env

    def witness_list(self) -> list[Witness]:
        """The configured witnesses (ValueError names a malformed GOLDEN_WITNESSES)."""
        return parse_witnesses(self.witnesses)

    def witness_policy(self) -> WitnessPolicy:
        """Which checkpoints verification and redemption trust (witnesses and their quorum)."""
        return WitnessPolicy.from_settings(self.witnesses, self.witness_quorum)

    @property
    def nats_servers(self) -> list[str]:
        """GOLDEN_NATS_URL split on commas: every node of a cluster as a seed."""
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @property
    def issued_subject(self) -> str:
        """Subject of GoldenTicketIssued."""
        return f"{self.subject_prefix}.golden_ticket.issued"

    @property
    def redeemed_subject(self) -> str:
        """Subject of GoldenTicketRedeemed."""
        return f"{self.subject_prefix}.golden_ticket.redeemed"

    @property
    def revoked_subject(self) -> str:
        """Subject of GoldenTicketRevoked (admin, fraud)."""
        return f"{self.subject_prefix}.golden_ticket.revoked"


def settings_problem(exc: ValidationError) -> str:
    """Invalid settings as one line naming the variable and what is wrong with it, never its
    value (pydantic's own text quotes the value, and the variable may hold a secret)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "settings"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"
