"""A caller chooses its own `x-request-id`, so one request's records are those of its id *and* its key:
another caller sending the same id never shows up among them on the admin page (issue 22, defect 12a)."""

from __future__ import annotations

import pytest

from tests.api.helpers import PAGE, browser, sign_in

pytestmark = pytest.mark.asyncio


async def test_a_borrowed_request_id_does_not_join_another_callers_request(appliance):
    rid = {"x-request-id": "shared-1"}
    async with appliance.client("user") as user, appliance.client("admin") as admin:
        assert (await user.get("/admin/keys", headers=rid)).status_code == 403  # a denial under the id
        assert (await admin.post("/admin/keys", headers=rid, json={"name": "k", "role": "user"})).status_code == 201
    denial, created = appliance.services.audit.request_records("shared-1")
    assert denial.principal.role == "user" and created.principal.role == "admin"
    async with browser(appliance) as c:
        await sign_in(appliance, c, "auditor")
        for shown, hidden in ((denial, created), (created, denial)):
            page = await c.get(f"{PAGE}/audit/{shown.seq}")
            assert page.status_code == 200
            siblings = page.text.split('id="siblings"', 1)[1]
            assert f'/audit/{shown.seq}"' in siblings and f'/audit/{hidden.seq}"' not in siblings
