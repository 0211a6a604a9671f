"""Replayed, reordered or foreign witness lines cannot hide deleted audit records (issue 22, defect 1).

An insider who can write the database and append to the witness (not sign) deletes the newest records and
their checkpoints, then appends a line that would excuse the loss: a copy of an earlier restore line, a copy
of an ordinary checkpoint, or another appliance's line. Each attempt fails `appliance audit verify`.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.backup.conftest import Site, make_site
from tests.conftest import one_line_error


def _witness(site: Site) -> Path:
    return site.data / "keys" / "audit-witness.jsonl"


def _url(site: Site) -> str:
    return site.database_url or f"sqlite:///{site.data / 'appliance.db'}"


def _delete_after(site: Site, seq: int) -> None:
    """The insider's edit: the records after `seq` and every checkpoint over them, gone."""
    engine = create_engine(_url(site), poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_records WHERE seq > :s"), {"s": seq})
        conn.execute(text("DELETE FROM audit_checkpoints WHERE seq > :s"), {"s": seq})
    engine.dispose()


def _restored(site: Site, tmp_path: Path) -> int:
    """One real restore, then the log goes on: returns the restored head's seq."""
    archive = tmp_path / "backup.tar"
    site.cli("backup", "--out", str(archive), check=True)
    head = site.head()[0]
    site.cli("keys", "create", "--name", "before-restore", "--role", "user", check=True)
    site.cli("restore", str(archive), "--force", check=True)
    for i in range(3):  # each command closes the log with a checkpoint: the witness gains a line each
        site.cli("keys", "create", "--name", f"after-{i}", "--role", "user", check=True)
    site.cli("audit", "verify", check=True)
    return head


def test_a_replayed_restore_line_does_not_hide_deleted_records(site: Site, tmp_path: Path):
    restored = _restored(site, tmp_path)
    lines = _witness(site).read_text().splitlines()
    restore_line = next(line for line in lines if '"kind":"restore"' in line)
    _delete_after(site, restored + 2)
    with _witness(site).open("a") as f:
        f.write(restore_line + "\n")
    error = one_line_error(site.cli("audit", "verify"))
    assert "replayed" in error, error


def test_a_replayed_ordinary_line_is_a_failure(site: Site, tmp_path: Path):
    site.cli("keys", "create", "--name", "one", "--role", "user", check=True)
    site.cli("keys", "create", "--name", "two", "--role", "user", check=True)
    first = _witness(site).read_text().splitlines()[0]
    with _witness(site).open("a") as f:
        f.write(first + "\n")
    assert "repeats line 1" in one_line_error(site.cli("audit", "verify"))


def test_another_appliances_line_is_refused(site: Site, tmp_path: Path):
    other = make_site(tmp_path / "other")  # its own audit key: its lines are signed by a key not trusted here
    foreign = _witness(other).read_text().splitlines()[-1]
    with _witness(site).open("a") as f:
        f.write(foreign + "\n")
    assert "untrusted key" in one_line_error(site.cli("audit", "verify"))
