"""Backup and restore of a 1M-record SQLite appliance against what the same work costs without the appliance.

The log is built by bench/audit's bulk generator (valid chained records, a checkpoint per 1,000 in the
database and the witness). Then, on the same disk, several rounds, each running every side in turn
(interleaved, so a change in the machine's load hits all of them alike); the ratios are per round, and the
median round's is reported:
- backup: `appliance backup`'s code in-process (online snapshot, staging, each member hashed while it is
  archived, signing, the archive fsynced) against SQLite's own online backup of the same database (what
  `sqlite3 .backup` runs, fsynced) and a plain file copy;
- restore: `appliance restore`'s code (the archive read once while hashing and staging, the staged chain
  verified against its checkpoints and witness in `hash_workers` processes, the restore checkpoint signed,
  the journaled switch) against the least a restore that verifies must do: a plain copy of the database
  back (fsynced), its SHA-256 once, and the same parallel chain verify of the copy. The archive read alone
  (hash + stage) is reported too.
Every file is written back and dropped from the page cache before it is read. MB are 10^6 bytes of the
database file. Writes bench/results/backup.txt.

Usage: flock /tmp/heavy.lock .venv/bin/python bench/backup/run.py [--records 1000000] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from appliance import db
from appliance.audit.witness import FILE as WITNESS_FILE
from appliance.backup import archive, snapshot
from appliance.backup.create import Backup
from appliance.backup.restore import restore, verify_staged_chain
from appliance.config import Settings
from appliance.signing import keys
from bench.audit.run import build_log

RESULTS = Path(__file__).resolve().parents[1] / "results" / "backup.txt"


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _drop(path: Path) -> None:
    """Write back and forget `path` from the page cache so every side starts cold alike."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as a, open(dest, "wb") as b:
        shutil.copyfileobj(a, b, 1 << 20)
        b.flush()
        os.fsync(b.fileno())


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _sqlite_backup(src: Path, dest: Path) -> None:
    dest.unlink(missing_ok=True)
    a, b = sqlite3.connect(src), sqlite3.connect(dest)
    a.backup(b)
    a.close()
    b.close()
    _drop(dest)


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="Folder for the data (default: a temp one).")
    args = parser.parse_args()
    loads = [_load()]
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
        mb = dbfile.stat().st_size / 1e6
        out, back = folder / "backup.tar", folder / "back"
        key = keys.load_private_key(settings.audit_key_path)
        trust = [key.public_key()]
        witness = folder / "witness" / WITNESS_FILE  # as it was when copy.db was copied
        witness.parent.mkdir()
        manifest = None

        def ours_backup() -> None:
            nonlocal manifest
            staging = Path(tempfile.mkdtemp(dir=folder))
            job = Backup(settings, staging)
            job.stage(None)
            manifest = job.write(out, lambda n: None)
            shutil.rmtree(staging)

        def ours_restore() -> None:
            restore(settings, out, force=True, passphrase=None, trust=[], progress=lambda _d, _t: lambda n: None)

        def peer_restore() -> None:
            """A plain copy back, its hash once, the same parallel chain verify."""
            assert manifest is not None
            staged = back / snapshot.SQLITE_MEMBER
            _copy(folder / "copy.db", staged)
            _sha256(staged)
            progress = lambda _d, _t: lambda n: None  # noqa: E731
            verify_staged_chain(manifest, back, key, witness, progress, settings.hash_workers)

        rounds = []
        for r in range(args.rounds):
            _drop(dbfile)
            t = {"ours": _timed(ours_backup)}
            _drop(dbfile)
            t["sqlite"] = _timed(lambda: _sqlite_backup(dbfile, folder / "peer.db"))
            _drop(dbfile)
            t["copy"] = _timed(lambda: _copy(dbfile, folder / "copy.db"))
            shutil.copyfile(settings.audit_witness_dir / WITNESS_FILE, witness)
            _drop(out)
            t["read"] = _timed(lambda: archive.read(out, folder / "read-only", trust, lambda n: None))
            shutil.rmtree(folder / "read-only")
            _drop(out)
            t["restore"] = _timed(ours_restore)
            _drop(folder / "copy.db")
            t["peer"] = _timed(peer_restore)
            shutil.rmtree(back)
            rounds.append(t)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()), flush=True)
        loads.append(_load())

    def med(key: str) -> float:
        return statistics.median(t[key] for t in rounds)

    def ratio(a: str, b: str) -> float:
        return statistics.median(t[a] / t[b] for t in rounds)

    lines = [
        f"backup bench: {args.records:,} audit records, SQLite database {mb:,.0f} MB, archive uncompressed, "
        f"{args.rounds} interleaved rounds (medians), {os.cpu_count()} cores, load average {loads[0]} -> {loads[1]}",
        f"backup: appliance {mb / med('ours'):,.0f} MB/s ({med('ours'):.2f} s) | sqlite online backup "
        f"{mb / med('sqlite'):,.0f} MB/s ({med('sqlite'):.2f} s; ours {ratio('ours', 'sqlite'):.2f}x its time, "
        f"goal <= 2x) | file copy {mb / med('copy'):,.0f} MB/s (ours {ratio('ours', 'copy'):.2f}x)",
        f"restore: appliance {mb / med('restore'):,.0f} MB/s ({med('restore'):.2f} s, chain verified in "
        f"{settings.hash_workers} processes) | copy back + SHA-256 + the same chain verify {med('peer'):.2f} s "
        f"(ours {ratio('restore', 'peer'):.2f}x its time, goal <= 2x) | archive read, hashed and staged alone "
        f"{mb / med('read'):,.0f} MB/s ({med('read'):.2f} s)",
    ]
    print("\n".join(lines), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
