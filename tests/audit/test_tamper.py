"""Every kind of tampering the issue names is detected, with the first bad sequence number."""

from __future__ import annotations

import functools

import pytest
from sqlalchemy import delete, insert, select, update

from appliance.audit import AuditLog, parallel
from appliance.audit.chain import ROW_COLUMNS, canonical, link
from appliance.audit.models import AuditCheckpointRow, AuditRecordRow
from appliance.audit.signer import sign_checkpoint
from appliance.signing import keys
from tests.audit.conftest import request_event

R = AuditRecordRow


@pytest.fixture(params=["serial", "parallel"])
def filled(request, audit_log: AuditLog, monkeypatch) -> AuditLog:
    """30 records, with periodic checkpoints every 10; verified in one pass, or by 2 processes walking
    stretches of 4 records (the same verdicts and messages)."""
    if request.param == "parallel":
        monkeypatch.setattr(parallel, "SPAN", 4)
        monkeypatch.setattr(audit_log, "verify", functools.partial(audit_log.verify, workers=2))
    for start in (0, 10, 20):
        for i in range(start, start + 10):
            audit_log.append(request_event(i))
    assert audit_log.verify().ok
    return audit_log


def _rows(log: AuditLog) -> list[dict]:
    with log.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(*[getattr(R, c) for c in ROW_COLUMNS]).order_by(R.seq)).mappings()]


def _sql(log: AuditLog, *statements) -> None:
    with log.engine.begin() as conn:
        for stmt in statements:
            conn.execute(stmt)


def test_edited_field(filled: AuditLog):
    _sql(filled, update(R).where(R.seq == 7).values(action="deny"))
    report = filled.verify()
    assert (report.bad_seq, report.reason) == (7, "hash does not match the record's content")


def test_deleted_record(filled: AuditLog):
    _sql(filled, delete(R).where(R.seq == 12))
    assert filled.verify().bad_seq == 12


def test_inserted_record(filled: AuditLog):
    rows = _rows(filled)
    forged = dict(rows[4], seq=5, request_id="forged")
    forged["hash"] = link(forged["prev_hash"], canonical([forged[c] for c in ROW_COLUMNS[:-2]]))
    _sql(
        filled,
        update(R).where(R.seq >= 5).values(seq=R.seq + 1000),
        update(R).where(R.seq >= 1005).values(seq=R.seq - 999),
        insert(R).values(forged),
    )
    assert filled.verify().bad_seq == 6  # the forged record links; the one after it no longer does


def test_two_records_swapped(filled: AuditLog):
    rows = _rows(filled)
    _sql(
        filled,
        update(R).where(R.seq == 8).values(seq=-8),
        update(R).where(R.seq == 9).values(seq=8),
        update(R).where(R.seq == -8).values(seq=9),
    )
    assert rows[7]["seq"] == 8
    assert filled.verify().bad_seq == 8


def test_rewritten_chain_is_caught_by_a_signed_checkpoint(filled: AuditLog):
    """An attacker who recomputes every later hash still cannot match the next signed checkpoint."""
    rows, prev = _rows(filled)[4:], filled.get(4).hash
    rows[0]["content"] = "sha256:" + "0" * 64
    for row in rows:
        row["prev_hash"] = prev
        prev = row["hash"] = link(prev, canonical([row[c] for c in ROW_COLUMNS[:-2]]))
    _sql(filled, delete(R).where(R.seq >= 5))
    with filled.engine.begin() as conn:
        conn.execute(insert(R), rows)
    next_checkpoint = min(s for s in _checkpoint_seqs(filled) if s >= 5)
    report = filled.verify()
    assert report.bad_seq == next_checkpoint and "checkpoint" in report.reason


def _checkpoint_seqs(log: AuditLog) -> list[int]:
    with log.engine.connect() as conn:
        return list(conn.execute(select(AuditCheckpointRow.seq)).scalars())


def test_tail_cut_is_caught_by_a_checkpoint(filled: AuditLog):
    last_checkpoint = max(_checkpoint_seqs(filled))
    _sql(filled, delete(R).where(R.seq >= last_checkpoint))
    report = filled.verify()
    assert report.bad_seq == last_checkpoint
    assert f"records after seq {last_checkpoint - 1} are missing" in report.reason


def test_tail_cut_with_its_checkpoints_is_caught_by_the_expected_head(filled: AuditLog):
    head = filled.head()
    _sql(filled, delete(R).where(R.seq > 25), delete(AuditCheckpointRow).where(AuditCheckpointRow.seq > 25))
    assert filled.verify().ok
    report = filled.verify(expect_head=head)
    assert report.bad_seq == 26 and "expected head" in report.reason


def test_expected_head_with_a_different_hash(filled: AuditLog):
    assert filled.verify(expect_head=(30, "0" * 64)).bad_seq == 30


def test_forged_checkpoints(filled: AuditLog, key_path):
    record = filled.get(15)
    intruder = keys.generate_private_key()
    forged = sign_checkpoint(intruder, "periodic", 15, record.hash, record.ts, "0" * 64)
    _sql(
        filled,
        insert(AuditCheckpointRow).values(
            kind="periodic",
            seq=15,
            head_hash=record.hash,
            ts=record.ts,
            key_id=forged.key_id,
            signature=forged.signature,
            prev_checkpoint=forged.prev,
        ),
    )
    report = filled.verify()
    assert report.bad_seq == 15 and "untrusted key" in report.reason
    both = [intruder.public_key(), keys.load_private_key(key_path).public_key()]
    trusted_but_unchained = filled.verify(trust=both)  # a checkpoint slipped into the chain breaks it
    assert trusted_but_unchained.bad_seq == 15 and "checkpoint chain" in trusted_but_unchained.reason
    _sql(filled, delete(AuditCheckpointRow).where(AuditCheckpointRow.key_id == forged.key_id))
    moved = max(_checkpoint_seqs(filled))  # a genuine signature, now claiming another sequence number
    _sql(filled, update(AuditCheckpointRow).where(AuditCheckpointRow.seq == moved).values(seq=moved - 1))
    report = filled.verify(trust=both)
    assert report.bad_seq == moved - 1 and "bad signature" in report.reason
