"""Consistent copies of a SQLite database while it is in use, with the standard library only.

The installer (which runs before any virtual environment exists) snapshots the database before an upgrade,
and `appliance backup` archives it while the appliance serves; both need the same copy, and neither may
import SQLAlchemy for it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def sqlite_backup(src: Path, dest: Path, *, durable: bool = True) -> None:
    """A consistent copy of the SQLite database `src` in `dest`, taken while others keep writing.

    SQLite's online backup API copies one committed state. It runs as one step: copied in several, a write
    by another connection between steps restarts the copy from the start, which under steady load may never
    finish; in one step it is a single read transaction, and in WAL mode writers go on meanwhile. `dest` is
    one self-contained file (rollback journal, no WAL beside it). Not `durable`: `dest` is not fsynced, for a
    copy that is read once and removed (a backup's staged snapshot), whose pages then need never reach the disk.
    """
    dest.unlink(missing_ok=True)
    a, b = sqlite3.connect(src), sqlite3.connect(dest)
    try:
        if not durable:
            b.execute("PRAGMA synchronous=OFF")
        a.backup(b)
        b.execute("PRAGMA journal_mode=DELETE")
    finally:
        a.close()
        b.close()
