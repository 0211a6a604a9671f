"""MANIFEST.json and MANIFEST.sig: every file on the media with its size and SHA-256, and its parts.

The signature covers the exact bytes of MANIFEST.json (canonical JSON: sorted keys, no timestamps), so the
same inputs give byte-identical manifests. A file larger than the split size is not on the media whole: it
travels as `PATH.partNNN` files, each listed with its own size and digest, and the whole file's digest is
checked again when the parts are joined at install time.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from appliance.errors import ApplianceError

if TYPE_CHECKING:  # loaded where a key is used: `media verify` starts hashing before (signing/hashing.py)
    from appliance.signing import keys

MANIFEST = "MANIFEST.json"
SIGNATURE = "MANIFEST.sig"
RELEASE_KEY = "release.pub"  # the signer's public key, for showing its fingerprint; trust comes from elsewhere
FORMAT = "appliance-media/1"
MAX_MANIFEST_BYTES = 64 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[-+.]?(.*))?$")


class MediaError(ApplianceError):
    """Media that is incomplete, corrupt, unsigned, untrusted or not installable here."""


@dataclass(frozen=True)
class Part:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class MediaFile:
    path: str  # the file's path once installed/joined, relative to the media root
    size: int
    sha256: str
    parts: tuple[Part, ...] = ()

    def stored(self) -> list[tuple[str, int, str]]:
        """What lies on the media for this file: (path, size, sha256) of itself or of each part."""
        if self.parts:
            return [(p.path, p.size, p.sha256) for p in self.parts]
        return [(self.path, self.size, self.sha256)]


@dataclass(frozen=True)
class Manifest:
    version: str  # the appliance version on the media
    min_upgrade_from: str
    pythons: tuple[str, ...]
    gpu: bool
    split_size: int
    files: tuple[MediaFile, ...]
    bundles: tuple[str, ...] = ()  # bundle folders (relative paths)
    format: str = FORMAT
    extra: dict = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        data = asdict(self)
        return (json.dumps(data, sort_keys=True, indent=1) + "\n").encode()

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise MediaError(f"{MANIFEST} has format {data.get('format')!r}, expected {FORMAT!r}")
            files = tuple(
                MediaFile(
                    f["path"],
                    int(f["size"]),
                    f["sha256"],
                    tuple(Part(p["path"], int(p["size"]), p["sha256"]) for p in f["parts"]),
                )
                for f in data["files"]
            )
            m = cls(
                data["version"],
                data["min_upgrade_from"],
                tuple(data["pythons"]),
                bool(data["gpu"]),
                int(data["split_size"]),
                files,
                tuple(data["bundles"]),
                data["format"],
                dict(data["extra"]),
            )
        except MediaError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MediaError(f"{MANIFEST} is truncated or malformed ({type(exc).__name__})") from None
        m._check()
        return m

    def _check(self) -> None:
        seen: set[str] = set()
        for f in self.files:
            for path, size, digest in [(f.path, f.size, f.sha256), *[(p.path, p.size, p.sha256) for p in f.parts]]:
                check_relative(path)
                if size < 0 or not _HEX64.match(digest):
                    raise MediaError(f"{MANIFEST} lists {path} with a bad size or digest")
            if f.parts and sum(p.size for p in f.parts) != f.size:
                raise MediaError(f"{MANIFEST}: the parts of {f.path} do not add up to its size")
            for path, _, _ in f.stored():
                if path in seen or path in (MANIFEST, SIGNATURE):
                    raise MediaError(f"{MANIFEST} lists {path} twice")
                seen.add(path)
        version_key(self.version)
        version_key(self.min_upgrade_from)


def check_relative(path: str) -> None:
    """A manifest path must stay inside the media folder: relative, no `..`, no empty parts."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or any(part in ("", ".", "..") for part in path.split("/")) or "\\" in path:
        raise MediaError(f"{MANIFEST} names an unsafe path {path!r}")


def version_key(version: str) -> tuple:
    """Orders MAJOR.MINOR.PATCH versions; a suffix (pre-release) sorts before the plain release."""
    m = _VERSION.match(version)
    if not m:
        raise MediaError(f"version {version!r} is not MAJOR.MINOR.PATCH")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if m.group(4) else 1, m.group(4) or "")


def write_signature(root: Path, raw: bytes, key: keys.PrivateKey) -> None:
    """MANIFEST.sig: the signer's key fingerprint and its signature over MANIFEST.json's bytes."""
    from appliance.signing import keys

    sig = {"key": keys.key_hint(key.public_key()), "signature": base64.b64encode(keys.sign(key, raw)).decode()}
    (root / SIGNATURE).write_text(json.dumps(sig, sort_keys=True) + "\n")
    keys.write_public_key(key.public_key(), root / RELEASE_KEY)


def check_signature(raw: bytes, sig_raw: bytes, trusted: list[keys.PublicKey]) -> keys.PublicKey:
    """The trusted key whose signature over `raw` is valid, or a MediaError that names the signer."""
    from appliance.signing import keys

    try:
        sig = json.loads(sig_raw)
        signature = base64.b64decode(sig["signature"], validate=True)
        hint = str(sig["key"])
    except (ValueError, KeyError, TypeError):
        raise MediaError(f"{SIGNATURE} is truncated or malformed") from None
    for key in trusted:
        if keys.key_hint(key) == hint and keys.verify(key, signature, raw):
            return key
    if any(keys.key_hint(k) == hint for k in trusted):
        raise MediaError(f"{MANIFEST} does not match its signature (changed or corrupt)")
    raise MediaError(
        f"the media is signed by release key {hint} which is not trusted here "
        "(compare the fingerprint with the one your release team published, then pass "
        "--trust-release-key FILE)"
    )
