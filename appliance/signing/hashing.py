"""Parallel, streaming SHA-256 over files and shards of files, optionally copying while hashing.

Threads, not processes: hashlib and file reads release the GIL, so N threads keep N cores busy with no
pickling or extra copies. Each worker owns one reusable buffer (memory is workers x CHUNK), and each byte
is read exactly once: when importing, the bytes written to the store are the very bytes that were hashed,
so there is no window between checking a file and copying it. When loading, `HeldFiles` closes the same
window: the files are opened once, hashed through those descriptors and loaded through them too.

`Ahead` starts hashing a folder's files before the signature that says what they must be is checked, so a
verifying command's start-up (loading the key library, checking the signature) overlaps the hashing instead
of preceding it; its digests are used only once a verified manifest names exactly the files it hashed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

AT_FDCWD, AT_SYMLINK_FOLLOW, AT_EMPTY_PATH = -100, 0x400, 0x1000
CHUNK = 1024 * 1024  # fits in L2: the copy from the page cache is still hot when hashed

Progress = Callable[[int], None]


@dataclass(frozen=True, order=True)
class Piece:
    """A byte range of one file: a whole file (`end` = its size) or one shard of it."""

    path: str  # POSIX path relative to the folder
    start: int
    end: int


def hash_pieces(
    root: Path,
    pieces: Iterable[Piece],
    *,
    workers: int,
    progress: Progress | None = None,
    copy_to: Path | None = None,
    held: HeldFiles | None = None,
    ahead: Ahead | None = None,
) -> dict[Piece, str]:
    """SHA-256 hex of every piece, largest first so the pool drains evenly.

    With `copy_to`, each piece is also written at the same offset of the same relative path there (files
    must already exist there with their final size; see `preallocate`). With `held`, files are read through
    its descriptors instead of being opened by path. With `ahead`, its digests when it hashed exactly these
    pieces and nothing is to be copied or held; else it is stopped and the pieces are hashed here.
    """
    pieces = list(pieces)
    if ahead is not None:
        done = ahead.digests(pieces) if copy_to is None and held is None else None
        if done is not None:
            return done
        ahead.stop()
    return _Hashing(root, pieces, workers=workers, progress=progress, copy_to=copy_to, held=held).result()


class _Hashing:
    """`hash_pieces` under way in its own threads: `result()` waits for it, `stop()` ends it early."""

    def __init__(
        self,
        root: Path,
        pieces: Iterable[Piece],
        *,
        workers: int,
        progress: Progress | None = None,
        copy_to: Path | None = None,
        held: HeldFiles | None = None,
    ) -> None:
        self._stopped = threading.Event()
        self._ordered = sorted(pieces, key=lambda p: p.end - p.start, reverse=True)
        fds = held.fds if held is not None else None
        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sha256")
        self._futures: list[Future[str]] = [
            pool.submit(_hash_piece, root, p, progress, copy_to, fds, self._stopped) for p in self._ordered
        ]
        pool.shutdown(wait=False)  # its threads end once the pieces are done

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def result(self) -> dict[Piece, str]:
        try:
            return {p: f.result() for p, f in zip(self._ordered, self._futures)}
        finally:
            self.stop()  # one piece failed: the others need not run on

    def stop(self) -> None:
        self._stopped.set()
        for f in self._futures:
            f.cancel()


class Ahead:
    """Whole files hashed before the signature is checked (see the module's docstring): nothing here is
    trusted until `digests` is asked for the pieces a verified manifest expects, and any mismatch (a file
    added, removed or resized meanwhile; a manifest of shards) sends the caller back to hashing as usual."""

    def __init__(self, root: Path, sizes: Mapping[str, int], *, workers: int, progress: Progress | None) -> None:
        self.pieces = frozenset(Piece(p, 0, s) for p, s in sizes.items())
        self._hashing = _Hashing(root, self.pieces, workers=workers, progress=progress)

    def digests(self, pieces: Iterable[Piece]) -> dict[Piece, str] | None:
        """The digests when exactly these pieces were hashed, to their end; else None (and hashing stops)."""
        if self._hashing.stopped or frozenset(pieces) != self.pieces:
            self.stop()
            return None
        return self._hashing.result()

    def __enter__(self) -> Ahead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()  # a failed verification does not wait for the rest of the hashing

    def stop(self) -> None:
        """End hashing early (the verification failed first); pieces under way stop at their next chunk."""
        self._hashing.stop()


class HeldFiles:
    """A folder's files opened once, so that what is hashed and what is loaded are the same inodes: a file
    replaced by rename after the check is not the one loaded. With `link_dir`, each is also given a name
    there at once (a hard link made from the descriptor), for loaders that open files by name.

    `changed` then tells whether any may have been written in place since. Size and mtime are not enough
    (the owner can set mtime back); ctime moves on every write and nobody can set it, but it also moves
    whenever a link to the file is made or removed, so a write hidden behind a new link (or a rename over
    the store's name) leaves nothing but a moved ctime and link count. Every one of the four must therefore
    be unchanged. The stats are taken once all of this holder's links exist, so its own links are in them;
    no other link may come or go while held, which the caller ensures for its own other loads (the store
    makes them take turns)."""

    def __init__(self, link_dir: Path | None = None) -> None:
        self.link_dir = link_dir
        self.fds: dict[str, int] = {}
        self._stats: dict[str, tuple[int, int, int, int]] = {}

    def open(self, root: Path, sizes: Mapping[str, int]) -> None:
        for rel in sizes:
            fd = os.open(root / rel, os.O_RDONLY | os.O_NOFOLLOW)
            self.fds[rel] = fd
            if self.link_dir is not None:
                (self.link_dir / rel).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                link_inode(fd, self.link_dir / rel)
        for rel, size in sizes.items():  # after every link: two names of one inode would move each other's
            self._stats[rel] = _identity(self.fds[rel])
            if self._stats[rel][0] != size:
                raise OSError(f"{rel} changed size while being opened")

    def changed(self) -> str | None:
        """The first file whose size, mtime, ctime or link count moved since it was opened, if any."""
        return next((rel for rel, fd in self.fds.items() if _identity(fd) != self._stats[rel]), None)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _identity(fd: int) -> tuple[int, int, int, int]:
    """What a write (or a link that could hide one) moves: size, mtime, ctime, link count."""
    st = os.fstat(fd)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink


def preallocate(dst_root: Path, sizes: dict[str, int]) -> None:
    """Create every destination file at its final size so shards can be written in any order."""
    for rel, size in sizes.items():
        dst = dst_root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "wb") as f:
            f.truncate(size)


def link_inode(fd: int, dest: Path) -> None:
    """A new name for the file open as `fd` (linkat with AT_EMPTY_PATH, else through /proc/self/fd): the
    inode that was opened, whatever its old name points to by now."""
    import ctypes  # here only: a verification starts hashing sooner without it

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.linkat(fd, b"", AT_FDCWD, os.fsencode(dest), AT_EMPTY_PATH) == 0:
        return
    if libc.linkat(AT_FDCWD, f"/proc/self/fd/{fd}".encode(), AT_FDCWD, os.fsencode(dest), AT_SYMLINK_FOLLOW) == 0:
        return
    err = ctypes.get_errno()
    raise OSError(err, os.strerror(err), str(dest))


def _hash_piece(
    root: Path,
    piece: Piece,
    progress: Progress | None,
    copy_to: Path | None,
    fds: Mapping[str, int] | None,
    stopped: threading.Event,
) -> str:
    h = hashlib.sha256()
    buf = bytearray(min(CHUNK, max(piece.end - piece.start, 1)))
    view = memoryview(buf)
    src = fds[piece.path] if fds is not None else os.open(root / piece.path, os.O_RDONLY | os.O_NOFOLLOW)
    dst = os.open(copy_to / piece.path, os.O_WRONLY | os.O_NOFOLLOW) if copy_to is not None else None
    try:
        pos = piece.start
        while pos < piece.end and not stopped.is_set():
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
        if fds is None:
            os.close(src)
        if dst is not None:
            os.close(dst)
    return h.hexdigest()


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n
