"""The `appliance audit` and `appliance db` commands, run as the real console script inside the air gap."""

from __future__ import annotations

import json
import os
import pwd
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from appliance.audit import AuditLog
from appliance.audit.models import AuditRecordRow
from appliance.config import Settings
from appliance.signing import keys
from tests.audit.conftest import request_event
from tests.conftest import one_line_error, run_cli


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data folder whose database the CLI migrated and whose log holds 12 records."""
    data = tmp_path / "var"
    assert "database at revision" in run_cli("db", "upgrade", data_dir=data, check=True).stdout
    with AuditLog.from_settings(Settings(data_dir=data)) as log:
        for i in range(12):
            log.append(request_event(i))
    return data


def test_list_show_export_verify(data_dir: Path, tmp_path: Path):
    listed = run_cli("audit", "list", "--principal", "user2", "--limit", "2", data_dir=data_dir, check=True).stdout
    assert "req-11" in listed and "req-8" in listed and "req-5" not in listed and "--cursor 9" in listed
    shown = json.loads(run_cli("audit", "show", "3", data_dir=data_dir, check=True).stdout)
    assert shown["seq"] == 3 and shown["request_id"] == "req-2" and len(shown["hash"]) == 64
    ok = run_cli("audit", "verify", data_dir=data_dir, check=True).stdout
    assert ok.startswith("ok: 14 records (seq 1..14)")  # the 12, then the list's and the show's own records
    head = ok.splitlines()[1].split()[1]
    out = tmp_path / "audit.jsonl"
    run_cli("audit", "export", "--format", "jsonl", "--out", str(out), data_dir=data_dir, check=True)
    pub = data_dir / "keys" / "audit.pub"
    assert run_cli(
        "audit", "verify", "--file", str(out), "--trust", str(pub), "--expect-head", head, data_dir=data_dir, check=True
    ).stdout.startswith("ok: 16 records")
    # The log's readers are on the log, and the export holds the record of itself.
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    reads = [
        (r["event"], r["principal"]["name"].startswith("cli:"), r["detail"])
        for r in exported
        if r.get("event", "").startswith("audit.")
    ]
    assert [(e, cli) for e, cli, _ in reads] == [
        ("audit.searched", True),
        ("audit.viewed", True),
        ("audit.verified", True),
        ("audit.exported", True),
    ]
    assert reads[0][2] == {"filter": '{"principal":"user2"}', "count": "2"}
    assert reads[1][2]["seq"] == "3" and reads[2][2]["result"] == "ok" and reads[2][2]["count"] == "14"
    assert reads[3][2]["format"] == "jsonl" and reads[3][2]["count"] == "15"


def test_verify_names_the_first_bad_record(data_dir: Path):
    with AuditLog.from_settings(Settings(data_dir=data_dir)) as log, log.engine.begin() as conn:
        conn.execute(update(AuditRecordRow).where(AuditRecordRow.seq == 4).values(model="other"))
    error = one_line_error(run_cli("audit", "verify", data_dir=data_dir))
    assert error == "error: audit log fails verification at seq 4: hash does not match the record's content"


def test_verify_against_a_foreign_key(data_dir: Path, tmp_path: Path):
    other = tmp_path / "other.pub"
    keys.write_public_key(keys.generate_private_key().public_key(), other)
    error = one_line_error(run_cli("audit", "verify", "--trust", str(other), data_dir=data_dir))
    assert "untrusted key" in error


def test_prune_refuses_a_cut_off_within_the_retention_floor(data_dir: Path):
    error = one_line_error(run_cli("audit", "prune", "--before", "2999-01-01", "--yes", data_dir=data_dir))
    assert "minimum retention of 90 days (audit_min_retention_days)" in error
    assert run_cli("audit", "verify", data_dir=data_dir, check=True).stdout.startswith("ok: 12 records")
    floor = {"APPLIANCE_AUDIT_MIN_RETENTION_DAYS": "30"}
    error = one_line_error(
        run_cli(
            "audit",
            "prune",
            "--before",
            (datetime.now(UTC) - timedelta(days=29)).isoformat(),
            "--yes",
            data_dir=data_dir,
            env=floor,
        )
    )
    assert "minimum retention of 30 days (audit_min_retention_days)" in error


def test_prune_exports_first_then_verify(data_dir: Path):
    now = datetime.now(UTC).isoformat()
    out = run_cli(
        "audit",
        "prune",
        "--before",
        now,
        "--yes",
        data_dir=data_dir,
        check=True,
        env={"APPLIANCE_AUDIT_MIN_RETENTION_DAYS": "0", "LOGNAME": "mallory", "USER": "mallory"},
    ).stdout
    exported, removed = out.strip().splitlines()
    assert removed == "removed 12 records; anchor checkpoint at seq 12"
    export = Path(exported.removeprefix("exported them first to "))
    assert export.parent == data_dir / "audit-exports"
    assert run_cli("audit", "verify", "--file", str(export), data_dir=data_dir, check=True).stdout.startswith(
        "ok: 12 records (seq 1..12)"
    )
    verified = run_cli("audit", "verify", data_dir=data_dir, check=True).stdout
    assert verified.startswith("ok: 1 records (seq 13..13)")
    marker = json.loads(run_cli("audit", "show", "13", data_dir=data_dir, check=True).stdout)
    assert marker["event"] == "admin.audit_pruned" and marker["detail"]["min_retention_days"] == "0"
    assert marker["detail"]["export"] == str(export)
    assert marker["principal"]["name"] == f"cli:{pwd.getpwuid(os.getuid()).pw_name}"  # not $LOGNAME


def test_prune_without_export(data_dir: Path):
    out = run_cli(
        "audit",
        "prune",
        "--before",
        datetime.now(UTC).isoformat(),
        "--no-export",
        "--yes",
        data_dir=data_dir,
        check=True,
        env={"APPLIANCE_AUDIT_MIN_RETENTION_DAYS": "0"},
    ).stdout
    assert out.strip() == "removed 12 records; anchor checkpoint at seq 12"
    assert not (data_dir / "audit-exports").exists()
    marker = json.loads(run_cli("audit", "show", "13", data_dir=data_dir, check=True).stdout)
    assert marker["detail"]["export"] == "none"


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "show", "999"],
        ["audit", "list", "--since", "last tuesday"],
        ["audit", "verify", "--expect-head", "12:nothex"],
        ["audit", "verify", "--trust", "/nonexistent.pub"],
        ["audit", "verify", "--file", "/nonexistent.jsonl"],
        ["audit", "export", "--format", "xml", "--out", "/tmp/x.xml"],
        ["audit", "export", "--format", "csv", "--out", "/nonexistent/x.csv"],
        ["db", "downgrade", "nosuchrevision"],
    ],
)
def test_bad_input_is_one_line(data_dir: Path, args: list[str]):
    one_line_error(run_cli(*args, data_dir=data_dir))


def test_without_tables_the_error_says_what_to_run(tmp_path: Path):
    error = one_line_error(run_cli("audit", "list", data_dir=tmp_path / "empty"))
    assert "appliance db upgrade" in error
    run_cli("db", "upgrade", data_dir=tmp_path / "empty", check=True)
    assert (
        run_cli("db", "downgrade", "base", data_dir=tmp_path / "empty", check=True).stdout.strip()
        == "database at revision base"
    )
