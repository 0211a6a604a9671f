"""Fail closed: when the database cannot take a record, `append` raises, nothing is half-written, and after
recovery the chain goes on and verifies."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from appliance import db
from appliance.audit import AuditLog, AuditUnavailable
from tests.audit.conftest import PG_URL, pg_admin, pg_start, pg_stop, request_event


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, so the disk can really fill up or turn read-only."""
    mount = tmp_path / "fs"
    mount.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def _assert_recovers(log: AuditLog, committed: int) -> None:
    """Exactly the acknowledged records are there, and the chain continues and verifies."""
    assert log.count() == committed
    record = log.append(request_event(10_000))
    assert record.seq == committed + 1
    report = log.verify()
    assert report.ok and report.records == committed + 1, report.problems


def test_disk_full(small_fs: Path, key_path: Path):
    url = f"sqlite:///{small_fs / 'audit.db'}"
    db.upgrade(url)
    with AuditLog(url, key_path, checkpoint_every=50, checkpoint_seconds=3600) as log:
        committed = len([log.append(request_event(i)) for i in range(20)])
        filler = small_fs / "filler"
        with filler.open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        with pytest.raises(AuditUnavailable, match="full"):
            for i in range(100_000):
                log.append(request_event(i, detail={"pad": "x" * 4000}))
                committed += 1
        filler.unlink()
        _assert_recovers(log, committed)


def test_sqlite_read_only(small_fs: Path, key_path: Path):
    url = f"sqlite:///{small_fs / 'audit.db'}"
    db.upgrade(url)
    with AuditLog(url, key_path) as log:  # closed first: files open for writing keep a mount read-write
        committed = len([log.append(request_event(i)) for i in range(5)])
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        with pytest.raises(AuditUnavailable):
            with AuditLog(url, key_path) as log:
                log.append(request_event(99))
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    with AuditLog(url, key_path) as log:
        _assert_recovers(log, committed)


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="no PostgreSQL server (APPLIANCE_TEST_PG_URL is unset)")
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_read_only(database_url: str, key_path: Path):
    name = database_url.rsplit("/", 1)[1]
    with AuditLog(database_url, key_path) as log:
        committed = len([log.append(request_event(i)) for i in range(5)])
    with pg_admin() as conn:  # applies to sessions opened from now on
        conn.execute(text(f"ALTER DATABASE {name} SET default_transaction_read_only = on"))
    try:
        with AuditLog(database_url, key_path) as log, pytest.raises(AuditUnavailable, match="read-only"):
            log.append(request_event(99))
    finally:
        with pg_admin() as conn:
            conn.execute(text(f"ALTER DATABASE {name} RESET default_transaction_read_only"))
    with AuditLog(database_url, key_path) as log:
        _assert_recovers(log, committed)


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("APPLIANCE_TEST_PG_DATA"), reason="no PostgreSQL server to stop")
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_stopped_mid_run(database_url: str, key_path: Path):
    with AuditLog(database_url, key_path) as log:
        committed = len([log.append(request_event(i)) for i in range(5)])
        pg_stop()
        try:
            with pytest.raises(AuditUnavailable):
                log.append(request_event(99))
            with pytest.raises(AuditUnavailable):
                log.query()
        finally:
            pg_start()
        _assert_recovers(log, committed)
