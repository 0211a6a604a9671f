"""OpenSSF Model Signing (OMS) v1.0 signatures over a folder, key-based and fully offline.

The signature file holds a Sigstore bundle whose DSSE envelope carries an in-toto Statement: one subject
(the folder name and a root digest: SHA-256 over the resources' raw digests in manifest order) and the
predicate `https://model_signing/signature/v1.0` listing every file (method "files") or every shard
(method "shards", named `path:start:end`) with its SHA-256. This is the layout `model-signing` 1.1 writes
and reads, so either tool verifies the other's signatures (tests prove both directions).

Verification is strict where OMS leaves room: symlinks and special files are refused whatever the
signature says, manifest paths must stay inside the folder, every file present must be listed, and the
root digest must match the resources.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from appliance.files import atomic_write
from appliance.signing import dsse
from appliance.signing.dsse import SignatureError as SignatureError  # re-exported: callers catch it here
from appliance.signing.hashing import Ahead, HeldFiles, Piece, Progress, hash_pieces, preallocate

if TYPE_CHECKING:  # the key library loads when a key is used: a verification starts hashing before that
    from appliance.signing import keys

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
_GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
SIGNATURE_NAME = "model.sig"  # model-signing's default name


@dataclass
class Manifest:
    """What a signature vouches for: each piece of each file and its SHA-256."""

    method: str  # "files" or "shards"
    digests: dict[Piece, str]
    ignore_paths: list[str] = field(default_factory=list)
    shard_size: int | None = None

    @property
    def files(self) -> set[str]:
        return {p.path for p in self.digests}

    def sizes(self) -> dict[str, int]:
        """Size of each file as the shards describe it (meaningful for the shards method only)."""
        out: dict[str, int] = {}
        for p in self.digests:
            out[p.path] = max(out.get(p.path, 0), p.end)
        return out


# model-signing leaves these out of every signature by default; nothing here ever loads them.
GIT_PATHS = frozenset({".git", ".gitattributes", ".github", ".gitignore"})


def sign_folder(
    folder: Path,
    key: keys.PrivateKey,
    *,
    signature_name: str = SIGNATURE_NAME,
    shard_size: int | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> Manifest:
    """Hash every file of `folder` and write its OMS signature as `folder/signature_name` (atomically)."""
    ignore = [signature_name]
    sizes = scan_folder(folder, set(ignore))
    if not sizes:
        raise SignatureError(f"{folder} holds no files to sign")
    pieces = _pieces(sizes, shard_size)
    manifest = Manifest(
        "shards" if shard_size else "files",
        hash_pieces(folder, pieces, workers=workers, progress=progress),
        ignore,
        shard_size,
    )
    payload = json.dumps(_statement(folder.name, manifest), indent=2).encode()
    with atomic_write(folder / signature_name, mode=0o644) as f:
        f.write(json.dumps(dsse.seal(payload, key), indent=2))
    return manifest


def read_signature(
    folder: Path,
    trusted: list[keys.PublicKey],
    *,
    signature_name: str = SIGNATURE_NAME,
    max_signature_bytes: int = 16 << 20,
) -> tuple[Manifest, keys.PublicKey]:
    """The manifest a trusted key signed for `folder`, without hashing any file yet."""
    _check_folder(folder)
    sig_path = folder / signature_name
    try:
        st = os.lstat(sig_path)
    except FileNotFoundError:
        raise SignatureError(f"{folder} has no signature file {signature_name}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SignatureError(f"signature {signature_name} is not a regular file")
    if st.st_size > max_signature_bytes:
        raise SignatureError(f"signature {signature_name} is {st.st_size} bytes, over the {max_signature_bytes} limit")
    fd = os.open(sig_path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        raw = f.read(max_signature_bytes + 1)
    payload, key = dsse.open_sealed(raw, trusted)
    return parse_statement(payload, signature_name), key


def verify_folder(
    folder: Path,
    trusted: list[keys.PublicKey],
    *,
    signature_name: str = SIGNATURE_NAME,
    max_signature_bytes: int = 16 << 20,
    workers: int = 1,
    progress: Progress | None = None,
    copy_to: Path | None = None,
    manifest: Manifest | None = None,
    held: HeldFiles | None = None,
    ahead: Ahead | None = None,
) -> Manifest:
    """Check that `folder` is exactly what a trusted key signed; with `copy_to`, copy it while hashing; with
    `held`, open every file into it and hash through those descriptors (for loading through them after).

    Raises `SignatureError` naming the first problem. A given `manifest` (from `read_signature`) skips
    re-reading the signature; a given `ahead` (hashing started before the signature was read) supplies
    the digests when it hashed exactly the pieces to check now.
    """
    if manifest is None:
        manifest, _ = read_signature(
            folder, trusted, signature_name=signature_name, max_signature_bytes=max_signature_bytes
        )
    sizes = scan_folder(folder, {signature_name, *manifest.ignore_paths})
    check_file_set(manifest, sizes)
    pieces = list(manifest.digests) if manifest.method == "shards" else [Piece(p, 0, s) for p, s in sizes.items()]
    if copy_to is not None:
        preallocate(copy_to, sizes)
    if held is not None:
        try:
            held.open(folder, sizes)
        except OSError as exc:
            raise SignatureError(f"cannot open the files of {folder}: {exc}") from exc
    actual = hash_pieces(folder, pieces, workers=workers, progress=progress, copy_to=copy_to, held=held, ahead=ahead)
    expected = (
        manifest.digests
        if manifest.method == "shards"
        else {Piece(p.path, 0, sizes[p.path]): d for p, d in manifest.digests.items()}
    )
    for piece in sorted(expected):
        if actual.get(piece) != expected[piece]:
            raise SignatureError(f"file {piece.path} does not match its signed digest (changed or corrupt)")
    return manifest


def check_file_set(manifest: Manifest, sizes: dict[str, int]) -> None:
    """The files present must be exactly the files signed (and, for shards, of the signed sizes)."""
    missing = sorted(manifest.files - sizes.keys())
    if missing:
        raise SignatureError(f"file {missing[0]} is listed in the signature but missing")
    extra = sorted(sizes.keys() - manifest.files)
    if extra:
        raise SignatureError(f"file {extra[0]} is not listed in the signature")
    if manifest.method == "shards":
        for path, size in manifest.sizes().items():
            if sizes[path] != size:
                raise SignatureError(f"file {path} is {sizes[path]} bytes, the signature says {size}")


def scan_folder(folder: Path, ignore: set[str]) -> dict[str, int]:
    """Every regular file under `folder` (relative POSIX path -> size); refuses symlinks and specials."""
    _check_folder(folder)
    out: dict[str, int] = {}
    stack = [(folder, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                rel = f"{prefix}{entry.name}"
                if not prefix and entry.name in ignore:
                    continue
                if entry.is_symlink():
                    raise SignatureError(f"{rel} is a symlink; bundles may hold regular files only")
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((Path(entry.path), f"{rel}/"))
                elif stat.S_ISREG(st.st_mode):
                    out[rel] = st.st_size
                else:
                    raise SignatureError(f"{rel} is not a regular file")
    return out


def parse_statement(payload: bytes, signature_name: str = SIGNATURE_NAME) -> Manifest:
    """Validate an in-toto statement and turn it into a `Manifest`."""
    try:
        statement = json.loads(payload)
        if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
            raise SignatureError("signature payload is not an OMS v1.0 in-toto statement")
        (subject,) = statement["subject"]
        root = subject["digest"]["sha256"]
        ser = statement["predicate"]["serialization"]
        resources = statement["predicate"]["resources"]
        method = ser["method"]
        shard_size = int(ser["shard_size"]) if method == "shards" else None
        if ser.get("hash_type") != "sha256" or method not in ("files", "shards") or shard_size == 0:
            raise SignatureError(f"unsupported serialization {method}/{ser.get('hash_type')}")
        algorithm = _algorithm(shard_size)
        if ser.get("allow_symlinks") not in (False, "false"):
            raise SignatureError("signature allows symlinks; refused")
        ignore = [str(p) for p in ser.get("ignore_paths", [])]
        excluded = sorted(set(ignore) - {signature_name, *GIT_PATHS})
        if excluded:  # a file excluded from the digests would be loaded unverified
            raise SignatureError(
                f"signature excludes {', '.join(excluded)} from verification; only "
                f"{signature_name} (and model-signing's git files) may be excluded"
            )
        root_hash = hashlib.sha256()
        digests: dict[Piece, str] = {}
        for res in resources:
            if res.get("algorithm") != algorithm:
                raise SignatureError(f"unsupported digest algorithm {res.get('algorithm')!r}")
            digest = bytes.fromhex(res["digest"])
            if len(digest) != 32:
                raise SignatureError("signature holds a malformed digest")
            root_hash.update(digest)
            piece = _piece(str(res["name"]), method, signature_name)
            if piece in digests:
                raise SignatureError(f"signature lists {piece.path} twice")
            digests[piece] = digest.hex()
    except SignatureError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SignatureError("signature payload is malformed") from exc
    if root_hash.hexdigest() != root:
        raise SignatureError("signature root digest does not match its file list")
    if not digests:
        raise SignatureError("signature lists no files")
    manifest = Manifest(method, digests, ignore, shard_size)
    if method == "shards":
        _check_shards(manifest)
    return manifest


def _piece(name: str, method: str, signature_name: str) -> Piece:
    if method == "shards":
        path, _, rng = name.rpartition(":")
        path, _, start = path.rpartition(":")
        piece = Piece(path, int(start), int(rng))
    else:
        piece = Piece(name, 0, 0)
    safe_relpath(piece.path)
    if piece.path == signature_name:
        raise SignatureError(f"signature lists its own file {signature_name}")
    return piece


def safe_relpath(name: str) -> str:
    """`name` if it is a plain relative POSIX path that stays inside its folder, else a SignatureError."""
    parts = PurePosixPath(name).parts
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\0" in name
        or not parts
        or any(p in ("..", ".") for p in name.split("/"))
        or "" in name.split("/")
    ):
        raise SignatureError(f"signature lists an unsafe path {name!r} (absolute, empty or with ..)")
    return name


def _check_shards(manifest: Manifest) -> None:
    by_file: dict[str, list[Piece]] = {}
    for p in manifest.digests:
        by_file.setdefault(p.path, []).append(p)
    for path, pieces in by_file.items():
        pos = 0
        for p in sorted(pieces):
            if p.start != pos or p.end < p.start:
                raise SignatureError(f"signature shards of {path} do not tile the file")
            pos = p.end


def _pieces(sizes: dict[str, int], shard_size: int | None) -> list[Piece]:
    if not shard_size:
        return [Piece(p, 0, s) for p, s in sizes.items()]
    return [
        Piece(p, start, min(start + shard_size, s))
        for p, s in sizes.items()
        for start in (range(0, s, shard_size) if s else [0])
    ]


def _algorithm(shard_size: int | None) -> str:
    """OMS names the digest of a shard after the shard size."""
    return f"sha256-sharded-{shard_size}" if shard_size else "sha256"


def _statement(name: str, manifest: Manifest) -> dict[str, Any]:
    ordered = sorted(manifest.digests.items(), key=lambda kv: (PurePosixPath(kv[0].path).parts, kv[0].start))
    root = hashlib.sha256(b"".join(bytes.fromhex(d) for _, d in ordered)).hexdigest()
    serialization: dict[str, Any] = {
        "method": manifest.method,
        "hash_type": "sha256",
        "allow_symlinks": False,
        "ignore_paths": manifest.ignore_paths,
    }
    if manifest.method == "shards":
        serialization["shard_size"] = manifest.shard_size
    resources = [
        {
            "name": f"{p.path}:{p.start}:{p.end}" if manifest.method == "shards" else p.path,
            "algorithm": _algorithm(manifest.shard_size),
            "digest": d,
        }
        for p, d in ordered
    ]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"serialization": serialization, "resources": resources},
    }


def _check_folder(folder: Path) -> None:
    if folder.is_symlink():
        raise SignatureError(f"{folder} is a symlink; give the real folder")
    if not folder.is_dir():
        raise SignatureError(f"{folder} is not a folder")
    if not any(folder.iterdir()):
        raise SignatureError(f"{folder} is empty")
