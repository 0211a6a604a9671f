"""The log's readers on the log, from the admin page: a search and its further pages, records opened, an
export holding its own record and a verification are recorded with who, the filter and the count; and the
banner while forwarding to a collector lags."""

from __future__ import annotations

import json

from appliance.audit import AuditFilter
from tests.ui.conftest import sign_in
from tests.ui.test_integrity import verify
from tests.ui.test_pages import UI

# a collector nothing feeds here (no forwarder runs in the tests' gateway): every record is behind
SETTINGS = {
    "audit_forward": [{"name": "siem", "host": "127.0.0.1", "port": 9, "transport": "tcp"}],
    "audit_forward_lag_warning": 10,
}


def recorded(appliance, event: str) -> list:
    return list(reversed(appliance.services.audit.query(AuditFilter(event=event), limit=100).records))


def test_reads_from_the_page_are_recorded(page, server, appliance, tmp_path):
    sign_in(page, appliance.tokens["auditor"])
    assert "siem lacks" in page.inner_text("#forward-banner")
    page.goto(f"{UI}/audit?event=completion")
    page.click("#older")  # the next page of the same search: counted, not recorded again
    page.goto(f"{UI}/audit/3")
    page.goto(f"{UI}/audit/4")
    with page.expect_download() as download:
        page.goto(f"{UI}/audit?principal=bob")
        page.click("#export-jsonl")
    exported = tmp_path / "bob.jsonl"
    download.value.save_as(exported)
    page.goto(f"{UI}/integrity")
    verify(page)

    searched = [r for r in recorded(appliance, "audit.searched") if r.principal.name == "test-auditor"]
    assert [(r.detail["filter"], r.detail["count"], r.route) for r in searched] == [  # the landing page first
        ("{}", "50", "GET /admin/ui/audit"),
        ('{"event":"completion"}', "50", "GET /admin/ui/audit"),
        ('{"principal":"bob"}', "50", "GET /admin/ui/audit"),
    ]
    assert [r.detail["seq"] for r in recorded(appliance, "audit.viewed")] == ["3"]  # 4: in the window
    own = [json.loads(line) for line in exported.read_text().splitlines() if '"audit.exported"' in line]
    assert len(own) == 1 and own[0]["detail"]["filter"] == '{"principal":"bob"}'
    assert own[0]["principal"]["name"] == "test-auditor"
    verified = recorded(appliance, "audit.verified")
    assert verified and verified[-1].detail["result"] == "ok" and verified[-1].principal.name == "test-auditor"
