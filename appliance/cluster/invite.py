"""The join file: everything one host needs to join the cluster, sealed with a passphrase.

Its node certificate and key, the CA certificate, the head's address and Ray port, the Ray token, the
appliance version it must run and the members' addresses (its firewall), sealed like the private keys of a
backup (scrypt, AES-256-GCM: `backup/sealed.py`). The file travels on a stick and the passphrase by another
way; the fingerprint (SHA-256 of the file) is printed on the head and by the worker's installer, to compare.
Read by `install.sh --role worker` on the host's Python: standard library and `cryptography` only.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from appliance.backup import sealed
from appliance.backup.errors import BackupError
from appliance.cluster.ca import ClusterError, Member
from appliance.files import atomic_write, read_small
from appliance.tls import certs

FILES = ("node.crt", "node.key", "ca.crt", "ray_auth_token", "join.json")
_MAX = 1 << 20


@dataclass(frozen=True)
class Join:
    name: str
    addresses: tuple[str, ...]
    head: str
    port: int
    version: str
    allow: tuple[str, ...]  # the members' addresses when the invite was made
    files: dict[str, bytes]

    @property
    def head_address(self) -> str:
        return f"{self.head}:{self.port}"


def write(
    out: Path,
    passphrase: bytes,
    *,
    member: Member,
    cert_pem: bytes,
    key_pem: bytes,
    ca_pem: bytes,
    head: str,
    port: int,
    token: bytes,
    version: str,
    allow: list[str],
) -> str:
    """Seal and write the join file (0600, whole or not at all); returns its fingerprint."""
    meta = {
        "name": member.name,
        "addresses": list(member.addresses),
        "head": head,
        "port": port,
        "version": version,
        "allow": allow,
    }
    blob = sealed.seal(
        {
            "node.crt": cert_pem,
            "node.key": key_pem,
            "ca.crt": ca_pem,
            "ray_auth_token": token,
            "join.json": json.dumps(meta).encode(),
        },
        passphrase,
    )
    with atomic_write(out, binary=True, mode=0o600) as f:
        f.write(blob)
    return fingerprint(blob)


def fingerprint(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def read(path: Path, passphrase: bytes) -> tuple[Join, str]:
    """The join file's content, checked whole (the certificate issued by the CA inside, the key its own), and
    its fingerprint."""
    try:
        blob = read_small(path, _MAX)
    except OSError as exc:
        raise ClusterError(f"cannot read the join file {path}: {exc.strerror}") from exc
    try:
        files = sealed.unseal(blob, passphrase)
    except BackupError as exc:
        raise ClusterError(f"cannot open the join file {path}: wrong passphrase, or not a join file") from exc
    if sorted(files) != sorted(FILES):
        raise ClusterError(f"the join file {path} is incomplete (it holds {', '.join(sorted(files))})")
    try:
        meta = json.loads(files["join.json"])
        join = Join(
            name=str(meta["name"]),
            addresses=tuple(meta["addresses"]),
            head=str(meta["head"]),
            port=int(meta["port"]),
            version=str(meta["version"]),
            allow=tuple(meta["allow"]),
            files=files,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ClusterError(f"the join file {path} is malformed") from exc
    _check_pair(files)
    return join, fingerprint(blob)


def _check_pair(files: dict[str, bytes]) -> None:
    cert = certs.parse_certs(files["node.crt"], "the join file's certificate")[0]
    ca = certs.parse_certs(files["ca.crt"], "the join file's CA")[0]
    try:
        cert.verify_directly_issued_by(ca)
        key = serialization.load_pem_private_key(files["node.key"], None)
    except (ValueError, TypeError, InvalidSignature):
        raise ClusterError("the join file's certificate and CA do not belong together") from None
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*der) != cert.public_key().public_bytes(*der):
        raise ClusterError("the join file's key does not belong to its certificate")


def install(join: Join, folder: Path) -> None:
    """The node's identity where its Ray reads it: private files 0600, the folder 0700."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for name, data in join.files.items():
        private = name in ("node.key", "ray_auth_token")
        with atomic_write(folder / name, binary=True, mode=0o600 if private else 0o644) as f:
            f.write(data)
