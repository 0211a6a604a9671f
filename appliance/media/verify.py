"""Checking media without installing: the signature first, then every file and part by size and SHA-256.

Nothing is written anywhere. The listing is compared with the manifest before any hashing (cheap, and it
names a missing, extra or truncated file at once); then every stored file or part is hashed in parallel with
`signing/hashing.py`, largest first. `appliance media verify` starts that hashing before the signature is
checked (`hashing.Ahead`, over `files_on`), and uses its digests only once the signed manifest lists
exactly the files it hashed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.files import read_small
from appliance.media.manifest import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    RELEASE_KEY,
    SIGNATURE,
    Manifest,
    MediaError,
    check_signature,
)
from appliance.signing.hashing import Ahead, Piece, Progress, hash_pieces

if TYPE_CHECKING:
    from appliance.signing import keys


@dataclass(frozen=True)
class VerifiedMedia:
    root: Path
    manifest: Manifest
    manifest_sha256: str  # identifies this build: the digest of the signed manifest bytes
    key_hint: str


def read_manifest(root: Path, trusted: list[keys.PublicKey]) -> VerifiedMedia:
    """The manifest, accepted only when a trusted key signed these exact bytes."""
    from appliance.signing import keys

    raw = _read_small(root / MANIFEST)
    key = check_signature(raw, _read_small(root / SIGNATURE), trusted)
    return VerifiedMedia(root, Manifest.parse(raw), hashlib.sha256(raw).hexdigest(), keys.key_hint(key))


def media_key(root: Path) -> keys.PublicKey:
    """The release key the media says it is signed with (to show its fingerprint; never trusted by itself)."""
    from appliance.signing import keys

    return keys.load_public_key(root / RELEASE_KEY)


def verify_media(
    root: Path,
    trusted: list[keys.PublicKey],
    *,
    workers: int,
    progress: Progress | None = None,
    ahead: Ahead | None = None,
) -> VerifiedMedia:
    media = read_manifest(root, trusted)
    expected = {path: (size, digest) for f in media.manifest.files for path, size, digest in f.stored()}
    present = _listing(root)
    for path in sorted(expected):
        if path not in present:
            raise MediaError(f"{_what(path)} {path} is missing from the media")
    for path in sorted(present):
        if path not in expected:
            raise MediaError(f"{path} is on the media but not in {MANIFEST} (extra file)")
    for path, (size, _) in sorted(expected.items()):
        if present[path] != size:
            how = "truncated" if present[path] < size else "longer than listed"
            raise MediaError(f"{_what(path)} {path} is {how} ({present[path]} bytes, expected {size})")
    pieces = [Piece(p, 0, s) for p, (s, _) in expected.items()]
    digests = hash_pieces(root, pieces, workers=workers, progress=progress, ahead=ahead)
    for piece, digest in sorted(digests.items()):
        if digest != expected[piece.path][1]:
            raise MediaError(f"{_what(piece.path)} {piece.path} does not match its SHA-256 (changed or corrupt)")
    return media


def stored_bytes(manifest: Manifest) -> int:
    return sum(size for f in manifest.files for _, size, _ in f.stored())


def files_on(root: Path) -> dict[str, int]:
    """The media's files (but the manifest and its signature) by size, as they are now; {} when they cannot
    be listed (`verify_media` reports why, after the signature)."""
    try:
        return _listing(root)
    except (MediaError, OSError):
        return {}


def _what(path: str) -> str:
    return "part" if ".part" in path.rsplit("/", 1)[-1] else "file"


def _listing(root: Path) -> dict[str, int]:
    """Every regular file under `root` (relative POSIX path -> size), except the manifest and signature."""
    out: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if rel in (MANIFEST, SIGNATURE):
                continue
            st = full.lstat()
            if not full.is_file() or full.is_symlink():
                raise MediaError(f"{rel} on the media is not a regular file")
            out[rel] = st.st_size
    return out


def _read_small(path: Path) -> bytes:
    try:
        return read_small(path, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise MediaError(f"{path.name} is missing: {path.parent} is not complete media") from None
    except OSError as exc:
        raise MediaError(f"cannot read {path}: {exc.strerror}") from None
