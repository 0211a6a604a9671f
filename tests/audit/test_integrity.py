"""An insider with write access to the database, but not to the audit key or the witness, cannot make
`verify` pass: deleted tails, rewritten histories with their checkpoints deleted, gaps in the checkpoint
chain, and records left unsigned are all reported; nothing signs a forged history."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from appliance.audit import AuditLog, AuditTampered
from appliance.audit.chain import CHAIN_COLUMNS, ROW_COLUMNS, canonical, link
from appliance.audit.models import AuditCheckpointRow, AuditRecordRow
from tests.audit.conftest import request_event

R, C = AuditRecordRow, AuditCheckpointRow


@pytest.fixture
def log(database_url: str, key_path: Path):
    """30 records, checkpoints every 10, a closing one at the head, and the witness beside the key."""
    with AuditLog(database_url, key_path, checkpoint_every=10, checkpoint_seconds=3600) as first:
        for i in range(30):
            first.append(request_event(i))
    opened = AuditLog(database_url, key_path, checkpoint_every=10, checkpoint_seconds=3600)
    assert opened.verify().ok and opened.witness.path.exists()
    yield opened
    opened.close()


def _sql(log: AuditLog, *statements) -> None:
    with log.engine.begin() as conn:
        for stmt in statements:
            conn.execute(stmt)


def _checkpoint_seqs(log: AuditLog) -> list[int]:
    with log.engine.connect() as conn:
        return sorted(conn.execute(select(C.seq)).scalars())


def _rewrite_from(log: AuditLog, seq: int) -> None:
    """Edit record `seq` and recompute every hash after it, as someone without the key would."""
    with log.engine.begin() as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                select(*[getattr(R, c) for c in ROW_COLUMNS]).where(R.seq >= seq).order_by(R.seq)
            ).mappings()
        ]
        head = conn.execute(select(R.hash).where(R.seq == seq - 1)).scalar_one()
        rows[0]["content"] = "forged"
        for row in rows:
            row["prev_hash"] = head
            head = link(head, canonical([row[c] for c in CHAIN_COLUMNS]))
            conn.execute(
                update(R)
                .where(R.seq == row["seq"])
                .values(content=row["content"], prev_hash=row["prev_hash"], hash=head)
            )


def test_deleting_the_newest_record_is_detected(log: AuditLog):
    _sql(log, delete(R).where(R.seq == 30))
    report = log.verify()
    assert not report.ok and report.bad_seq == 30 and "missing" in report.reason


def test_deleting_the_newest_records_and_their_checkpoints_is_detected(log: AuditLog):
    _sql(log, delete(R).where(R.seq > 20), delete(C).where(C.seq > 20))
    report = log.verify()
    assert not report.ok and report.bad_seq == 21 and "witnessed" in report.reason


def test_a_rewritten_history_with_its_checkpoints_deleted_is_detected_and_never_signed(log: AuditLog):
    _rewrite_from(log, 2)
    _sql(log, delete(C).where(C.seq >= 2))
    report = log.verify()
    assert not report.ok and "witnessed" in report.reason
    before = _checkpoint_seqs(log)
    log.append(request_event(99))
    log.close()  # the closing checkpoint too: refused
    assert _checkpoint_seqs(log) == before
    from datetime import UTC, datetime

    with (
        AuditLog(log.engine.url.render_as_string(hide_password=False), log.key_path) as again,
        pytest.raises(AuditTampered, match="prune refused"),
    ):
        again.prune(datetime.now(UTC), min_retention_days=0, export_dir=None)


def test_a_checkpoint_deleted_from_the_middle_breaks_the_checkpoint_chain(log: AuditLog):
    middle = _checkpoint_seqs(log)[1]
    _sql(log, delete(C).where(C.seq == middle))
    log.witness.path.unlink()  # even without the witness
    report = log.verify()
    assert not report.ok and "checkpoint chain" in report.reason


def test_records_no_signature_covers_are_reported_and_fail_once_too_old(
    database_url: str, key_path: Path, log: AuditLog
):
    _sql(log, delete(C))
    log.witness.path.unlink()
    fresh = log.verify()
    assert fresh.uncovered == 30 and fresh.uncovered_since is not None  # written down either way
    with AuditLog(database_url, key_path, checkpoint_seconds=0.01, uncovered_grace_s=0) as strict:
        time.sleep(0.05)
        report = strict.verify()
    assert not report.ok and "covered by no signature" in report.reason


def test_the_tail_is_signed_within_about_a_second(database_url: str, tmp_path: Path):
    with AuditLog(database_url, tmp_path / "k" / "audit.key", checkpoint_every=1000, checkpoint_seconds=0.2) as quick:
        quick.append(request_event(1))
        deadline = time.monotonic() + 20
        while quick.verify().uncovered and time.monotonic() < deadline:
            time.sleep(0.1)
        report = quick.verify()
        assert report.ok and report.uncovered == 0 and report.witnessed >= 1


def test_csv_cells_that_start_like_formulas_are_neutralised(log: AuditLog, tmp_path: Path):
    for text in ('=HYPERLINK("http://x")', "+1+1", "-2", "@SUM(A1)", "\tx", "\rx"):
        log.append(request_event(100).model_copy(update={"content": text}))
    out = tmp_path / "audit.csv"
    log.export("csv", out)
    body = out.read_text()
    for text in ("=HYPERLINK", "+1+1", "@SUM"):
        assert f"'{text}" in body
    assert ",=" not in body and ",+" not in body and ",@" not in body


def test_an_export_carries_the_witness_and_verifies_alone(log: AuditLog, tmp_path: Path, key_path: Path):
    from appliance.audit.export import verify_file
    from appliance.signing import keys

    out = tmp_path / "audit.jsonl"
    log.export("jsonl", out)
    trust = [keys.load_private_key(key_path).public_key()]
    report = verify_file(out, trust)
    assert report.ok and report.witnessed >= 3
    lines = out.read_text().splitlines()
    kept = [line for line in lines if not (line.startswith('{"seq":30,') or '"seq":30,' in line.split('"ts"')[0])]
    assert len(kept) == len(lines) - 1  # the newest record only; its checkpoints and witness stay
    out.write_text("\n".join(kept) + "\n")
    assert not verify_file(out, trust).ok
