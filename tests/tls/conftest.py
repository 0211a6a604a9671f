"""A site CA made with cryptography, issuing server and client certificates, and TLS fronts started in the
test process in front of the shared Serve proxy (the front is the code under test; Serve is real)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class SiteCA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    pem_path: Path

    def issue(self, out: Path, cn: str, *, server: bool, days: int = 365) -> tuple[Path, Path]:
        """A leaf certificate and its 0600 key, PEM files under `out`."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, cn),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Site"),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        out.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = out / f"{cn}.crt", out / f"{cn}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path

    def client_context(self, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        """What a site application uses: trust the site CA; present `cert` when given."""
        ctx = ssl.create_default_context(cafile=str(self.pem_path))
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        return ctx


def make_ca(out: Path, name: str = "Test Site Root CA") -> SiteCA:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    pem = out / "ca.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return SiteCA(key, cert, pem)


@pytest.fixture(scope="session")
def site_ca(tmp_path_factory) -> SiteCA:
    return make_ca(tmp_path_factory.mktemp("site-ca"))


@contextmanager
def running_front(
    keys_dir: Path,
    upstream: int,
    cert: Path,
    key: Path,
    *,
    client_auth: str = "off",
    ca: Path | None = None,
    limits=None,
):
    """A TLS front on a free loopback port relaying to 127.0.0.1:upstream; yields its https URL. It checks
    for a rotated certificate every 0.2 s; `limits`: its FrontLimits (default the settings' defaults)."""
    from appliance.config import Settings
    from appliance.tls.front import Front, FrontLimits
    from appliance.tls.listen import Listen, TlsFiles
    from tests.integration.conftest import free_port

    port = free_port()
    listen = Listen("127.0.0.1", port, "127.0.0.1", upstream, TlsFiles(cert, key, ca, None))
    f = Front(
        listen,
        client_auth,
        keys_dir,
        reload_seconds=0.2,
        limits=limits or FrontLimits.from_settings(Settings(data_dir=keys_dir)),
    )
    f.start_in_thread()
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        f.stop()
