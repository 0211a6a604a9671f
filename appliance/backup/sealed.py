"""Private keys in an archive: sealed with a passphrase (scrypt, then AES-256-GCM), never in clear.

One blob holds every private file of the keys folder as a tar. scrypt (n=2^15, r=8, p=1: ~32 MiB and
~0.1 s per try, the parameters `cryptography` recommends for interactive use) makes guessing the passphrase
of a stolen archive slow; AES-GCM authenticates, so a wrong passphrase and a damaged blob both fail before
anything is written. The header (format, KDF parameters, salt, nonce) is the associated data: changing
it breaks the tag too.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from appliance.backup.errors import BackupError
from appliance.files import read_small
from appliance.signing import oms

MAGIC = b"appliance-backup-keys/1\n"
_N, _R, _P = 2**15, 8, 1


def read_passphrase(path: Path) -> bytes:
    """The first line of `path` (a file, so the passphrase never shows in `ps` or shell history)."""
    try:
        text = read_small(path, 64 * 1024).splitlines()
    except OSError as exc:
        raise BackupError(f"cannot read the passphrase file {path}: {exc.strerror}") from exc
    if not text or len(text[0]) < 8:
        raise BackupError(f"the passphrase in {path} is empty or shorter than 8 characters")
    return text[0]


def seal(files: dict[str, bytes], passphrase: bytes) -> bytes:
    """`files` (name -> content) as one encrypted blob."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    salt, nonce = os.urandom(16), os.urandom(12)
    header = (
        MAGIC
        + json.dumps(
            {
                "kdf": "scrypt",
                "n": _N,
                "r": _R,
                "p": _P,
                "salt": salt.hex(),
                "cipher": "AES-256-GCM",
                "nonce": nonce.hex(),
            }
        ).encode()
        + b"\n"
    )
    return header + AESGCM(_derive(passphrase, salt, _N, _R, _P)).encrypt(nonce, buf.getvalue(), header)


def unseal(blob: bytes, passphrase: bytes) -> dict[str, bytes]:
    """The files sealed in `blob`; a wrong passphrase or a damaged blob is a `BackupError`."""
    try:
        if not blob.startswith(MAGIC):
            raise ValueError("magic")
        end = blob.index(b"\n", len(MAGIC)) + 1
        header, params = blob[:end], json.loads(blob[len(MAGIC) : end])
        key = _derive(passphrase, bytes.fromhex(params["salt"]), int(params["n"]), int(params["r"]), int(params["p"]))
        plain = AESGCM(key).decrypt(bytes.fromhex(params["nonce"]), blob[end:], header)
    except InvalidTag as exc:
        raise BackupError("wrong passphrase for the archive's private keys (or they are damaged)") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError("the archive's sealed private keys are malformed") from exc
    files = {}
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as tar:
        for info in tar:
            extracted = tar.extractfile(info) if info.isreg() else None
            if extracted is None:
                raise BackupError(f"the sealed private keys hold a non-file {info.name!r}")
            files[safe_path(info.name)] = extracted.read()
    return files


def safe_path(name: str) -> str:
    """`name` if it is a plain relative POSIX path that stays inside the staging folder (the rule bundle
    signatures follow). Here, not in manifest.py: the installer unseals join files with the standard library
    and `cryptography` only."""
    try:
        return oms.safe_relpath(name)
    except oms.SignatureError as exc:
        raise BackupError(f"the archive names an unsafe path {name!r} (absolute, empty or with ..)") from exc


def _derive(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    if n > 2**20 or r > 16 or p > 4:  # parameters come from the archive: bound the memory they may ask for
        raise ValueError("scrypt parameters out of range")
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)
