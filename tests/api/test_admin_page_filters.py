"""The admin page's filters pass the API's own rules (issue 22, defect 11): NUL or control characters in
text or principal, years outside 1000-9999 and over-long text are a clear 400 page, never a 500 (PostgreSQL
refuses NUL and the year 1 overflows the time window). On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.api.helpers import PAGE, browser, sign_in

pytestmark = pytest.mark.asyncio
REFUSED = [
    ("text", "a\x00b"),
    ("principal", "\x00"),
    ("model", "m\x1b[31m"),
    ("event", "e" * 300),
    ("since", "0001-01-01"),
    ("until", "0001-01-01T00:00"),
    ("since", "9999-12-31T23:59-01:00"),
    ("since", "yesterday"),
]


@pytest.mark.parametrize(("field", "value"), REFUSED)
async def test_the_page_refuses_what_the_api_refuses(db_appliance, field, value):
    async with browser(db_appliance) as c:
        await sign_in(db_appliance, c, "auditor")
        page = await c.get(f"{PAGE}/audit", params={field: value})
        assert page.status_code == 400 and f"{field} " in page.text and "is not accepted" in page.text
        export = await c.get(f"{PAGE}/audit/export", params={field: value})
        assert export.status_code == 400 and "is not accepted" in export.text
        assert (await c.get(f"{PAGE}/audit/chart.svg", params={field: value})).status_code < 500
    async with db_appliance.client("auditor") as api:  # the same value through the API: its own 400
        if field in ("since", "principal", "model", "event"):
            assert (await api.get("/admin/audit", params={field: value})).status_code == 400


async def test_values_the_api_takes_filter_the_page(db_appliance):
    async with browser(db_appliance) as c:
        await sign_in(db_appliance, c, "auditor")
        page = await c.get(
            f"{PAGE}/audit",
            params={"since": "2026-12-01T10:00", "until": "2999-01-01", "principal": "test-admin", "text": "é"},
        )
        assert page.status_code == 200
