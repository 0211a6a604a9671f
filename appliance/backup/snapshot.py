"""The database as one consistent snapshot taken while the appliance serves, and loading one back.

SQLite: the online backup API (appliance/sqlitecopy.py), one read transaction; the head is then read from
the copy, so it is exactly the snapshot's. PostgreSQL: a REPEATABLE READ transaction exports its snapshot
(`pg_export_snapshot`), the head is read inside it, and `pg_dump --snapshot` dumps that very state, so the
head in the manifest and the dump cannot disagree however many records land meanwhile. Neither snapshot is
fsynced: it is read once into the archive (which is) and removed. The dump is plain SQL with `--clean
--if-exists` and is loaded by `psql --single-transaction`: the whole database is replaced in one
transaction, or not at all.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from appliance.backup.errors import BackupError
from appliance.backup.manifest import Database, Head
from appliance.db import make_engine, sqlite_path
from appliance.sqlitecopy import sqlite_backup

SQLITE_MEMBER, PG_MEMBER = "db/appliance.db", "db/appliance.sql"
_HEAD_SQL = "SELECT seq, hash, ts FROM audit_records ORDER BY seq DESC LIMIT 1"


def kind(url: str) -> Database:
    return "sqlite" if sqlite_path(url) is not None else "postgresql"


def take(url: str, staging: Path) -> tuple[str, Head]:
    """Snapshot the database at `url` into `staging`; returns (member path, audit head of the snapshot)."""
    path = sqlite_path(url)
    if path is not None:
        if not path.exists():
            raise BackupError(f"the database {path} does not exist")
        dest = staging / SQLITE_MEMBER
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            sqlite_backup(path, dest, durable=False)  # archived, then removed (archive.py)
            return SQLITE_MEMBER, sqlite_head(dest)
        except sqlite3.Error as exc:
            raise BackupError(f"cannot snapshot {path}: {exc}") from exc
    return PG_MEMBER, _pg_dump(url, staging / PG_MEMBER)


def sqlite_head(path: Path) -> Head:
    """The audit head of a SQLite file (seq 0 for an empty log)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute(_HEAD_SQL).fetchone()
    finally:
        conn.close()
    return Head(seq=row[0], hash=row[1], ts=row[2]) if row else Head(seq=0, hash="0" * 64, ts=None)


def load_postgres(url: str, dump: Path) -> None:
    """Replace the PostgreSQL database at `url` by `dump`, in one transaction."""
    _run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", str(dump)], url, "psql")


def _pg_dump(url: str, dest: Path) -> Head:
    dest.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
                row = conn.execute(text(_HEAD_SQL)).first()
                # the exported snapshot lives as long as this transaction: dump while it is open
                _run(
                    [
                        "pg_dump",
                        "--format=plain",
                        "--clean",
                        "--if-exists",
                        "--no-owner",
                        "--no-privileges",
                        "--no-sync",  # archived, then removed (archive.py): its fsync would be wasted
                        f"--snapshot={snapshot}",
                        "-f",
                        str(dest),
                    ],
                    url,
                    "pg_dump",
                )
    finally:
        engine.dispose()
    return Head(seq=row[0], hash=row[1], ts=row[2]) if row else Head(seq=0, hash="0" * 64, ts=None)


def _run(argv: list[str], url: str, tool: str) -> None:
    """Run a PostgreSQL client with the URL as libpq arguments (the password in the environment, not argv)."""
    if shutil.which(argv[0]) is None:
        raise BackupError(f"{tool} is not installed (PostgreSQL client tools are needed for this database)")
    parsed = make_url(url)
    env = {**os.environ, "PGPASSWORD": parsed.password or os.environ.get("PGPASSWORD", "")}
    conninfo = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    proc = subprocess.run([*argv, "--dbname", conninfo], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise BackupError(f"{tool} failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
