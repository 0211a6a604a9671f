"""A policy reload puts in force exactly the revision it recorded, and every replica follows the record."""

from __future__ import annotations

import shutil

import pytest

from appliance.api.policy_follow import apply_recorded
from appliance.api.services import Services
from appliance.audit import AuditFilter
from appliance.serving.local_backend import LocalBackend
from tests.appliance import REPO, make_appliance


@pytest.fixture
def replicas(tmp_path, signed_tiny_bundle, publisher):
    """Two gateway replicas over one database and one policy folder (a copy the test may edit)."""
    pack = tmp_path / "policies"
    shutil.copytree(REPO / "tests" / "pack", pack)
    a = make_appliance(tmp_path / "var", signed_tiny_bundle, publisher[1], policy_dir=pack)
    second = Services.from_settings(a.settings, LocalBackend([]))
    yield a, second, pack
    second.close()
    a.services.backend.close()
    a.services.close()


def _edit(pack) -> None:
    path = pack / "guardrails.yaml"
    path.write_text(path.read_text().replace("max_messages: 256", "max_messages: 255"))


async def test_a_file_changed_mid_reload_is_not_what_goes_in_force(replicas, monkeypatch):
    a, _, pack = replicas
    real = a.services.record

    async def record_then_edit(event):
        out = await real(event)
        if event.event == "admin.policy_reloaded":
            _edit(pack)  # the folder changes between the record and the switch
        return out

    monkeypatch.setattr(a.services, "record", record_then_edit)
    async with a.client("admin") as c:
        r = await c.post("/admin/policy/reload")
    assert r.status_code == 200
    recorded = a.services.audit.query(AuditFilter(event="admin.policy_reloaded"), limit=1).records[0]
    assert a.services.policy.current.revision == recorded.detail["revision"] == r.json()["revision"]


async def test_every_replica_follows_the_recorded_revision(replicas):
    a, second, pack = replicas
    _edit(pack)
    async with a.client("admin") as c:
        r = await c.post("/admin/policy/reload")
        assert r.status_code == 200
        shown = (await c.get("/admin/policy")).json()
    new = r.json()["revision"]
    assert shown["recorded_revision"] == new and shown["in_force_here"]
    assert second.policy.current.revision != new
    apply_recorded(second, set())
    assert second.policy.current.revision == new
    async with a.client("admin") as c:  # the admin sees where each revision is in force
        replicas = {r["replica"]: r["revision"] for r in (await c.get("/admin/policy")).json()["replicas"]}
    assert replicas == {a.services.replica: new, second.replica: new}
    records = a.services.audit.query(AuditFilter(event="policy.in_force"), limit=10).records
    assert {r.principal.name for r in records} == {f"replica:{a.services.replica}", f"replica:{second.replica}"}


async def test_a_replica_never_applies_a_folder_that_differs_from_the_record(replicas):
    a, second, pack = replicas
    _edit(pack)
    async with a.client("admin") as c:
        assert (await c.post("/admin/policy/reload")).status_code == 200
    before = second.policy.current.revision
    path = pack / "guardrails.yaml"
    path.write_text(path.read_text().replace("max_messages: 255", "max_messages: 254"))  # unrecorded edit
    apply_recorded(second, set())
    assert second.policy.current.revision == before
