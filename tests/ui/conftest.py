"""The admin page in real headless Chromium (Debian's, driven by Playwright) against a live appliance.

One appliance and one uvicorn server per test module; the audit log is seeded with enough records for
several pages. No Ray: the in-process appliance of tests/appliance.py.
"""

from __future__ import annotations

import shutil
from urllib.parse import urlsplit

import pytest

from appliance.audit import AuditEvent, RecordDecision, RecordUsage
from appliance.principal import Principal
from tests.appliance import make_appliance
from tests.ui.server import LiveServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SEEDED = 240  # request/outcome pairs: 480 records, ten pages of 50

if shutil.which(CHROMIUM) is None:
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def seed(audit, pairs: int = SEEDED) -> None:
    """Request/outcome pairs from two users, some redacted, denied, filtered or failed."""
    users = [
        Principal(key_id="1111aaaa2222bbbb", name="alice", role="user"),
        Principal(key_id="3333cccc4444dddd", name="bob", role="user"),
    ]
    for i in range(pairs):
        who, rid = users[(i // 3) % 2], f"req_seed{i:04d}"
        action = "deny" if i % 10 == 3 else "redact" if i % 10 == 5 else "allow"
        base = {
            "request_id": rid,
            "principal": who,
            "source": "10.0.0.7",
            "route": "POST /v1/chat/completions",
            "model": "tiny",
            "policy_revision": "rev-a" if i < pairs // 2 else "rev-b",
        }
        content = f"question {i} about {'invoices' if i % 7 == 0 else 'weather'}"
        audit.append(
            AuditEvent(
                event="request",
                **base,
                content_mode="redacted",
                content=content,
                decision=RecordDecision(
                    action=action,
                    rule_ids=("pii.email",) if action == "redact" else (),
                    findings={"email": 1} if action == "redact" else {},
                ),
            )
        )
        if action == "deny":
            audit.append(
                AuditEvent(
                    event="denial",
                    **base,
                    status=403,
                    error_code="policy_denied",
                    decision=RecordDecision(action="deny", rule_ids=("topic.block",)),
                )
            )
        elif i % 10 == 7:
            audit.append(AuditEvent(event="error", **base, status=500, error_code="engine_failed"))
        else:
            finish = "content_filter" if i % 10 == 9 else "stop"
            audit.append(
                AuditEvent(
                    event="completion",
                    **base,
                    status=200,
                    usage=RecordUsage(prompt_tokens=12, completion_tokens=30),
                    latency_ms=40,
                    content=f"answer {i}",
                    content_mode="redacted",
                    detail={"finish_reason": finish},
                    decision=RecordDecision(action="deny" if finish == "content_filter" else "allow"),
                )
            )


@pytest.fixture(scope="module")
def appliance(request, module_dir, signed_tiny_bundle, publisher):
    """One appliance per module; a module's SETTINGS (a dict) overrides settings."""
    a = make_appliance(
        module_dir / "var",
        signed_tiny_bundle,
        publisher[1],
        audit_checkpoint_every=100,
        **getattr(request.module, "SETTINGS", {}),
    )
    seed(a.services.audit)
    yield a
    a.services.backend.close()
    a.services.close()


@pytest.fixture(scope="module")
def server(appliance):
    with LiveServer(appliance.app) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh browser context (no cookies) whose every request is recorded, to prove none leaves."""
    context = browser.new_context(base_url=server.url, accept_downloads=True)
    pg = context.new_page()
    pg.requested = []
    pg.on("request", lambda r: pg.requested.append(r.url))
    yield pg
    context.close()


def sign_in(page, token: str) -> None:
    page.goto("/admin/ui/signin")
    page.fill("input[name=key]", token)
    page.click("button[type=submit]")


def origins(urls: list[str]) -> set[str]:
    return {f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" for u in urls}
