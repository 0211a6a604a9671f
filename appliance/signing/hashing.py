"""Parallel, streaming SHA-256 over files and shards of files, optionally copying while hashing.

Threads, not processes: hashlib and file reads release the GIL, so N threads keep N cores busy with no
pickling or extra copies. Each worker owns one reusable buffer (memory is workers x CHUNK), and each byte
is read exactly once: when importing, the bytes written to the store are the very bytes that were hashed,
so there is no window between checking a file and copying it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1024 * 1024  # fits in L2: the copy from the page cache is still hot when hashed

Progress = Callable[[int], None]


@dataclass(frozen=True, order=True)
class Piece:
    """A byte range of one file: a whole file (`end` = its size) or one shard of it."""

    path: str  # POSIX path relative to the folder
    start: int
    end: int


def hash_pieces(root: Path, pieces: Iterable[Piece], *, workers: int, progress: Progress | None = None,
                copy_to: Path | None = None) -> dict[Piece, str]:
    """SHA-256 hex of every piece, largest first so the pool drains evenly.

    With `copy_to`, each piece is also written at the same offset of the same relative path there (files
    must already exist there with their final size; see `preallocate`).
    """
    ordered = sorted(pieces, key=lambda p: p.end - p.start, reverse=True)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sha256") as pool:
        digests = list(pool.map(lambda p: _hash_piece(root, p, progress, copy_to), ordered))
    return dict(zip(ordered, digests))


def preallocate(dst_root: Path, sizes: dict[str, int]) -> None:
    """Create every destination file at its final size so shards can be written in any order."""
    for rel, size in sizes.items():
        dst = dst_root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "wb") as f:
            f.truncate(size)


def _hash_piece(root: Path, piece: Piece, progress: Progress | None, copy_to: Path | None) -> str:
    h = hashlib.sha256()
    buf = bytearray(min(CHUNK, max(piece.end - piece.start, 1)))
    view = memoryview(buf)
    src = os.open(root / piece.path, os.O_RDONLY | os.O_NOFOLLOW)
    dst = os.open(copy_to / piece.path, os.O_WRONLY | os.O_NOFOLLOW) if copy_to is not None else None
    try:
        pos = piece.start
        while pos < piece.end:
            n = os.preadv(src, [view[: min(len(buf), piece.end - pos)]], pos)
            if n == 0:
                break  # file shorter than its manifest says: the digest will not match
            h.update(view[:n])
            if dst is not None:
                _pwrite_all(dst, view[:n], pos)
            pos += n
            if progress is not None:
                progress(n)
        if dst is not None:
            os.fsync(dst)
    finally:
        os.close(src)
        if dst is not None:
            os.close(dst)
    return h.hexdigest()


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n
