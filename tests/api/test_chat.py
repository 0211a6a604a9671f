"""Chat completions and responses through the real engine (tiny random model) and the audit trail."""

from __future__ import annotations

from tests.api.helpers import records, sse_events

MSG = [{"role": "user", "content": "Hello there"}]


async def test_non_streaming_usage_and_audit(client, appliance):
    r = await client.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": MSG, "max_tokens": 6, "temperature": 0}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] == 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + 6
    recs = records(appliance, r.headers["x-request-id"])
    assert [x.event for x in recs] == ["request", "completion"]
    assert (
        recs[1].usage.completion_tokens == 6 and recs[1].policy_revision == appliance.services.policy.current.revision
    )
    assert recs[1].principal.role == "user" and recs[1].bundle_version == "1.0.0"


async def test_streaming_ends_with_finish_reason_usage_and_done(client, appliance):
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": MSG,
            "max_tokens": 5,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    assert events[-3]["choices"][0]["finish_reason"] == "length"
    assert events[-2]["usage"]["completion_tokens"] == 5
    assert [x.event for x in records(appliance, r.headers["x-request-id"])] == ["request", "completion"]


async def test_seed_reproduces(client):
    body = {"model": "tiny", "messages": MSG, "max_tokens": 8, "seed": 7, "temperature": 1.0}
    a = (await client.post("/v1/chat/completions", json=body)).json()
    b = (await client.post("/v1/chat/completions", json=body)).json()
    assert a["choices"][0]["message"] == b["choices"][0]["message"]


async def test_responses_api(client):
    r = await client.post(
        "/v1/responses",
        json={
            "model": "tiny",
            "input": "Hi",
            "max_output_tokens": 4,
            "instructions": "Be brief",
            "reasoning": {"effort": "low"},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "response" and body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["usage"]["output_tokens"] == 4 and body["usage"]["input_tokens"] > 0
    r = await client.post(
        "/v1/responses", json={"model": "tiny", "input": "Hi", "max_output_tokens": 4, "stream": True}
    )
    kinds = [e["type"] for e in sse_events(r.text)]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")


async def test_models_lists_the_active_bundle(client):
    body = (await client.get("/v1/models")).json()
    assert [m["id"] for m in body["data"]] == ["tiny"]
    assert (await client.get("/v1/models/tiny")).json()["version"] == "1.0.0"


async def test_reasoning_effort_cap_is_a_policy_denial(client):
    r = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG, "reasoning_effort": "high"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "access.reasoning_effort"


async def test_health_probes_need_no_key(appliance):
    async with appliance.client(None) as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        assert (await c.get("/readyz")).status_code == 200


async def test_metrics(appliance):
    async with appliance.client("auditor") as c:
        text = (await c.get("/metrics")).text
    assert "appliance_requests_total" in text and "appliance_engine_batch_occupancy" in text
    assert 'appliance_engine_kv_bytes{kind="budget"}' in text
