"""Sign in, filter, page deep, open a record, export and verify, keys, refusals: in a real browser."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import httpx

from appliance.audit import AuditFilter
from appliance.audit.export import verify_file
from appliance.audit.signer import public_key_path
from appliance.signing import keys
from tests.ui.conftest import origins, sign_in

UI = "/admin/ui"
SHOTS = os.environ.get("APPLIANCE_UI_SCREENSHOTS")  # a folder: keep screenshots of the main views there


def shot(page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def seqs(page) -> list[int]:
    return [int(t) for t in page.locator("#records tbody tr td:first-child a").all_inner_texts()]


def test_sign_in_filter_and_page_to_the_end(page, server, appliance):
    sign_in(page, appliance.tokens["auditor"])
    assert page.url.endswith(f"{UI}/audit")
    head, _ = appliance.services.audit.head()
    first = seqs(page)
    assert appliance.services.audit.get(head).event == "audit.searched"  # the page's own record, after it
    assert len(first) == 50 and first[0] == head - 1 and first == sorted(first, reverse=True)
    shot(page, "audit-list")

    seen = list(first)
    while page.locator("#older").count():  # keyset pages, to the very first record
        page.click("#older")
        seen += seqs(page)
    assert seen == list(range(head - 1, 0, -1))

    page.goto(f"{UI}/audit")
    page.fill("input[name=principal]", "alice")
    page.select_option("select[name=action]", "deny")  # ui.js submits on change (the button, without JS)
    page.wait_for_url("**action=deny**")
    rows = page.locator("#records tbody tr")
    assert rows.count() > 0
    for row in rows.all():
        assert "alice" in row.inner_text() and "deny" in row.inner_text()
    assert page.locator("#records .badge.deny").count() == rows.count()
    shot(page, "audit-filtered")

    page.goto(f"{UI}/audit?text=invoices&policy_revision=rev-a&event=request")
    want = appliance.services.audit.query(
        AuditFilter(text="invoices", policy_revision="rev-a", event="request"), limit=1000
    ).records
    assert seqs(page) == [r.seq for r in want] and want
    page.goto(f"{UI}/audit?status=500")
    assert page.locator("#records .badge.error").count() == len(seqs(page)) > 0
    page.goto(f"{UI}/audit?status=abc")
    assert "not an HTTP status" in page.inner_text("main")
    assert origins(page.requested) == {server.url}  # page, stylesheet, script, chart: all from the appliance
    assert not [u for u in page.requested if not u.startswith(f"{server.url}/admin/ui/")]  # not /favicon.ico:
    # a request outside the page has no key, so it would count as a failed authentication of this address


def test_free_text_pages_search_a_bounded_window_then_go_on(page, server, appliance, monkeypatch):
    from appliance.api.ui import views

    monkeypatch.setattr(views, "TEXT_WINDOW", 100)  # records scanned per page without a time range
    sign_in(page, appliance.tokens["auditor"])
    page.goto(f"{UI}/audit?text=invoices")
    found, windows = seqs(page), 0
    while page.locator("#older").count():
        windows += page.locator("#searched").count()
        page.click("#older")
        found += seqs(page)
    want = appliance.services.audit.query(AuditFilter(text="invoices"), limit=1000).records
    assert found == [r.seq for r in want] and windows >= 3


def test_record_shows_decision_content_chain_and_siblings(page, server, appliance):
    sign_in(page, appliance.tokens["auditor"])
    record = appliance.services.audit.query(AuditFilter(event="request", action="redact"), limit=1000).records[-1]
    page.goto(f"{UI}/audit?event=request&action=redact&cursor={record.seq + 1}")  # an old one: signed already
    page.click(f"#records a[href='{UI}/audit/{record.seq}']")
    assert page.url.endswith(f"/audit/{record.seq}")
    chain = page.inner_text("#chain")
    assert record.hash in chain and record.prev_hash in chain and "periodic at seq" in chain
    assert "pii.email" in page.inner_text("#decision") and "email: 1" in page.inner_text("#decision")
    assert page.inner_text("#content") == record.content
    siblings = page.locator("#siblings tbody tr")
    assert siblings.count() == 2 and "completion" in siblings.nth(1).inner_text()
    shot(page, "record")
    assert origins(page.requested) == {server.url}


def test_export_of_a_filter_verifies_on_its_own(page, server, appliance, tmp_path):
    sign_in(page, appliance.tokens["auditor"])
    page.goto(f"{UI}/audit?principal=bob")
    with page.expect_download() as download:
        page.click("#export-jsonl")
    jsonl = tmp_path / "bob.jsonl"
    download.value.save_as(jsonl)
    trust = [keys.load_public_key(public_key_path(appliance.settings.audit_key_path))]
    report = verify_file(jsonl, trust)
    assert report.ok, report.reason
    bob = {r.seq for r in appliance.services.audit.query(AuditFilter(principal="bob"), limit=10_000).records}
    assert report.first_seq <= min(bob) and report.last_seq >= max(bob)

    with page.expect_download() as download:
        page.click("#export-csv")
    with open(download.value.path(), newline="") as f:
        rows = list(csv.DictReader(f))
    own = [r for r in rows if r["event"] == "audit.exported"]  # the export holds the record of itself
    assert len(own) == 1 and own[0]["principal_name"] == "test-auditor"
    assert {int(r["seq"]) for r in rows if r is not own[0]} == bob
    assert {r["principal_name"] for r in rows if r is not own[0]} == {"bob"}

    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text(jsonl.read_text().replace('"answer 1"', '"answer one"'))
    assert not verify_file(tampered, trust).ok


def test_admin_creates_and_revokes_a_key(page, server, appliance):
    sign_in(page, appliance.tokens["admin"])
    page.click("header a[href$='/keys']")
    page.fill("#newkey input[name=name]", "ci-bot")
    page.select_option("#newkey select[name=role]", "user")
    page.click("#newkey button[type=submit]")
    secret = page.inner_text("#secret")
    assert secret.startswith("ak-")
    shot(page, "keys")
    key_id = secret[3:19]
    models = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert models.status_code == 200

    page.goto(f"{UI}/keys")  # the secret is shown once
    assert page.locator("#secret").count() == 0
    page.on("dialog", lambda d: d.accept())  # ui.js asks before revoking
    page.click(f"tr[data-key='{key_id}'] form.revoke button")
    assert page.inner_text(f"tr[data-key='{key_id}'] .status") == "revoked"
    assert httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}).status_code == 401

    page.goto(f"{UI}/audit?event=admin.*")  # admin changes, recorded before they took effect
    texts = page.inner_text("#records")
    assert "admin.key_created" in texts and "admin.key_revoked" in texts


def test_user_keys_and_bad_keys_are_refused_and_audited(page, server, appliance):
    sign_in(page, appliance.tokens["user"])
    assert page.url.endswith("/signin") and "only auditor and admin" in page.inner_text("#error")
    sign_in(page, "ak-0000000000000000.not-a-key")
    assert "not valid" in page.inner_text("#error")
    assert not [c for c in page.context.cookies() if c["name"] == "appliance_ui_session"]
    page.goto(f"{UI}/audit")
    assert page.url.endswith("/signin")
    recent = appliance.services.audit.query(limit=20).records
    events = [(r.event, r.status) for r in recent if r.route == "POST /admin/ui/signin"]
    assert ("denial", 403) in events and ("auth_failure", 401) in events

    sign_in(page, appliance.tokens["auditor"])
    page.goto(f"{UI}/keys")
    assert "only admin" in page.inner_text("#error")  # auditors read the log; they do not manage keys


def test_session_cookie_and_sign_out(page, server, appliance):
    sign_in(page, appliance.tokens["auditor"])
    cookie = next(c for c in page.context.cookies() if c["name"] == "appliance_ui_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == UI
    page.click("header .signout button")
    assert page.url.endswith("/signin")
    stolen = httpx.get(f"{server.url}{UI}/audit", cookies={"appliance_ui_session": cookie["value"]})
    assert stolen.status_code == 303  # the old session is gone on the server, not only in the browser
    ins = [r.event for r in appliance.services.audit.query(limit=30).records if r.event.startswith("session.")]
    assert "session.signout" in ins and "session.signin" in ins

    sign_in(page, appliance.tokens["auditor"])
    again = next(c for c in page.context.cookies() if c["name"] == "appliance_ui_session")
    assert again["value"] != cookie["value"]  # a new id at every sign-in


def test_posts_without_their_csrf_token_are_refused(page, server, appliance):
    sign_in(page, appliance.tokens["admin"])
    before = appliance.services.audit.head()
    for path, form in (
        (f"{UI}/keys", {"name": "sneaky", "role": "admin"}),
        (f"{UI}/signout", {}),
        (f"{UI}/integrity/verify", {}),
    ):
        response = page.request.post(path, form=form, max_redirects=0)
        assert response.status == 403 and "CSRF" in response.text()
    wrong = page.request.post(
        f"{UI}/keys", form={"name": "sneaky", "role": "admin", "csrf_token": "forged"}, max_redirects=0
    )
    assert wrong.status == 403
    assert appliance.services.audit.head() == before  # nothing happened, nothing recorded
    page.goto(f"{UI}/keys")
    assert "sneaky" not in page.inner_text("#keys")


def test_every_view_works_without_javascript_under_a_strict_csp(browser, server, appliance):
    context = browser.new_context(base_url=server.url, java_script_enabled=False)
    page = context.new_page()
    try:
        sign_in(page, appliance.tokens["admin"])
        response = page.goto(f"{UI}/audit?action=deny")
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert len(page.locator("#records tbody tr").all()) > 0
        page.click("#older")
        page.click("#records tbody tr:first-child a")
        assert page.locator("#chain").count() == 1
        for view in ("integrity", "keys"):
            page.goto(f"{UI}/{view}")
            assert page.locator("main h1").count() == 1
        html = page.content()
        assert "<script>" not in html and " on" + "click=" not in html  # no inline script anywhere
    finally:
        context.close()
