"""Every bounded column takes a value of any length: cut to the column with a marker before hashing, so
the record is written on PostgreSQL too and verifies (issue 22, defect 4). On SQLite and PostgreSQL."""

from __future__ import annotations

from appliance.audit import AuditEvent, AuditLog
from appliance.audit.chain import bounded
from appliance.audit.models import COLUMN_LIMITS

LONG = "x" * 10_000


def test_over_long_caller_text_is_recorded_cut_to_its_column(audit_log: AuditLog):
    event = AuditEvent(
        event="request",
        request_id="r1",
        source=LONG,
        route=f"GET /{LONG}",
        model=LONG,
        bundle_version=LONG,
        policy_revision=LONG,
        error_code=LONG,
        principal={"key_id": LONG, "name": "Zoë\x00" + LONG, "role": "user", "cert_subject": LONG},
    )
    written = audit_log.append(event)
    stored = audit_log.get(written.seq)
    assert stored is not None and stored.hash == written.hash
    for column, value in (
        ("source", stored.source),
        ("route", stored.route),
        ("model", stored.model),
        ("bundle_version", stored.bundle_version),
        ("policy_revision", stored.policy_revision),
        ("error_code", stored.error_code),
        ("principal_key_id", stored.principal.key_id),
        ("principal_name", stored.principal.name),
        ("principal_cert_subject", stored.principal.cert_subject),
    ):
        assert value is not None and len(value) == COLUMN_LIMITS[column], column
        assert value.endswith(" chars]"), column
    assert stored.principal.name.startswith("Zoë\\u0000xx")  # escaped first, then cut
    assert audit_log.verify().ok


def test_a_value_that_fits_is_unchanged_and_cutting_twice_changes_nothing():
    assert bounded("route", "GET /v1/models") == "GET /v1/models"
    once = bounded("route", LONG)
    assert bounded("route", once) == once and once.endswith("...[truncated from 10000 chars]")
    assert bounded("content", LONG) == LONG  # unbounded columns keep everything
