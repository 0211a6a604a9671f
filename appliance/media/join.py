"""Joining a split file straight into its destination while each part is hashed.

No second copy and no temporary file of the whole size: parts are read once from the media, written at
their offset of `DEST.joining`, hashed part by part and as a whole, and the file takes its final name
only when every digest matched.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from appliance.media.manifest import MediaError, MediaFile
from appliance.signing.hashing import CHUNK


def join_parts(media: Path, entry: MediaFile, dest: Path) -> None:
    if dest.is_file() and dest.stat().st_size == entry.size and sha256_file(dest) == entry.sha256:
        return  # already joined by an earlier (interrupted) run
    tmp = dest.with_name(dest.name + ".joining")
    dest.parent.mkdir(parents=True, exist_ok=True)
    whole = hashlib.sha256()
    buf = bytearray(CHUNK)
    with open(tmp, "wb") as out:
        for part in entry.parts:
            h = hashlib.sha256()
            with open(media / part.path, "rb") as f:
                while n := f.readinto(buf):
                    view = memoryview(buf)[:n]
                    h.update(view)
                    whole.update(view)
                    out.write(view)
            if h.hexdigest() != part.sha256:
                tmp.unlink()
                raise MediaError(f"part {part.path} does not match its SHA-256 (changed or corrupt)")
        out.flush()
        os.fsync(out.fileno())
    if whole.hexdigest() != entry.sha256:
        tmp.unlink()
        raise MediaError(f"file {entry.path} joined from its parts does not match its SHA-256")
    os.replace(tmp, dest)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
