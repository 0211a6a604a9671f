"""Golden: the canonical bytes and hash of one audit record (docs/architecture.md defines the format)."""

from __future__ import annotations

from appliance.audit import AuditEvent
from appliance.audit.chain import CHAIN_COLUMNS, GENESIS, canonical, flatten, link
from tests.goldens import check_golden


def test_canonical_audit_record_bytes():
    event = AuditEvent(
        event="completion",
        request_id="req-1",
        principal={"key_id": "k1", "name": "Zoë", "role": "user"},
        source="10.0.0.7",
        route="POST /v1/chat/completions",
        model="gpt-oss-20b",
        bundle_version="1.0.0",
        policy_revision="rev",
        decision={"action": "redact", "rule_ids": ["pii.email"], "findings": {"pii.email": 1}},
        content_mode="redacted",
        content='mail [EMAIL] \u00e9\U0001f600 "q" \\ \x00',
        usage={"prompt_tokens": 3},
        latency_ms=12,
        status=200,
        detail={"finish_reason": "stop"},
    )
    values = flatten(event, 1, "2026-12-01T00:00:00.000000Z")
    data = canonical([values[c] for c in CHAIN_COLUMNS])
    check_golden("audit_record.canonical", data.decode("ascii") + "\n" + link(GENESIS, data) + "\n")


def test_a_client_certificate_subject_extends_the_canonical_bytes_only_when_set():
    """Records written before the subject column existed keep their bytes (the golden above); one with a
    subject carries it as one more element at the end."""
    event = AuditEvent(
        event="request",
        request_id="req-2",
        principal={"key_id": "k1", "name": "app", "role": "user", "cert_subject": "O=Site,CN=app1"},
        source="10.0.0.8",
        route="POST /v1/chat/completions",
        status=200,
    )
    values = flatten(event, 2, "2026-12-01T00:00:01.000000Z")
    data = canonical([values[c] for c in CHAIN_COLUMNS])
    check_golden("audit_record_cert.canonical", data.decode("ascii") + "\n" + link(GENESIS, data) + "\n")
    without = flatten(
        event.model_copy(update={"principal": event.principal.model_copy(update={"cert_subject": None})}),
        2,
        "2026-12-01T00:00:01.000000Z",
    )
    assert canonical([without[c] for c in CHAIN_COLUMNS]) == data.replace(b',"O=Site,CN=app1"]', b"]")
