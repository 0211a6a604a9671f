"""Events and the canonical serialisation (no database)."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from appliance.audit import AuditEvent, content_for
from appliance.audit.chain import CHAIN_COLUMNS, GENESIS, canonical, flatten, link


def test_canonical_form_is_the_documented_one():
    event = AuditEvent(
        event="denial",
        request_id="r1",
        principal={"key_id": "k1", "name": "Zoë", "role": "user"},
        decision={"action": "deny", "rule_ids": ["b", "a"], "findings": {"z": 1, "a": 2}},
        content_mode="redacted",
        content="call [PHONE]\n",
        latency_ms=7.4,
        status=403,
        detail={"y": "1", "x": "2"},
    )
    values = flatten(event, 42, "2026-11-28T12:00:00.000000Z")
    data = canonical([values[c] for c in CHAIN_COLUMNS])
    assert data == (
        b'["appliance-audit/1",42,"2026-11-28T12:00:00.000000Z","denial","r1","k1",'
        b'"Zo\\u00eb","user",'
        b'null,null,null,null,null,"deny","[\\"b\\",\\"a\\"]","{\\"a\\":2,\\"z\\":1}","redacted",'
        b'"call [PHONE]\\n",null,null,null,7,403,null,"{\\"x\\":\\"2\\",\\"y\\":\\"1\\"}"]'
    )
    assert link(GENESIS, data) == hashlib.sha256(bytes(32) + data).hexdigest()


def test_unknown_event_is_refused():
    with pytest.raises(ValidationError, match="unknown audit event"):
        AuditEvent(event="request_made")


def test_content_modes():
    assert content_for("full", "secret 123") == "secret 123"
    assert content_for("redacted", "secret 123", "secret [NUM]") == "secret [NUM]"
    assert content_for("hash", "secret 123") == "sha256:" + hashlib.sha256(b"secret 123").hexdigest()
    with pytest.raises(ValueError):
        content_for("redacted", "secret 123")
