"""Verifying in processes gives the verdict of one pass, word for word, whatever was tampered with and wherever
the stretches split the log (issue 30, part 3): random tampering at random seqs, random stretch lengths."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.audit import AuditLog, parallel
from appliance.audit.chain import ROW_COLUMNS, canonical, link
from tests.audit.conftest import request_event

RECORDS = 40


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A SQLite log of 40 records with a checkpoint every 10 (and its key and witness), copied per example."""
    from appliance import db

    folder = tmp_path_factory.mktemp("pristine")
    db.upgrade(f"sqlite:///{folder / 'audit.db'}")
    with AuditLog(f"sqlite:///{folder / 'audit.db'}", folder / "keys" / "audit.key", 10, 3600) as log:
        for i in range(RECORDS):
            log.append(request_event(i))
        assert log.verify().ok
    return folder


def _tamper(path: Path, kind: str, seq: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    if kind == "edit":
        conn.execute("UPDATE audit_records SET action = 'deny' WHERE seq = ?", (seq,))
    elif kind == "delete":
        conn.execute("DELETE FROM audit_records WHERE seq = ?", (seq,))
    elif kind == "swap" and seq < RECORDS:
        for a, b in ((seq, -1), (seq + 1, seq), (-1, seq + 1)):
            conn.execute("UPDATE audit_records SET seq = ? WHERE seq = ?", (b, a))
    elif kind == "rehash":  # its own hash made to match: the next record's link breaks instead
        row = conn.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM audit_records WHERE seq = ?", (seq,)).fetchone()
        at = ROW_COLUMNS.index("event")
        fixed = link(row[-2], canonical([*row[:at], "forged", *row[at + 1 : -2]]))
        conn.execute("UPDATE audit_records SET event = 'forged', hash = ? WHERE seq = ?", (fixed, seq))
    elif kind == "uncheckpoint":
        conn.execute(
            "DELETE FROM audit_checkpoints WHERE seq = (SELECT min(seq) FROM audit_checkpoints WHERE seq >= ?)", (seq,)
        )
    conn.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tampering=st.lists(
        st.tuples(st.sampled_from(["edit", "delete", "swap", "rehash", "uncheckpoint"]), st.integers(1, RECORDS)),
        max_size=3,
    ),
    span=st.integers(1, 15),
    expect=st.none() | st.integers(1, RECORDS + 5),
)
def test_processes_give_the_verdict_of_one_pass(pristine, tmp_path, tampering, span, expect):
    work = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example: hypothesis reuses tmp_path
    shutil.copytree(pristine, work, dirs_exist_ok=True)
    for kind, seq in tampering:
        _tamper(work / "audit.db", kind, seq)
    head = None if expect is None else (expect, "0" * 64)
    with AuditLog(f"sqlite:///{work / 'audit.db'}", work / "keys" / "audit.key", 10, 3600) as log:
        one_pass = log.verify(expect_head=head)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(parallel, "SPAN", span)
            split = log.verify(expect_head=head, workers=2)
    assert split == one_pass
    assert split.ok or tampering or expect is not None
