"""Appending, reading, exporting and pruning, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete

from appliance.audit import AuditError, AuditEvent, AuditFilter, AuditLog
from appliance.audit.chain import GENESIS
from appliance.audit.export import verify_file
from appliance.audit.models import AuditRecordRow
from appliance.audit.signer import public_key_path
from appliance.signing import keys
from tests.audit.conftest import request_event


def test_appends_form_one_chain_with_checkpoints(audit_log: AuditLog, key_path):
    with ThreadPoolExecutor(8) as pool:
        records = list(pool.map(lambda i: audit_log.append(request_event(i)), range(60)))
    assert sorted(r.seq for r in records) == list(range(1, 61))
    assert audit_log.get(1).prev_hash == GENESIS
    assert audit_log.get(2).prev_hash == audit_log.get(1).hash
    stored = audit_log.get(records[5].seq)
    assert stored == records[5]
    report = audit_log.verify()
    assert report.ok and report.records == 60 and report.checkpoints >= 1
    assert audit_log.head() == (60, report.head_hash)
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert public_key_path(key_path).exists()


def test_query_filters_and_pages(audit_log: AuditLog):
    for i in range(12):
        audit_log.append(request_event(i))
    audit_log.append(
        AuditEvent(event="admin.key_created", principal={"name": "root", "role": "admin"}, detail={"key_id": "k9"})
    )
    page = audit_log.query(AuditFilter(principal="user1"), limit=3)
    assert [r.request_id for r in page.records] == ["req-10", "req-7", "req-4"]
    rest = audit_log.query(AuditFilter(principal="user1"), cursor=page.next_cursor, limit=3)
    assert [r.request_id for r in rest.records] == ["req-1"] and rest.next_cursor is None
    assert [r.seq for r in audit_log.query(AuditFilter(event="admin.key_created")).records] == [13]
    assert audit_log.query(AuditFilter(model="other")).records == []
    assert len(audit_log.query(AuditFilter(action="allow")).records) == 12
    future = datetime.now(UTC) + timedelta(hours=1)
    assert audit_log.query(AuditFilter(since=future)).records == []
    assert len(audit_log.query(AuditFilter(until=future)).records) == 13
    assert audit_log.get(99) is None


def test_jsonl_export_verifies_alone_and_csv_is_flat(audit_log: AuditLog, key_path, tmp_path):
    for i in range(25):
        audit_log.append(request_event(i, error_code=None if i else "x"))
    out = tmp_path / "audit.jsonl"
    seen = []
    assert audit_log.export("jsonl", out, seen.append) == 25 and sum(seen) == 25
    trust = [keys.load_public_key(public_key_path(key_path))]
    assert verify_file(out, trust).ok
    lines = out.read_text().splitlines()
    record = json.loads(lines[-1])
    record["content"] = "edited"
    out.write_text("\n".join([*lines[:-1], json.dumps(record)]) + "\n")
    assert verify_file(out, trust).bad_seq == 25
    audit_log.export("csv", tmp_path / "audit.csv")
    rows = list(csv.DictReader((tmp_path / "audit.csv").open()))
    assert len(rows) == 25 and rows[0]["seq"] == "1" and rows[0]["prev_hash"] == GENESIS


def test_prune_leaves_a_verifiable_remainder(audit_log: AuditLog):
    for i in range(15):
        audit_log.append(request_event(i))
    result = audit_log.prune(datetime.now(UTC), min_retention_days=0, export_dir=None)
    assert result.removed == 15 and result.anchor_seq == 15 and result.export is None
    remaining = audit_log.query().records
    assert [r.event for r in remaining] == ["admin.audit_pruned"]
    audit_log.append(request_event(99))
    report = audit_log.verify()
    assert report.ok and report.first_seq == 16 and report.records == 2


def test_prune_refuses_a_cut_off_within_the_retention_floor(audit_log: AuditLog, tmp_path):
    exports = tmp_path / "exports"
    for i in range(5):
        audit_log.append(request_event(i))
    for before in (datetime(2999, 1, 1, tzinfo=UTC), datetime.now(UTC) - timedelta(days=89)):
        with pytest.raises(AuditError, match=r"minimum retention of 90 days \(audit_min_retention_days\)"):
            audit_log.prune(before, min_retention_days=90, export_dir=exports)
    assert audit_log.count() == 5 and not exports.exists()  # nothing recorded, removed or exported
    assert (
        audit_log.prune(datetime.now(UTC) - timedelta(days=91), min_retention_days=90, export_dir=exports).removed == 0
    )  # older than the floor: allowed (none that old)


def test_prune_exports_what_it_removes_first_and_records_the_floor(audit_log: AuditLog, key_path, tmp_path):
    for i in range(15):
        audit_log.append(request_event(i))
    result = audit_log.prune(datetime.now(UTC), min_retention_days=0, export_dir=tmp_path / "exports")
    assert result.removed == 15 and result.export is not None and result.export.parent == tmp_path / "exports"
    report = verify_file(result.export, [keys.load_public_key(public_key_path(key_path))])
    assert report.ok and report.first_seq == 1 and report.last_seq >= 15
    exported = [json.loads(line) for line in result.export.read_text().splitlines()]
    assert [r["request_id"] for r in exported if "seq" in r and r["seq"] <= 15] == [f"req-{i}" for i in range(15)]
    marker = audit_log.latest("admin.audit_pruned")
    assert marker is not None and marker.detail == {
        "before": marker.detail["before"],
        "min_retention_days": "0",
        "export": str(result.export),
    }


def test_deleting_old_records_without_prune_is_caught(audit_log: AuditLog):
    for i in range(15):
        audit_log.append(request_event(i))
    with audit_log.engine.begin() as conn:
        conn.execute(delete(AuditRecordRow).where(AuditRecordRow.seq <= 10))
    report = audit_log.verify()
    assert report.bad_seq == 11 and "no signed prune anchor" in report.reason
