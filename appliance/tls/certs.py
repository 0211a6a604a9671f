"""Server certificates: a self-signed one for this host, a site CA's one checked and installed, and what
either says (subject, names, SHA-256 fingerprint, expiry).

ECDSA P-256 for the keys we make: its handshakes cost a fraction of RSA-2048's CPU and every TLS 1.2+
client supports it. The installed files live in `keys_dir/tls/` (server.crt, server.key 0600,
client-ca.pem) so that `appliance serve` finds them without more settings.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.errors import ApplianceError
from appliance.files import atomic_write, read_small

CERT_NAME, KEY_NAME, CA_NAME = "server.crt", "server.key", "client-ca.pem"
_MAX_PEM = 1024 * 1024


class CertificateError(ApplianceError):
    """A certificate or key that is missing, malformed, mismatched or too open."""


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    names: tuple[str, ...]  # DNS names and IP addresses of the subjectAltName
    fingerprint: str  # SHA-256 of the DER, colon-separated hex: what clients pin
    not_before: dt.datetime
    not_after: dt.datetime

    def days_left(self, now: dt.datetime | None = None) -> int:
        return (self.not_after - (now or dt.datetime.now(dt.UTC))).days


def host_names() -> tuple[list[str], list[str]]:
    """This host's DNS names and addresses as the resolver knows them offline (hosts file), plus loopback."""
    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    addresses = {"127.0.0.1", "::1"}
    for name in list(names):
        try:
            addresses.update(str(info[4][0]) for info in socket.getaddrinfo(name, None))
        except OSError:
            continue
    return sorted(n for n in names if n), sorted(a.split("%")[0] for a in addresses)


def self_signed(names: list[str], addresses: list[str], days: int = 825) -> tuple[bytes, bytes]:
    """A self-signed server certificate and its unencrypted PKCS#8 key, both PEM. 825 days is the longest
    validity Apple and browsers accept for a server certificate."""
    key = new_key()
    subject = name_of((names or addresses or ["appliance"])[0])
    cert = issue(subject, key.public_key(), subject, key, days, names=names, addresses=addresses)
    return pem(cert), pem_key(key)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def name_of(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gpt-oss appliance"),
        ]
    )


def issue(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    days: int,
    *,
    names: Sequence[str] = (),
    addresses: Sequence[str] = (),
    ca: bool = False,
    usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.SERVER_AUTH,),
) -> x509.Certificate:
    """One certificate: a CA's (`ca`, no names) or a leaf's with its DNS names and IP addresses."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        try:
            sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        except ValueError as exc:
            raise CertificateError(f"not an IP address: {exc}") from exc
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False).add_extension(
            x509.ExtendedKeyUsage(list(usages)), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def read_pem(path: Path, what: str) -> bytes:
    try:
        return read_small(path, _MAX_PEM)
    except OSError as exc:
        raise CertificateError(f"cannot read {what} {path}: {exc.strerror}") from exc


def load_certs(path: Path) -> list[x509.Certificate]:
    """The certificates of a PEM file, leaf first."""
    return parse_certs(read_pem(path, "certificate"), str(path))


def parse_certs(pem: bytes, where: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateError(f"{where} holds no PEM certificate") from exc


def describe(cert: x509.Certificate) -> CertInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName)) + tuple(
            str(a) for a in san.get_values_for_type(x509.IPAddress)
        )
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(
        cert.subject.rfc4514_string(),
        cert.issuer.rfc4514_string(),
        names,
        fingerprint(cert.public_bytes(serialization.Encoding.DER)),
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
    )


def fingerprint(der: bytes) -> str:
    import hashlib

    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def check_key_mode(path: Path) -> None:
    """A private key more open than 0600 is refused: anyone who reads it can impersonate the API. One
    exception: group read when the group is this process's own (Kubernetes mounts Secrets 0440 with the
    pod's fsGroup, which is the appliance's own group), so still nobody else."""
    try:
        st = path.stat()
    except OSError as exc:
        raise CertificateError(f"cannot read the TLS key {path}: {exc.strerror}") from exc
    mode = st.st_mode
    if stat.S_IMODE(mode) & (0o037 if st.st_gid == os.getgid() else 0o077):
        raise CertificateError(
            f"the TLS key {path} has mode {stat.S_IMODE(mode):04o}; it must be 0600 or stricter (chmod 600 {path})"
        )


def _parse_key(pem: bytes, password: bytes | None, path: Path) -> ec.EllipticCurvePrivateKey | object:
    try:
        return serialization.load_pem_private_key(pem, password)
    except TypeError as exc:
        raise CertificateError(
            f"the TLS key {path} is encrypted: set tls_key_password_file or APPLIANCE_TLS_KEY_PASSWORD"
            if password is None
            else f"the TLS key {path} is not encrypted but a password was given"
        ) from exc
    except ValueError as exc:
        raise CertificateError(f"cannot load the TLS key {path} (wrong password or not a PEM key)") from exc


def read_pair(cert_path: Path, key_path: Path, password: bytes | None) -> tuple[bytes, bytes, CertInfo]:
    """Both files, each read once, checked to match: the certificate's public key must be the key's (a mismatched
    pair fails every handshake). Returns the very bytes checked, for installing."""
    cert_pem = read_pem(cert_path, "certificate")
    check_key_mode(key_path)
    key_pem = read_pem(key_path, "the TLS key")
    leaf = parse_certs(cert_pem, str(cert_path))[0]
    pub = _parse_key(key_pem, password, key_path).public_key()  # type: ignore[attr-defined]
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*der) != pub.public_bytes(*der):
        raise CertificateError(f"the key {key_path} does not belong to the certificate {cert_path}")
    return cert_pem, key_pem, describe(leaf)


def check_pair(cert_path: Path, key_path: Path, password: bytes | None) -> CertInfo:
    return read_pair(cert_path, key_path, password)[2]


def install(tls_dir: Path, cert_pem: bytes, key_pem: bytes, ca_pem: bytes | None = None) -> None:
    """Write the pair (key first, 0600) and the client CA bundle, each whole or not at all. A running front
    picks the new pair up at its next reload check (rotation without restart)."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    with atomic_write(tls_dir / KEY_NAME, binary=True, mode=0o600) as f:
        f.write(key_pem)
    with atomic_write(tls_dir / CERT_NAME, binary=True, mode=0o644) as f:
        f.write(cert_pem)
    if ca_pem is not None:
        with atomic_write(tls_dir / CA_NAME, binary=True, mode=0o644) as f:
            f.write(ca_pem)
