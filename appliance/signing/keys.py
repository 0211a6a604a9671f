"""Key files: Ed25519 and ECDSA P-256 (P-384 read too), PEM on disk, private keys mode 0600.

Ed25519 is the default (small, fast, no parameter choices); P-256 exists because the `model-signing`
package verifies elliptic-curve keys only, so sites that check our bundles with it need one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from appliance.errors import ApplianceError
from appliance.files import atomic_write, read_small

KeyKind = Literal["ed25519", "ecdsa-p256"]
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

_EC_CURVES = {"secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384}
_MAX_KEY_FILE = 64 * 1024


class KeyFileError(ApplianceError):
    """A key file that is missing, unreadable, malformed or of an unsupported kind."""


def generate_private_key(kind: KeyKind = "ed25519") -> PrivateKey:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise KeyFileError(f"unsupported key kind {kind!r} (use ed25519 or ecdsa-p256)")


def write_private_key(key: PrivateKey, path: Path) -> None:
    """Write unencrypted PKCS#8 PEM atomically with mode 0600; never replaces an existing key."""
    if path.exists():
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write(path, pem, 0o600)


def write_public_key(key: PublicKey, path: Path) -> None:
    _write(path, public_pem(key), 0o644)


def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_hint(key: PublicKey) -> str:
    """SHA-256 of the PEM public key, hex: the key id OMS records in `verificationMaterial.publicKey.hint`."""
    return hashlib.sha256(public_pem(key)).hexdigest()


def load_private_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read_key_file(path), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key") from exc
    return _private_kind(key, path)


def load_public_key(path: Path) -> PublicKey:
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:  # a private key file also yields its public half
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{path} is not a PEM public key") from exc
    return _public_kind(key, path)


def trusted_keys(trust_dir: Path, extra: list[Path] | None = None) -> list[PublicKey]:
    """Keys named explicitly, else every `*.pub` in the trust folder (none if it does not exist)."""
    if extra:
        return [load_public_key(p) for p in extra]
    if not trust_dir.is_dir():
        return []
    return [load_public_key(p) for p in sorted(trust_dir.glob("*.pub"))]


def sign(key: PrivateKey, message: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, ec.ECDSA(_EC_CURVES[key.curve.name]()))


def verify(key: PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        else:
            key.verify(signature, message, ec.ECDSA(_EC_CURVES[key.curve.name]()))
    except InvalidSignature:
        return False
    return True


def _private_kind(key: object, path: Path) -> PrivateKey:
    if isinstance(key, ed25519.Ed25519PrivateKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _EC_CURVES
    ):
        return key
    raise _unsupported(path)


def _public_kind(key: object, path: Path) -> PublicKey:
    if isinstance(key, ed25519.Ed25519PublicKey) or (
        isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_CURVES
    ):
        return key
    raise _unsupported(path)


def _unsupported(path: Path) -> KeyFileError:
    return KeyFileError(f"{path}: unsupported key type (use Ed25519 or ECDSA P-256/P-384)")


def _read_key_file(path: Path) -> bytes:
    try:
        return read_small(path, _MAX_KEY_FILE)
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise KeyFileError(f"key file {path} is a directory") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc


def _write(path: Path, data: bytes, mode: int) -> None:
    with atomic_write(path, binary=True, mode=mode) as f:
        f.write(data)
