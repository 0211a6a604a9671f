"""The integrity panel and its banner: verify, change a record behind the appliance's back, verify again.
Also the sign-in rate limit (last: it uses up this module's bucket)."""

from __future__ import annotations

import sqlite3

import httpx

from appliance.audit import AuditFilter
from tests.ui.conftest import origins, sign_in
from tests.ui.test_pages import UI, shot

SETTINGS = {"auth_failure_burst": 8, "auth_failure_rate": 0.01}  # failures per address: 8, then 1 per 100 s


def verify(page) -> None:
    """Press the button; the panel refreshes itself while verifying, then offers the button again."""
    with page.expect_navigation():
        page.click("#verify")
    page.wait_for_selector("#verify", timeout=60_000)


def test_banner_until_verified_then_after_tampering(page, server, appliance):
    sign_in(page, appliance.tokens["auditor"])
    assert "never been verified" in page.inner_text("#integrity-banner")
    page.click("#integrity-banner a")
    verify(page)
    assert page.inner_text("#verify-result").startswith("OK:")
    assert page.locator("#integrity-banner").count() == 0
    checkpoint = page.inner_text("#checkpoint")
    assert "head hash" in checkpoint and int(page.inner_text("#uncovered")) >= 0
    shot(page, "integrity")

    db = appliance.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:  # what an insider with database access might do
        conn.execute("UPDATE audit_records SET content = 'nothing to see' WHERE seq = 42")
    verify(page)
    assert "FAILED at seq 42" in page.inner_text("#verify-result")
    for view in ("audit", "audit/42", "integrity"):
        page.goto(f"{UI}/{view}")
        banner = page.inner_text("#integrity-banner")
        assert "FAILED verification at seq 42" in banner
    shot(page, "banner")
    assert origins(page.requested) == {server.url}


def test_failed_sign_ins_are_rate_limited_and_audited(page, server, appliance):
    statuses = []
    for _ in range(12):
        page.goto(f"{UI}/signin")
        page.fill("input[name=key]", "ak-0000000000000000.wrong")
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.click("button[type=submit]")
        statuses.append(answer.value.status)
    assert statuses == [401] * 8 + [429] * 4  # the API's own per-address budget, shared with it
    assert "too many failed sign-ins" in page.inner_text("#error")
    each = appliance.services.audit.query(AuditFilter(event="auth_failure", status=401), limit=20).records
    assert [r.route for r in each] == ["POST /admin/ui/signin"] * 8
    denied = httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer ak-0000000000000000.x"})
    assert denied.status_code == 429  # the same address is out of budget on the API too
