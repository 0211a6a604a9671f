"""Day and month quotas through the API: 429 `quota_exceeded` naming the quota, its denial record, counters
that equal the audit records, the usage report against sums recomputed from the log, reloads, hang-ups."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.orm import Session

from appliance import apikeys
from appliance.api.app import create_app
from appliance.api.errors import ApiError
from appliance.api.services import Services
from appliance.audit import AuditFilter
from appliance.engine import TextEvent
from appliance.usage import QuotaLedger
from appliance.usage.report import OUTCOMES
from tests.api.helpers import hang_up_mid_stream, records
from tests.api.scripted import ScriptedBackend, answer
from tests.appliance import REPO, make_appliance
from tests.conftest import run_cli

USER_QUOTA = "    quotas: [{id: user.daily, period: day, output_tokens: 250}]\n"
ADMIN_QUOTA = "    quotas: [{id: admin.daily, period: day, requests: 2}]\n"
WORDS = " ".join(["w"] * 60)  # with the one word of analysis: 61 completion tokens per answer


@pytest.fixture(scope="module")
def appliance(module_dir, signed_tiny_bundle, publisher):
    """The API tests' pack with a daily output quota for each user key and a request quota for each admin
    key (admins are never exempt by default)."""
    root = module_dir
    pack = root / "policies"
    shutil.copytree(REPO / "tests" / "pack", pack)
    access = pack / "access.yaml"
    text = access.read_text()
    rate = "      rate: {requests_per_minute: 60, tokens_per_minute: 60000}\n"
    admin_rate = "      rate: {requests_per_minute: 120, tokens_per_minute: 200000}\n"
    access.write_text(text.replace(rate, rate + "  " + USER_QUOTA).replace(admin_rate, admin_rate + "  " + ADMIN_QUOTA))
    a = make_appliance(root / "var", signed_tiny_bundle, publisher[1], policy_dir=pack)
    a.pack = pack
    yield a
    a.services.backend.close()
    a.services.close()


def new_key(appliance, role: str = "user") -> tuple[str, str]:
    with Session(appliance.services.database) as session:
        token, info = apikeys.create_key(session, f"quota-{role}", role)
    return token, info.key_id


async def ask(appliance, token: str, max_tokens: int = 100, **extra):
    async with appliance.client(token=token) as c:
        return await c.post(
            "/v1/chat/completions",
            headers={"x-request-id": f"q-{uuid.uuid4().hex}"},
            json={"model": "tiny", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}], **extra},
        )


def outcome_sums(appliance, key_id: str) -> tuple[int, int, int]:
    """(requests, prompt, completion tokens) of a key's outcome records."""
    found = [r for r in all_records(appliance) if r.event in OUTCOMES and r.principal.key_id == key_id]
    return (
        len(found),
        sum(r.usage.prompt_tokens or 0 for r in found),
        sum(r.usage.completion_tokens or 0 for r in found),
    )


async def settled(appliance, key_id: str, requests: int) -> dict[str, int]:
    """The key's one counter once `requests` have settled (by a task that outlives each request)."""
    for _ in range(200):
        counters = appliance.services.quotas.counters(f"key:{key_id}")
        if counters and next(iter(counters.values()))["used_requests"] >= requests:
            break
        await asyncio.sleep(0.025)
    (counter,) = counters.values()
    return counter


def all_records(appliance) -> list:
    return appliance.services.audit.query(AuditFilter(), limit=10_000).records


async def test_a_request_past_the_daily_quota_is_refused_naming_the_quota(appliance, scripted):
    scripted.chunks = answer(WORDS)
    token, key_id = new_key(appliance)
    for n in range(1, 4):  # 61 + 61 + 61 used; a 4th would reserve 100 more, past 250
        assert (await ask(appliance, token)).status_code == 200
        await settled(appliance, key_id, n)
    refused = await ask(appliance, token)
    assert refused.status_code == 429 and "retry-after" not in refused.headers  # it resets hours away
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded" and error["type"] == "rate_limit_error"
    assert error["message"].startswith(
        f"quota user.daily (key:{key_id}: output tokens per day) exceeded: 183 of "
        f"250 used or reserved and this request needs 100; 67 left (a request with max_tokens <= 67 fits); "
        "it resets at "
    )
    assert error["param"] == "max_tokens"  # refused, never shortened: the client learns what would fit
    assert (await ask(appliance, token, max_tokens=60)).status_code == 200  # a smaller request still fits
    (denial,) = [r for r in records(appliance, refused.request.headers["x-request-id"])]
    assert (denial.event, denial.decision.rule_ids, denial.status, denial.error_code) == (
        "denial",
        ("quota.user.daily",),
        429,
        "quota_exceeded",
    )
    counter = await settled(appliance, key_id, 4)
    requests, _, completion = outcome_sums(appliance, key_id)
    assert (counter["used_requests"], counter["used_output_tokens"]) == (requests, completion) == (4, 244)
    assert counter["reserved_output_tokens"] == counter["reserved_requests"] == 0


async def test_retry_after_when_the_quota_resets_soon(appliance, scripted):
    scripted.chunks = answer(WORDS)
    svc = appliance.services
    real = svc.quotas
    svc.quotas = QuotaLedger(
        svc.database, UTC, 3600, clock=lambda: datetime(2026, 12, 4, 23, 58, tzinfo=UTC).timestamp()
    )
    try:
        token, _ = new_key(appliance)
        assert (await ask(appliance, token, max_tokens=200)).status_code == 200
        refused = await ask(appliance, token, max_tokens=200)
    finally:
        svc.quotas = real
    assert refused.status_code == 429 and refused.headers["retry-after"] == "120"
    assert "resets at 2026-12-05T00:00:00+00:00" in refused.json()["error"]["message"]


async def test_admins_count_unless_the_pack_exempts_them_and_changes_apply_on_reload(appliance, scripted):
    scripted.chunks = answer("ok")
    token, key_id = new_key(appliance, "admin")
    assert [(await ask(appliance, token)).status_code for _ in range(3)] == [200, 200, 429]
    access = appliance.pack / "access.yaml"
    original = access.read_text()
    try:
        access.write_text(original.replace("  keys: {}", "  quota_exempt_roles: [admin]\n  keys: {}"))
        async with appliance.client("admin") as admin:
            assert (await admin.post("/admin/policy/reload")).status_code == 200
        assert (await ask(appliance, token)).status_code == 200
        user_token, user_id = new_key(appliance)
        access.write_text(
            original.replace(
                "  keys: {}",
                f"  keys: {{{user_id}: {{group: lab}}}}\n  groups: "
                f"{{lab: {{quotas: [{{id: lab.daily, period: day, "
                f"requests: 1}}]}}}}",
            )
        )
        async with appliance.client("admin") as admin:
            assert (await admin.post("/admin/policy/reload")).status_code == 200
        assert (await ask(appliance, token)).status_code == 429  # exempt no more
        assert (await ask(appliance, user_token)).status_code == 200
        refused = await ask(appliance, user_token)
        assert refused.json()["error"]["message"].startswith("quota lab.daily (group:lab: requests per day)")
        assert records(appliance, refused.request.headers["x-request-id"])[0].decision.rule_ids == ("quota.lab.daily",)
        async with appliance.client("auditor") as auditor:
            metrics = (await auditor.get("/metrics")).text
        assert 'appliance_usage_tokens_total{group="lab",kind="completion",model="tiny"} 2.0' in metrics
    finally:
        access.write_text(original)
        async with appliance.client("admin") as admin:
            assert (await admin.post("/admin/policy/reload")).status_code == 200


async def test_a_client_that_hangs_up_is_charged_its_whole_allowance(appliance, scripted):
    """Hanging up before the engine reports usage never saves budget: the reservation settles in full."""
    scripted.chunks = [[TextEvent("final", f"word{i} ")] for i in range(200)]
    scripted.delay = 0.01
    token, key_id = new_key(appliance)
    body = b'{"model":"tiny","stream":true,"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}'
    await hang_up_mid_stream(appliance.app, body, [(b"authorization", f"Bearer {token}".encode())])
    counter = await settled(appliance, key_id, 1)
    assert (counter["reserved_output_tokens"], counter["used_output_tokens"], counter["used_requests"]) == (0, 100, 1)
    assert outcome_sums(appliance, key_id)[0] == 1


@pytest.mark.parametrize("by", ["key", "group", "model"])
async def test_the_usage_report_equals_the_sums_recomputed_from_the_audit_log(appliance, scripted, by):
    scripted.chunks = answer("a short answer")
    for role in ("user", "admin"):
        token, _ = new_key(appliance, role)
        await ask(appliance, token)
    today = datetime.now(UTC).date()
    start, end = (today - timedelta(days=1)).isoformat(), (today + timedelta(days=1)).isoformat()
    async with appliance.client("auditor") as auditor:
        r = await auditor.get("/admin/usage", params={"by": by, "from": start, "to": end})
    assert r.status_code == 200, r.text
    expected: dict[str, list[int]] = {}
    for rec in all_records(appliance):
        if rec.event in OUTCOMES:
            name = {"key": rec.principal.key_id, "model": rec.model, "group": None}[by] or "-"
            sums = expected.setdefault(name, [0, 0, 0, 0])
            for i, value in enumerate(
                (1, rec.usage.prompt_tokens, rec.usage.completion_tokens, rec.usage.reasoning_tokens)
            ):
                sums[i] += value or 0
    got = {
        row["name"]: [row["requests"], row["input_tokens"], row["output_tokens"], row["reasoning_tokens"]]
        for row in r.json()["data"]
    }
    assert got == expected and sum(v[0] for v in got.values()) > 4


async def test_usage_query_errors_are_400s(appliance):
    async with appliance.client("auditor") as auditor:
        for params in (
            {"from": "2026-12-02", "to": "2026-12-01"},
            {"from": "0999-01-01", "to": "2026-12-01"},
            {"from": "2026-13-01", "to": "2026-12-01"},
            {"from": "2026-12-01"},
        ):
            r = await auditor.get("/admin/usage", params=params)
            assert r.status_code == 400 and r.json()["error"]["message"], params
    async with appliance.client("user") as user:
        assert (await user.get("/admin/usage", params={"from": "2026-12-01", "to": "2026-12-01"})).status_code == 403


def test_the_cli_report_matches_the_api(appliance):
    today = datetime.now(UTC).date().isoformat()
    env = {"APPLIANCE_POLICY_DIR": str(appliance.pack)}
    proc = run_cli(
        "usage",
        "report",
        "--by",
        "model",
        "--from",
        today,
        "--to",
        today,
        "--format",
        "csv",
        data_dir=appliance.settings.data_dir,
        env=env,
        check=True,
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == "model,requests,input_tokens,output_tokens,reasoning_tokens" and lines[1].startswith("tiny,")
    bad = run_cli(
        "usage", "report", "--from", "yesterday", "--to", today, data_dir=appliance.settings.data_dir, env=env
    )
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and "ISO date" in bad.stderr


async def test_per_minute_limits_hold_across_two_replicas(appliance, scripted):
    """The per-minute buckets are in the database: two gateway replicas draw on one bucket (in memory, each
    replica had its own and the key got twice its rate)."""
    scripted.chunks = answer("ok")
    token, key_id = new_key(appliance)
    second = Services.from_settings(appliance.settings, ScriptedBackend(answer("ok")))
    access = appliance.pack / "access.yaml"
    original = access.read_text()
    try:
        access.write_text(original.replace("  keys: {}", f"  keys: {{{key_id}: {{rate: {{requests_per_minute: 2}}}}}}"))
        async with appliance.client("admin") as admin:
            assert (await admin.post("/admin/policy/reload")).status_code == 200
        second.policy.reload(appliance.pack)
        assert (await ask(appliance, token)).status_code == 200
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(second)),
            base_url="http://b",
            headers={"Authorization": f"Bearer {token}"},
        ) as other:
            r = await other.post(
                "/v1/chat/completions",
                json={"model": "tiny", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
            )
        assert r.status_code == 200
        refused = await ask(appliance, token)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
    finally:
        second.close()
        access.write_text(original)
        async with appliance.client("admin") as admin:
            assert (await admin.post("/admin/policy/reload")).status_code == 200


async def test_a_request_refused_before_the_model_gives_its_reservation_back(appliance, scripted, monkeypatch):
    """The request record cannot be written (503, the model never runs): nothing stays reserved or used."""
    scripted.chunks = answer("ok")
    token, key_id = new_key(appliance)
    real = appliance.services.record

    async def failing(event):
        if event.event == "request":
            raise ApiError(503, "audit store unavailable; request refused (fail closed)", code="audit_unavailable")
        return await real(event)

    monkeypatch.setattr(appliance.services, "record", failing)
    assert (await ask(appliance, token)).status_code == 503
    for _ in range(200):  # given back by a task that outlives the request
        (counter,) = appliance.services.quotas.counters(f"key:{key_id}").values()
        if counter["reserved_output_tokens"] == 0:
            break
        await asyncio.sleep(0.025)
    assert counter["reserved_output_tokens"] == counter["used_requests"] == counter["used_output_tokens"] == 0


async def test_the_admin_page_shows_usage_per_day_as_the_report_sums_it(appliance, scripted):
    from tests.api.helpers import PAGE, browser, sign_in

    scripted.chunks = answer("a short answer")
    token, key_id = new_key(appliance)
    await ask(appliance, token)
    today = datetime.now(UTC).date().isoformat()  # the fixture's site zone
    async with appliance.client("auditor") as auditor:
        api = (await auditor.get("/admin/usage", params={"by": "key", "from": today, "to": today})).json()
    row = next(r for r in api["data"] if r["name"] == key_id)
    async with browser(appliance) as c:
        await sign_in(appliance, c, "auditor")
        page = await c.get(f"{PAGE}/usage", params={"by": "key", "from": today, "to": today})
        assert page.status_code == 200 and "<svg" in page.text
        cells = f"<td>{today}</td><td>{key_id}</td><td>{row['requests']}</td><td>{row['input_tokens']}</td>"
        assert cells in page.text
        for bad in ({"from": "x"}, {"by": "nobody"}, {"from": "2026-01-01", "to": "2026-12-31"}):
            assert (await c.get(f"{PAGE}/usage", params=bad)).status_code == 400
