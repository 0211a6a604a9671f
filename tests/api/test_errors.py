"""Bad input gets OpenAI-shaped error JSON with the right status, and the model is never called."""

from __future__ import annotations

import pytest

from appliance.engine import EngineBusy

MSG = [{"role": "user", "content": "Hello"}]


def assert_error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code:
        assert err["code"] == code
    return err


@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": "tiny", "messages": MSG, "n": 2}, "n"),
        ({"model": "tiny", "messages": []}, "messages"),
        ({"model": "tiny"}, "messages"),
        ({"model": "tiny", "messages": MSG, "temperature": 9}, "temperature"),
        ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"model": "tiny", "messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
async def test_invalid_requests_are_400(client, scripted, body, param):
    err = assert_error(await client.post("/v1/chat/completions", json=body), 400)
    assert err["param"].startswith(param)
    assert scripted.calls == []


async def test_malformed_json_is_400(client):
    r = await client.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert_error(r, 400)


async def test_unknown_model_is_404(client, scripted):
    assert_error(
        await client.post("/v1/chat/completions", json={"model": "gpt-5", "messages": MSG}), 404, "model_not_found"
    )


async def test_unknown_route_is_404(client):
    assert_error(await client.get("/v1/nothing"), 404)


async def test_body_too_large_is_413(client, scripted):
    big = "x" * (5 * 1024 * 1024)
    r = await client.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": big}]}
    )
    assert_error(r, 413, "request_too_large")
    assert scripted.calls == []


async def test_policy_denial_is_403_with_rule_id(client, scripted):
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "use my key AKIAIOSFODNN7EXAMPLE to list buckets"}],
        },
    )
    err = assert_error(r, 403, "site-in.secrets")
    assert "AKIA" not in r.text
    assert "site-in.secrets" in err["message"]
    assert scripted.calls == []


async def test_engine_busy_is_429_with_retry_after(client, scripted):
    async def busy(model, request):
        raise EngineBusy("full")
        yield  # pragma: no cover

    scripted.generate = busy
    r = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG})
    assert_error(r, 429, "engine_busy")
    assert int(r.headers["retry-after"]) >= 1
    r = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG, "stream": True})
    assert_error(r, 429, "engine_busy")


async def test_rate_limit_is_429(appliance, scripted):
    from tests.api.scripted import answer

    scripted.chunks = answer("ok")
    async with appliance.client("admin") as admin:
        created = (await admin.post("/admin/keys", json={"name": "burst", "role": "auditor"})).json()
    # auditors may not prompt at all: 403 from access policy, not 429
    async with appliance.client(token=created["key"]) as c:
        r = await c.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG})
    assert r.status_code == 403
    async with appliance.client("admin") as admin:  # a key of its own: budgets are per key
        burst = (await admin.post("/admin/keys", json={"name": "burst-user", "role": "user"})).json()
    statuses = []
    async with appliance.client(token=burst["key"]) as c:
        for _ in range(70):
            statuses.append((await c.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG})).status_code)
            if statuses[-1] == 429:
                break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}


async def test_audit_unavailable_is_503_and_model_never_called(appliance, scripted):
    from appliance.audit import AuditUnavailable

    real = appliance.services.audit.append_async

    async def broken(event):
        raise AuditUnavailable("disk full")

    appliance.services.audit.append_async = broken
    try:
        async with appliance.client("admin") as c:
            r = await c.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG})
    finally:
        appliance.services.audit.append_async = real
    assert_error(r, 503, "audit_unavailable")
    assert scripted.calls == []


async def test_chunked_body_too_large_is_413(client, scripted):
    async def chunks():
        for _ in range(5):
            yield b"x" * (1024 * 1024)

    r = await client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413)
    assert scripted.calls == []


async def test_image_content_and_bad_tool_choice_are_400(client, scripted):
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    assert_error(
        await client.post(
            "/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": image}]}
        ),
        400,
    )
    assert_error(
        await client.post("/v1/responses", json={"model": "tiny", "input": "hi", "tool_choice": {"function": "f"}}), 400
    )
