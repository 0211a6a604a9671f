"""Signing and verifying bundles: OMS over the folder, plus the metadata rules of our format."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from appliance.bundles.metadata import METADATA_FILE, SIGNATURE_FILE, BundleError, BundleMetadata
from appliance.signing import keys, oms
from appliance.signing.hashing import Ahead, HeldFiles, Progress


@dataclass(frozen=True)
class VerifiedBundle:
    """A folder whose every byte matched a trusted signature at the time it was checked."""

    path: Path
    metadata: BundleMetadata
    manifest: oms.Manifest
    signer_hint: str


def sign_bundle(
    folder: Path,
    key: keys.PrivateKey,
    *,
    shard_size: int | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> oms.Manifest:
    """Validate `bundle.json`, then write `model.sig` over every file of the folder."""
    BundleMetadata.read(folder)
    return oms.sign_folder(
        folder, key, signature_name=SIGNATURE_FILE, shard_size=shard_size, workers=workers, progress=progress
    )


def read_verified_metadata(folder: Path, manifest: oms.Manifest) -> BundleMetadata:
    """Read `bundle.json` once, check its bytes against the signed digest, then parse those same bytes."""
    signed = [(p, d) for p, d in manifest.digests.items() if p.path == METADATA_FILE]
    if len(signed) != 1 or signed[0][0].start != 0:
        raise BundleError(f"the signature does not cover {METADATA_FILE} as one piece")
    try:
        fd = os.open(folder / METADATA_FILE, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise oms.SignatureError(f"file {METADATA_FILE} is listed in the signature but missing") from None
    except OSError as exc:
        raise oms.SignatureError(f"cannot read {METADATA_FILE}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(1 << 20)
    if hashlib.sha256(raw).hexdigest() != signed[0][1]:
        raise oms.SignatureError(f"file {METADATA_FILE} does not match its signed digest (changed or corrupt)")
    return BundleMetadata.parse(raw)


def verify_bundle(
    folder: Path,
    trusted: list[keys.PublicKey],
    *,
    workers: int = 1,
    progress: Progress | None = None,
    max_signature_bytes: int = 16 << 20,
    copy_to: Path | None = None,
    held: HeldFiles | None = None,
    ahead: Ahead | None = None,
) -> VerifiedBundle:
    """Signature first (cheap), then `bundle.json`, then every byte in parallel (optionally copied, or held
    open for loading: see `BundleStore.loading`; or already under way: see `hashing.Ahead`)."""
    manifest, key = oms.read_signature(
        folder, trusted, signature_name=SIGNATURE_FILE, max_signature_bytes=max_signature_bytes
    )
    metadata = read_verified_metadata(folder, manifest)
    oms.verify_folder(
        folder,
        trusted,
        signature_name=SIGNATURE_FILE,
        workers=workers,
        progress=progress,
        copy_to=copy_to,
        manifest=manifest,
        held=held,
        ahead=ahead,
    )
    return VerifiedBundle(folder, metadata, manifest, keys.key_hint(key))
