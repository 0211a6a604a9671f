"""The log's readers on the log through the API: searches and views recorded with who, the filter and the
count (paging aggregated per window), verifications recorded with their result, exports holding the record of
their own export; and the forwarding lag on /metrics."""

from __future__ import annotations

import json

import pytest

from appliance.audit import AuditFilter
from tests.appliance import make_appliance
from tests.audit.conftest import request_event


@pytest.fixture(scope="module")
def appliance(module_dir, signed_tiny_bundle, publisher):
    a = make_appliance(
        module_dir / "var",
        signed_tiny_bundle,
        publisher[1],
        audit_forward=[{"name": "siem", "host": "127.0.0.1", "port": 9, "transport": "tcp"}],
    )
    yield a
    a.services.backend.close()
    a.services.close()


def reads(appliance, event: str) -> list:
    return list(reversed(appliance.services.audit.query(AuditFilter(event=event), limit=100).records))


async def test_paging_a_search_is_one_record_then_one_aggregate(appliance):
    for i in range(6):
        appliance.services.audit.append(request_event(i))
    async with appliance.client("auditor") as c:
        first = (await c.get("/admin/audit", params={"event": "request", "limit": 2})).json()
        cursor = first["next_cursor"]
        for _ in range(2):
            page = (await c.get("/admin/audit", params={"event": "request", "limit": 2, "cursor": cursor})).json()
            cursor = page["next_cursor"]
        await c.get("/admin/audit", params={"event": "denial"})  # another filter: a record of its own
    searched = reads(appliance, "audit.searched")
    assert [(r.principal.name, r.detail["filter"], r.detail["count"]) for r in searched] == [
        ("test-auditor", '{"event":"request"}', "2"),
        ("test-auditor", '{"event":"denial"}', "0"),
    ]
    for agg in appliance.services.reads.due(force=True):  # the window ends (here: forced, as at shutdown)
        appliance.services.audit.append(agg)
    aggregated = [r for r in reads(appliance, "audit.searched") if r.detail.get("aggregated") == "true"]
    assert [(r.detail["filter"], r.detail["pages"], r.detail["count"]) for r in aggregated] == [
        ('{"event":"request"}', "2", "4")
    ]


async def test_views_verifications_and_exports_are_recorded(appliance):
    async with appliance.client("auditor") as c:
        assert (await c.get("/admin/audit/1")).status_code == 200
        assert (await c.get("/admin/audit/2")).status_code == 200
        verified = (await c.get("/admin/audit/verify")).json()
        exported = (await c.get("/admin/audit/export", params={"format": "jsonl"})).text
    viewed = reads(appliance, "audit.viewed")
    assert [r.detail["seq"] for r in viewed][-1:] == ["1"]  # the second view is counted in the window
    record = reads(appliance, "audit.verified")[-1]
    assert record.detail["result"] == "ok" and record.detail["count"] == str(verified["records"])
    lines = [json.loads(line) for line in exported.splitlines()]
    own = [r for r in lines if r.get("event") == "audit.exported"]
    assert len(own) == 1 and own[0]["principal"]["name"] == "test-auditor" and own[0]["detail"]["format"] == "jsonl"
    assert own[0]["seq"] == max(r["seq"] for r in lines if "seq" in r and "event" in r)


async def test_forward_lag_on_metrics(appliance):
    head = appliance.services.audit.head()[0]
    async with appliance.client("auditor") as c:
        text = (await c.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith('appliance_audit_forward_lag_records{collector="siem"}'))
    assert float(line.split()[-1]) >= head  # nothing forwarded: every record is behind


def test_forward_warning_past_the_threshold(appliance, monkeypatch):
    assert appliance.services.forward_warning() is None  # behind, but by fewer than 10,000 records
    monkeypatch.setattr(appliance.services.settings, "audit_forward_lag_warning", 1)
    head = appliance.services.audit.head()[0]
    assert appliance.services.forward_warning() == (
        f"Audit forwarding is behind: siem lacks {head:,} records (see `appliance audit forward status`)"
    )
