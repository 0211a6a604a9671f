"""Caller-chosen text longer than its audit column is recorded cut to the column, never a lost record and
a 503 (PostgreSQL refuses an over-long value; issue 22, defect 4). On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from appliance.audit import AuditFilter
from appliance.audit.models import COLUMN_LIMITS

pytestmark = pytest.mark.asyncio


def newest(appliance, event: str):
    return appliance.services.audit.query(AuditFilter(event=event), limit=1).records[0]


async def test_a_failed_authentication_with_a_10_kb_path_is_a_401_and_recorded(db_appliance):
    async with db_appliance.client(None, token="sk-not-a-key") as c:
        response = await c.get("/v1/" + "a" * 10_000 + "%01%C3%A9")  # the server sees \x01 and é
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    record = newest(db_appliance, "auth_failure")
    assert record.route.startswith("GET /v1/aaaa") and len(record.route) == COLUMN_LIMITS["route"]
    assert record.route.endswith("...[truncated from 10017 chars]")  # the path percent-encoded, then cut
    assert db_appliance.services.audit.verify().ok


async def test_a_10_kb_model_name_is_a_404(db_appliance):
    """An unknown model is refused before any record is due (the bound on recorded values: tests/audit)."""
    async with db_appliance.client("user") as c:
        response = await c.post(
            "/v1/chat/completions", json={"model": "m" * 10_000, "messages": [{"role": "user", "content": "hi"}]}
        )
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


async def test_the_longest_key_name_is_recorded_whole(db_appliance):
    from sqlalchemy.orm import Session

    from appliance import apikeys
    from appliance.db import make_engine

    name = "Zoë " * 32  # 128 characters, the most a key name may have
    with Session(make_engine(db_appliance.settings.database_url)) as session:
        token, info = apikeys.create_key(session, name, "user")
    async with db_appliance.client(None, token=token) as c:
        response = await c.get("/admin/keys")
    assert response.status_code == 403
    record = newest(db_appliance, "denial")
    assert record.principal.key_id == info.key_id and record.principal.name == name.strip()
