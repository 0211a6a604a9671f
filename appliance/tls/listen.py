"""How the API listens, decided once at start: plain HTTP, or TLS through the front; and the refusal of
plain HTTP off loopback.

A non-loopback address without a certificate is refused with one line (an operator who rebinds the API to
the site network must not get an unencrypted service by accident); `allow_plain_http` makes it possible
on purpose, with a warning in the logs.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

import structlog

from appliance.config import Settings
from appliance.errors import ApplianceError
from appliance.files import read_small
from appliance.tls import certs

log = structlog.get_logger()


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None
    password: bytes | None


@dataclass(frozen=True)
class Listen:
    """Where clients connect (`host:port`), and where Serve's HTTP proxy listens: the same address for
    plain HTTP, 127.0.0.1:internal_port behind the TLS front."""

    host: str
    port: int
    serve_host: str
    serve_port: int
    tls: TlsFiles | None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


def tls_dir(settings: Settings) -> Path:
    return settings.keys_dir / "tls"


def is_loopback(host: str) -> bool:
    """True only when every address `host` names is a loopback one ("localhost" included, 0.0.0.0 not)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def key_password(settings: Settings) -> bytes | None:
    if settings.tls_key_password is not None:
        return settings.tls_key_password.get_secret_value().encode()
    if settings.tls_key_password_file is None:
        return None
    try:
        return read_small(settings.tls_key_password_file, 4096).rstrip(b"\r\n")
    except OSError as exc:
        raise ApplianceError(
            f"cannot read tls_key_password_file {settings.tls_key_password_file}: {exc.strerror}"
        ) from exc


def tls_files(settings: Settings) -> TlsFiles | None:
    """The configured (or installed) certificate, key and client CA; None when there is no certificate."""
    cert = settings.tls_cert or (tls_dir(settings) / certs.CERT_NAME)
    if settings.tls_cert is None and not cert.exists():
        if settings.tls_client_auth != "off" or settings.tls_roles_require_client_cert:
            raise ApplianceError(
                "client certificates (tls_client_auth, tls_roles_require_client_cert) need TLS: "
                "install a server certificate first (appliance tls install)"
            )
        return None
    if not cert.exists():
        raise ApplianceError(f"tls_cert {cert} does not exist")
    key = settings.tls_key or cert.with_name(certs.KEY_NAME)
    ca = settings.tls_client_ca or tls_dir(settings) / certs.CA_NAME
    if settings.tls_client_auth == "off":
        client_ca = None
    elif ca.exists():
        client_ca = ca
    else:
        raise ApplianceError(
            f"tls_client_auth is {settings.tls_client_auth} but the client CA bundle {ca} does "
            f"not exist (set tls_client_ca, or appliance tls install --ca)"
        )
    return TlsFiles(cert, key, client_ca, key_password(settings))


def plan(settings: Settings) -> Listen:
    """The listen plan, or an ApplianceError naming why the appliance must not start this way."""
    files = tls_files(settings)
    if files is None:
        if not is_loopback(settings.host):
            if not settings.allow_plain_http:
                raise ApplianceError(
                    f"refusing plain HTTP on the non-loopback address {settings.host}: install a "
                    f"certificate (appliance tls install, or tls self-signed), or set "
                    f"allow_plain_http to accept unencrypted traffic"
                )
            log.warning(
                "serving plain HTTP off loopback: API keys and content cross the network in clear",
                host=settings.host,
                port=settings.port,
            )
        return Listen(settings.host, settings.port, settings.host, settings.port, None)
    info = certs.check_pair(files.cert, files.key, files.password)
    left = info.days_left()
    if left < settings.tls_expiry_warning_days:
        log.warning(
            "the TLS certificate expires soon",
            days_left=left,
            not_after=info.not_after.isoformat(),
            subject=info.subject,
        )
    internal = settings.tls_internal_port or settings.port + 1
    if internal == settings.port:
        raise ApplianceError("tls_internal_port must differ from port")
    return Listen(settings.host, settings.port, "127.0.0.1", internal, files)
