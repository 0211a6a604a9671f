"""Files written whole or not at all (a temporary file beside the target, fsynced, then renamed over it), small
files an operator names, read with a bound, and folders another account owns, handled without following links."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(
    path: Path, *, binary: bool = False, mode: int = 0o600, newline: str | None = None
) -> Iterator[IO[Any]]:
    """Yield a file to write; `path` gets its content only if the block ends without an exception."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        f: IO[Any] = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline=newline)
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable: fsyncing the file alone does not."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_small(path: Path, limit: int) -> bytes:
    """The whole of a file an operator names (a key, a certificate, a manifest), at most `limit` bytes.

    The bound is on the bytes read, not on a stat before: /dev/zero, a pipe or a file still growing is refused
    with EFBIG instead of filling memory. Pipes are allowed, so `--passphrase-file <(...)` works."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return data


def real_dir(path: Path) -> None:
    """Make `path` a directory of its own (its parent must exist). A symlink in its place, planted by whoever
    owns the parent, is removed, never followed, so what a root process later cleans or writes below it
    stays below it."""
    try:
        os.mkdir(path)
        return
    except FileExistsError:
        pass
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        os.unlink(path)
        os.mkdir(path)
    elif not stat.S_ISDIR(mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open that never follows a final symlink: one in place of a file this process creates and owns
    (a lock file) is removed and the file made anew."""
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP or not flags & os.O_CREAT:
            raise
    os.unlink(path)
    return os.open(path, flags, mode)


def sweep(folder: Path, doomed: Callable[[str], bool] = lambda _: True) -> None:
    """Remove the entries of `folder` that `doomed` names, through a descriptor of the folder opened without
    following links: a link among them is removed itself, and nothing outside `folder` is ever touched
    (shutil.rmtree with dir_fd does not follow links below either)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name in os.listdir(fd):
            if not doomed(name):
                continue
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    shutil.rmtree(name, dir_fd=fd, ignore_errors=True)
                else:
                    os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
