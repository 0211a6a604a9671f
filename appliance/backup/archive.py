"""The archive file: an uncompressed POSIX tar whose first two members are the manifest and its signature.

Each file goes through memory once, on both sides. Writing, every member is hashed while it is copied into
the archive (and the staged copy is removed at once, so its pages need never reach the disk); the
manifest's place at the front is reserved at its final size (hashes are fixed-length, the signature is
padded) and filled in once the hashes are known. The file is written beside the target, fsynced and
renamed, so a crash or a full disk never leaves a half-written archive under the final name.
Reading, the signature is checked before any other member is read, and each member is hashed while it is
copied into a staging folder, so what is staged is exactly what was hashed (no check-then-read window).
Only regular files whose paths the manifest lists, each once and at its size, are accepted: links, devices,
sparse files, absolute paths and `..` never reach disk.
Uncompressed, because the database dominates and a restore should run at disk speed; compress the file
afterwards if space matters more than time.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from appliance.backup import manifest as mf
from appliance.backup import sealed
from appliance.backup.errors import BackupError
from appliance.files import atomic_write, fsync_dir
from appliance.signing import keys

Advance = Callable[[int], None]
Seal = Callable[[list[mf.Member]], tuple[bytes, bytes]]  # the members' lines -> (manifest, signature)
_CHUNK = 1 << 20
_UNKNOWN = "0" * 64  # a SHA-256 not computed yet: as long as the real one


def write(out: Path, staging: Path, paths: list[str], seal: Seal, advance: Advance) -> list[mf.Member]:
    """Write the archive `out` atomically from the files `paths` under `staging` (each removed once it is
    archived); `seal` makes the manifest and its signature from the members' lines, which are returned."""
    sizes = [(p, (staging / p).stat().st_size) for p in paths]
    draft = seal([mf.Member(path=p, sha256=_UNKNOWN, size=n) for p, n in sizes])
    members = []
    try:
        # the archive holds audit content: readable by its owner only
        with atomic_write(out, binary=True, mode=0o600) as f:
            places = []
            for name, data in zip((mf.NAME, mf.SIGNATURE), draft, strict=True):
                places.append(_header(f, name, len(data)))
                f.write(bytes(_padded(len(data))))
            for path, size in sizes:
                _header(f, path, size)
                with open(staging / path, "rb", buffering=0) as src:
                    digest = _copy(src, f, size, advance)
                if digest is None:
                    raise BackupError(f"the staged {path} changed while it was archived")
                members.append(mf.Member(path=path, sha256=digest, size=size))
                f.write(bytes(_padded(size) - size))
                (staging / path).unlink()
            end = f.tell() + 2 * tarfile.BLOCKSIZE  # two zero blocks, then the record filled as tar does
            f.write(bytes(-(-end // tarfile.RECORDSIZE) * tarfile.RECORDSIZE - f.tell()))
            f.flush()
            for place, old, new in zip(places, draft, seal(members), strict=True):
                if len(new) != len(old):
                    raise BackupError("the manifest changed size once hashed (a bug: nothing was written)")
                os.pwrite(f.fileno(), new, place)
    except OSError as exc:
        raise BackupError(f"cannot write {out}: {exc.strerror or exc}") from exc
    fsync_dir(out.parent)
    return members


def read(archive: Path, staging: Path, trusted: list[keys.PublicKey], advance: Advance) -> mf.Manifest:
    """Verify `archive` completely while staging its members under `staging`; returns its manifest."""
    try:
        with open(archive, "rb", buffering=0) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            manifest = _head(tar, trusted)
            check_space(staging, sum(m.size for m in manifest.members))
            wanted = {m.path: m for m in manifest.members}
            while (info := tar.next()) is not None:
                m = wanted.pop(sealed.safe_path(info.name), None)
                if m is None:
                    raise BackupError(f"the archive holds {info.name!r}, which its manifest does not list")
                if not info.isreg() or info.issparse():
                    raise BackupError(f"the archive member {info.name!r} is not a regular file")
                if info.size != m.size:
                    raise BackupError(f"the archive member {m.path} has {info.size} bytes, its manifest says {m.size}")
                f.seek(info.offset_data)
                _stage(f, staging / m.path, m, advance)
    except FileNotFoundError as exc:
        raise BackupError(f"archive {archive} does not exist") from exc
    except (tarfile.TarError, EOFError) as exc:
        raise BackupError(f"{archive} is truncated or not a backup archive ({exc})") from exc
    except OSError as exc:
        raise BackupError(f"cannot read {archive}: {exc.strerror or exc}") from exc
    if wanted:
        raise BackupError(f"the archive lacks {sorted(wanted)[0]} (truncated?)")
    return manifest


def _head(tar: tarfile.TarFile, trusted: list[keys.PublicKey]) -> mf.Manifest:
    """The first two members, the manifest and its signature, checked before anything else is read."""
    parts = []
    for name in (mf.NAME, mf.SIGNATURE):
        info = tar.next()
        if info is None or info.name != name or not info.isreg() or info.size > mf.MAX_MANIFEST_BYTES:
            raise BackupError(f"not a backup archive: it does not start with {mf.NAME} and {mf.SIGNATURE}")
        extracted = tar.extractfile(info)
        assert extracted is not None  # a regular file
        parts.append(extracted.read())
    return mf.verify(parts[0], parts[1], trusted)


def _stage(src: io.FileIO, dest: Path, member: mf.Member, advance: Advance) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "xb") as out:
        os.fchmod(out.fileno(), 0o600)
        digest = _copy(src, out, member.size, advance)
        out.flush()
        os.fsync(out.fileno())
    if digest is None:
        raise BackupError(f"the archive ends inside {member.path} (truncated)")
    if digest != member.sha256:
        raise BackupError(
            f"the archive member {member.path} does not match its SHA-256 in the manifest (tampered or damaged)"
        )


def _copy(src: io.FileIO, out: IO[bytes], size: int, advance: Advance) -> str | None:
    """Copy `size` bytes from `src` to `out` through one buffer, hashing them on the way: the SHA-256 of
    what was written, or None when `src` ends early."""
    digest, buf = hashlib.sha256(), memoryview(bytearray(_CHUNK))
    while size:
        n = src.readinto(buf[: min(size, _CHUNK)])
        if not n:
            return None
        digest.update(buf[:n])
        out.write(buf[:n])
        advance(n)
        size -= n
    return digest.hexdigest()


def check_space(folder: Path, need: int, what: str = "the restore") -> None:
    """Fail before writing anything when `folder`'s file system has less than `need` bytes free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise BackupError(f"not enough space in {folder}: {what} needs {need >> 20} MiB, {free >> 20} MiB are free")


def _header(f: IO[bytes], name: str, size: int) -> int:
    """Write the tar header of a member; returns where its data starts."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uname, info.gname = size, 0o600, "", ""
    f.write(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))
    return f.tell()


def _padded(size: int) -> int:
    """`size` rounded up to whole tar blocks."""
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
