"""Backup and restore throughput (MB/s) of a 1M-record SQLite appliance, beside plain copies of the same file.

The log is built by bench/audit's bulk generator (valid chained records, a checkpoint per 1,000 in the
database and the witness). Then, on the same disk in the same run:
- backup: `appliance backup`'s code in-process (online snapshot, staging, manifest hashing, signing, the
  archive written and fsynced) vs the peers SQLite's own online backup (what `sqlite3 .backup` runs) and a
  plain file copy of the database;
- restore: `appliance restore`'s code (the archive read once while hashing and staging, the staged chain
  verified against its checkpoints and witness, the restore checkpoint signed, the journaled switch) vs a
  plain file copy back; the archive read alone (hash + stage, no chain verification) is reported too, since
  verifying 1M records is what a restore spends most on, by design: nothing replaces the data unverified.
MB are 10^6 bytes of the database file. Writes bench/results/backup.txt.

Usage: flock /tmp/heavy.lock .venv/bin/python bench/backup/run.py [--records 1000000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from appliance import db
from appliance.backup import archive
from appliance.backup.create import Backup
from appliance.backup.restore import restore
from appliance.config import Settings
from appliance.signing import keys
from bench.audit.run import build_log

RESULTS = Path(__file__).resolve().parents[1] / "results" / "backup.txt"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _drop(path: Path) -> None:
    """Write back and forget `path` from the page cache so every side starts cold-ish alike."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _copy(src: Path, dest: Path) -> None:
    with open(src, "rb") as a, open(dest, "wb") as b:
        shutil.copyfileobj(a, b, 1 << 20)
        b.flush()
        os.fsync(b.fileno())


def _sqlite_backup(src: Path, dest: Path) -> None:
    a, b = sqlite3.connect(src), sqlite3.connect(dest)
    a.backup(b)
    a.close()
    b.close()
    _drop(dest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="Folder for the data (default: a temp one).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        settings = Settings(data_dir=folder / "var", policy_dir=folder / "policies")
        shutil.copytree(Path(__file__).resolve().parents[2] / "policies", settings.policy_dir)
        dbfile = folder / "var" / "appliance.db"
        dbfile.parent.mkdir(parents=True)
        url = f"sqlite:///{dbfile}"
        db.upgrade(url)
        start = time.perf_counter()
        build_log(url, dbfile, settings.keys_dir, args.records)
        print(f"built {args.records:,} records in {time.perf_counter() - start:.0f} s", flush=True)
        size = dbfile.stat().st_size
        mb = size / 1e6
        out = folder / "backup.tar"

        def ours_backup() -> None:
            staging = Path(tempfile.mkdtemp(dir=folder))
            job = Backup(settings, staging)
            job.stage(None)
            job.write(out, lambda n: None)
            shutil.rmtree(staging)

        _drop(dbfile)
        t_ours = _timed(ours_backup)
        _drop(dbfile)
        t_sqlite = _timed(lambda: _sqlite_backup(dbfile, folder / "peer.db"))
        _drop(dbfile)
        t_copy = _timed(lambda: _copy(dbfile, folder / "copy.db"))

        trust = [keys.load_public_key(settings.keys_dir / "audit.pub")]
        _drop(out)
        t_read = _timed(lambda: archive.read(out, folder / "read-only", trust, lambda n: None))
        shutil.rmtree(folder / "read-only")
        _drop(out)
        t_restore = _timed(
            lambda: restore(
                settings, out, force=True, passphrase=None, trust=[], progress=lambda _d, _t: lambda n: None
            )
        )
        _drop(folder / "copy.db")
        t_copy_back = _timed(lambda: _copy(folder / "copy.db", folder / "back.db"))

    lines = [
        f"backup bench: {args.records:,} audit records, SQLite database {mb:,.0f} MB, archive uncompressed",
        f"backup: appliance {mb / t_ours:,.0f} MB/s ({t_ours:.1f} s) | sqlite online backup {mb / t_sqlite:,.0f} MB/s "
        f"(ratio {t_ours / t_sqlite:.2f}x the time) | file copy {mb / t_copy:,.0f} MB/s (ratio {t_ours / t_copy:.2f}x)",
        f"restore: appliance {mb / t_restore:,.0f} MB/s ({t_restore:.1f} s, chain verified) | archive read, hashed "
        f"and staged alone {mb / t_read:,.0f} MB/s ({t_read:.1f} s) | file copy back {mb / t_copy_back:,.0f} MB/s "
        f"(ratio {t_restore / t_copy_back:.1f}x the time; read alone {t_read / t_copy_back:.2f}x)",
    ]
    print("\n".join(lines[1:]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
