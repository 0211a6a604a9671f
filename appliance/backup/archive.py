"""The archive file: an uncompressed POSIX tar whose first two members are the manifest and its signature.

Written to a temporary file beside the target, fsynced and renamed, so a crash or a full disk never leaves
a half-written archive under the final name. Read as a stream in one pass: the signature is checked before
any other member is read, and each member is hashed while it is copied into a staging folder, so what is
staged is exactly what was hashed (no check-then-read window). Only regular files whose paths the manifest
lists, each once and at its size, are accepted: links, devices, absolute paths and `..` never reach disk.
Uncompressed, because the database dominates and a restore should run at disk speed; compress the file
afterwards if space matters more than time.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from appliance.backup import manifest as mf
from appliance.backup import sealed
from appliance.backup.errors import BackupError
from appliance.files import fsync_dir
from appliance.signing import keys

Advance = Callable[[int], None]
_CHUNK = 1 << 20


def write(
    out: Path, staging: Path, manifest: bytes, signature: bytes, members: list[mf.Member], advance: Advance
) -> None:
    """Write the archive `out` atomically from the files under `staging` that `members` lists."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    try:
        os.fchmod(fd, 0o600)  # the archive holds audit content: readable by its owner only
        with os.fdopen(fd, "wb") as f:
            # copybufsize: tarfile copies members 16 KiB at a time by default
            with tarfile.TarFile(fileobj=f, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_CHUNK) as tar:
                for name, data in ((mf.NAME, manifest), (mf.SIGNATURE, signature)):
                    tar.addfile(_info(name, len(data)), io.BytesIO(data))
                for m in members:
                    with open(staging / m.path, "rb") as src:
                        tar.addfile(_info(m.path, m.size), _Counting(src, advance))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise BackupError(f"cannot write {out}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(out.parent)


def read(archive: Path, staging: Path, trusted: list[keys.PublicKey], advance: Advance) -> mf.Manifest:
    """Verify `archive` completely while staging its members under `staging`; returns its manifest."""
    try:
        with open(archive, "rb") as f, tarfile.open(fileobj=f, mode="r|", bufsize=_CHUNK) as tar:
            manifest = _head(tar, trusted)
            check_space(staging, sum(m.size for m in manifest.members))
            wanted = {m.path: m for m in manifest.members}
            while (info := tar.next()) is not None:  # iterating would yield the head again
                m = wanted.pop(sealed.safe_path(info.name), None)
                if m is None:
                    raise BackupError(f"the archive holds {info.name!r}, which its manifest does not list")
                if not info.isreg():
                    raise BackupError(f"the archive member {info.name!r} is not a regular file")
                if info.size != m.size:
                    raise BackupError(f"the archive member {m.path} has {info.size} bytes, its manifest says {m.size}")
                _stage(tar.extractfile(info), staging / m.path, m, advance)
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


def _stage(src: IO[bytes] | None, dest: Path, member: mf.Member, advance: Advance) -> None:
    assert src is not None  # a regular file
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(dest, "xb") as out:
        os.fchmod(out.fileno(), 0o600)
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            advance(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != member.sha256:
        raise BackupError(
            f"the archive member {member.path} does not match its SHA-256 in the manifest (tampered or damaged)"
        )


def check_space(folder: Path, need: int, what: str = "the restore") -> None:
    """Fail before writing anything when `folder`'s file system has less than `need` bytes free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise BackupError(f"not enough space in {folder}: {what} needs {need >> 20} MiB, {free >> 20} MiB are free")


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uname, info.gname = size, 0o600, "", ""
    return info


class _Counting(io.RawIOBase):
    """A file that reports what is read from it (tarfile copies members through `read`)."""

    def __init__(self, src: IO[bytes], advance: Advance) -> None:
        self._src, self._advance = src, advance

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self._advance(len(data))
        return data
