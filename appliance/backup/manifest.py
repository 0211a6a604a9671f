"""The archive's manifest: what a backup holds, each member's SHA-256 and size, signed by the audit key.

The audit key signs because it is the key this appliance already guards and that an auditor already
trusts: a restore is a change to the audit log, and an archive nobody with that key made must not become
the log. The manifest is the first member of the archive, so a restore checks the signature before it
reads a single byte of anything else, and then holds every member to its line here.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from appliance.backup.errors import BackupError
from appliance.backup.sealed import safe_path
from appliance.signing import keys

FORMAT: Literal["appliance-backup/1"] = "appliance-backup/1"
Database = Literal["sqlite", "postgresql"]
NAME, SIGNATURE = "manifest.json", "manifest.sig"
MAX_MANIFEST_BYTES = 16 << 20
SIGNATURE_BYTES = 512  # the longest signature line (ECDSA P-384) is ~330 bytes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Member(_Strict):
    path: str
    sha256: str
    size: int


class Head(_Strict):
    """The audit head inside the snapshot: what a restore compares with the data it would replace."""

    seq: int
    hash: str
    ts: str | None


class BundleRef(_Strict):
    """An installed bundle, referenced by the digest of its signature file (which pins every byte)."""

    name: str
    version: str
    model_sig_sha256: str


class Manifest(_Strict):
    format: Literal["appliance-backup/1"] = FORMAT
    created: str
    appliance_version: str
    database: Database
    audit_head: Head
    audit_key_id: str
    bundles: list[BundleRef]
    private_keys: bool
    members: list[Member]

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(), indent=1, sort_keys=True).encode() + b"\n"

    def member(self, path: str) -> Member | None:
        return next((m for m in self.members if m.path == path), None)


def sign(manifest: bytes, key: keys.PrivateKey) -> bytes:
    """The signature member: the key id and the signature over the manifest's exact bytes, padded with
    spaces to SIGNATURE_BYTES whatever the key's kind (an archive reserves its place before it is known)."""
    line = json.dumps({"key_id": keys.key_hint(key.public_key()), "signature": keys.sign(key, manifest).hex()})
    return line.encode().ljust(SIGNATURE_BYTES - 1) + b"\n"


def verify(manifest: bytes, signature: bytes, trusted: list[keys.PublicKey]) -> Manifest:
    """The manifest if a trusted key signed these exact bytes and every member path is safe."""
    try:
        sig = json.loads(signature)
        key_id, raw = str(sig["key_id"]), bytes.fromhex(sig["signature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError("the archive's manifest signature is malformed") from exc
    key = next((k for k in trusted if keys.key_hint(k) == key_id), None)
    if key is None:
        raise BackupError(
            f"the archive is signed by audit key {key_id[:16]}, which this appliance does not "
            f"trust (pass --trust AUDIT.pub of the appliance that made it)"
        )
    if not keys.verify(key, raw, manifest):
        raise BackupError("the archive's manifest does not match its signature (tampered)")
    try:
        parsed = Manifest.model_validate_json(manifest)
    except ValidationError as exc:
        raise BackupError(f"the archive's manifest is invalid: {exc.errors()[0]['msg']}") from exc
    seen: set[str] = set()
    for m in parsed.members:
        safe_path(m.path)
        if m.path in seen or m.path in (NAME, SIGNATURE):
            raise BackupError(f"the archive's manifest lists {m.path!r} twice")
        seen.add(m.path)
    if parsed.audit_key_id != key_id:
        raise BackupError("the archive's manifest names another audit key than the one that signed it")
    return parsed
