"""Files written whole or not at all (a temporary file beside the target, fsynced, then renamed over it), and small
files an operator names, read with a bound."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: Path, *, binary: bool = False, mode: int = 0o600,
                 newline: str | None = None) -> Iterator[IO[Any]]:
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
