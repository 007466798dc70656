"""`GOLDEN_API_PROCESSES=N`: N API processes serving one port, each with its own snapshot.

Python runs one core per process, and a sold-out refusal or a verification costs only CPU, so
more processes use more cores. Every child binds GOLDEN_GRPC_ADDR with `grpc.so_reuseport`
(SO_REUSEPORT), and GOLDEN_HTTP_ADDR (the tiles) the same way: the kernel spreads new
connections over the children. Each child has its own
admission snapshot (LISTEN/NOTIFY and the periodic re-read keep each one current) and its own
in-flight gate; the cap is still decided only under the advisory lock, so N processes can never
issue more than the cap.

This supervisor forwards SIGTERM/SIGINT to the children, restarts a child that dies (after a
short pause), and its children die with it (PR_SET_PDEATHSIG), so a `dev down` or a SIGKILL of
the supervisor never leaves a process holding the port. Past one machine: run replicas of the
API behind a gRPC-aware load balancer (Envoy, a Kubernetes Service with client-side round robin);
each replica keeps its own snapshot and PostgreSQL only sees requests that can still win.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from golden_press.settings import Settings

log = logging.getLogger("golden_press.api")

#: Set in a child's environment: its index (0..N-1); a child never supervises.
CHILD_ENV = "GOLDEN_API_CHILD"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when the supervisor dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _fixed_address(addr: str) -> str:
    """The address with a concrete port: children must share one, so `:0` is resolved here."""
    host, _, port = addr.rpartition(":")
    if port not in ("", "0"):
        return addr
    with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as s:
        s.bind((host.strip("[]") or "0.0.0.0", 0))
        return f"{host}:{s.getsockname()[1]}"


def child_env(settings: Settings, index: int, address: str) -> dict[str, str]:
    """A child's environment: the shared address, its index, its own metrics port."""
    env = dict(os.environ)
    env[CHILD_ENV] = str(index)
    env["GOLDEN_GRPC_ADDR"] = address
    if settings.metrics_port > 0:  # one Prometheus endpoint per child: port, port+1, ...
        env["GOLDEN_METRICS_PORT"] = str(settings.metrics_port + index)
    return env


def supervise(settings: Settings, processes: int) -> int:
    """Run `processes` API children on one port until SIGTERM/SIGINT; returns the exit code."""
    address = _fixed_address(settings.grpc_addr)
    argv = [sys.executable, "-m", "service.api.server"]
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def spawn(index: int) -> None:
        children[index] = subprocess.Popen(
            argv, env=child_env(settings, index, address), preexec_fn=_die_with_parent
        )

    for index in range(processes):
        spawn(index)
    log.info("API supervisor started", extra={"processes": processes, "address": address})
    while not stopping:
        time.sleep(0.2)
        for index, proc in list(children.items()):
            if proc.poll() is not None and not stopping:
                log.error("API process %d exited %s; restarting it", index, proc.returncode)
                time.sleep(0.5)
                spawn(index)
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in children.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return 0


__all__ = ["CHILD_ENV", "child_env", "supervise"]
