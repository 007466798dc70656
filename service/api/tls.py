"""TLS for the gRPC API: server credentials that follow rotated files, client channel credentials.

The server reads GOLDEN_TLS_CERT_FILE / GOLDEN_TLS_KEY_FILE (and GOLDEN_TLS_CLIENT_CA_FILE for
mutual TLS: a client certificate signed by that CA is then required). gRPC asks for the
certificate configuration at every new handshake; we answer with the files' contents whenever
their modification times change, so replacing the files (cert-manager, certbot, an operator's
`mv`) takes effect for new connections without a restart. Connections already open keep the
certificate they were opened with.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger("golden_press.tls")

#: How often a handshake may look at the files' mtimes (each handshake asks; stat is cheap).
RELOAD_CHECK_INTERVAL_S = 1.0


class TlsConfigError(ValueError):
    """A TLS setting is incomplete or a file cannot be read."""


@dataclass(frozen=True)
class ServerTlsFiles:
    """The server's certificate chain and key, and the CA that client certificates must chain to."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @property
    def mutual(self) -> bool:
        """True when client certificates are required."""
        return self.client_ca_file is not None

    def paths(self) -> tuple[Path, ...]:
        """Every file the configuration is read from."""
        return (
            self.cert_file,
            self.key_file,
            *([self.client_ca_file] if self.client_ca_file else []),
        )


def server_tls_files(
    cert_file: Path | None, key_file: Path | None, client_ca_file: Path | None
) -> ServerTlsFiles | None:
    """The server TLS files from settings; None for plaintext; an error for half a configuration."""
    if cert_file is None and key_file is None:
        if client_ca_file is not None:
            raise TlsConfigError(
                "GOLDEN_TLS_CLIENT_CA_FILE needs GOLDEN_TLS_CERT_FILE and GOLDEN_TLS_KEY_FILE"
            )
        return None
    if cert_file is None or key_file is None:
        raise TlsConfigError("set both GOLDEN_TLS_CERT_FILE and GOLDEN_TLS_KEY_FILE (or neither)")
    return ServerTlsFiles(cert_file, key_file, client_ca_file)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc


class ReloadingServerCredentials:
    """grpc dynamic server credentials whose configuration is re-read when the files change."""

    def __init__(self, files: ServerTlsFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._stamp = self._mtimes()
        self._checked = time.monotonic()
        self.reloads = 0
        initial = self._configuration()  # fails fast on unreadable files at start
        self.credentials = grpc.dynamic_ssl_server_credentials(
            initial, self._fetch, require_client_authentication=files.mutual
        )

    def _mtimes(self) -> tuple[int, ...]:
        try:
            return tuple(p.stat().st_mtime_ns for p in self._files.paths())
        except OSError:
            return ()

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        files = self._files
        return grpc.ssl_server_certificate_configuration(
            [(_read(files.key_file), _read(files.cert_file))],
            root_certificates=_read(files.client_ca_file) if files.client_ca_file else None,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC at each handshake: a new configuration if the files changed, else None."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked < RELOAD_CHECK_INTERVAL_S:
                return None
            self._checked = now
            stamp = self._mtimes()
            if not stamp or stamp == self._stamp:
                return None
            try:
                config = self._configuration()
            except (TlsConfigError, ValueError) as exc:
                # Half-written files during a rotation: keep serving the old certificate.
                log.warning("TLS files changed but cannot be loaded yet: %s", exc)
                return None
            self._stamp = stamp
            self.reloads += 1
        log.info("TLS certificate reloaded", extra={"cert_file": str(self._files.cert_file)})
        return config


def channel_credentials(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials | None:
    """Client credentials: None (plaintext) without a CA; a client certificate needs both files."""
    if (cert_file is None) != (key_file is None):
        raise TlsConfigError(
            "a client certificate needs both --cert-file and --key-file "
            "(GOLDEN_TLS_CLIENT_CERT_FILE, GOLDEN_TLS_CLIENT_KEY_FILE)"
        )
    if ca_file is None:
        if cert_file is not None:
            raise TlsConfigError("a client certificate needs --ca-file (GOLDEN_TLS_CA_FILE)")
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file),
        private_key=_read(key_file) if key_file else None,
        certificate_chain=_read(cert_file) if cert_file else None,
    )


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost (what a dev stack may serve in plaintext)."""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
