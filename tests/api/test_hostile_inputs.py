"""One hostile caller cannot take the service from the others: each defect found as an attacker, as a test."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest

from appliance.audit import AuditFilter
from tests.api.helpers import chat_scope, records, sse_events
from tests.api.scripted import answer

MSG = [{"role": "user", "content": "Hello there"}]


def chat(**extra) -> dict:
    return {"model": "tiny", "messages": MSG, "max_tokens": 3, "temperature": 0, **extra}


async def test_negative_and_huge_seeds_never_wedge_the_engine(client, appliance):
    settings = appliance.settings
    for seed in (-1, -(2**63)):
        r = await client.post("/v1/chat/completions", json=chat(seed=seed, temperature=1))
        assert r.status_code == 200, r.text  # OpenAI's int64 seeds are all accepted
    for seed in (2**63, -(2**63) - 1, 2**200):
        r = await client.post("/v1/chat/completions", json=chat(seed=seed))
        assert r.status_code == 400 and r.json()["error"]["param"] == "seed"
    limit = settings.engine_max_batch_size + settings.engine_max_queue
    answers = await asyncio.gather(
        *(client.post("/v1/chat/completions", json=chat(seed=-1 - i, temperature=1)) for i in range(limit + 5)),
        return_exceptions=True,
    )
    assert all(isinstance(a, httpx.Response) and a.status_code in (200, 429) for a in answers)
    assert appliance.services.backend.stats()["live_requests"] == 0
    assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200


async def test_a_failure_while_a_request_is_set_up_gives_its_slot_back(appliance):
    from appliance.engine import EngineError, GenerationRequest

    engine = next(iter(appliance.services.backend._loaded.values())).engine
    for _ in range(engine.max_batch_size + engine.max_queue + 3):
        with pytest.raises(EngineError):
            async for _ in engine.generate(GenerationRequest(messages=MSG, seed=-5)):
                pass
    assert engine.stats()["live_requests"] == 0


@pytest.mark.parametrize("where", ["content", "name", "model", "stop", "tool"])
async def test_lone_surrogates_are_a_400_in_every_field(client, appliance, where):
    bad = "hi\ud800"
    body = chat()
    if where == "content":
        body["messages"] = [{"role": "user", "content": bad}]
    elif where == "name":
        body["messages"] = [{"role": "user", "content": "x", "name": bad}]
    elif where == "model":
        body["model"] = bad
    elif where == "stop":
        body["stop"] = [bad]
    else:
        body["tools"] = [{"type": "function", "function": {"name": "f", "description": bad}}]
    before = appliance.services.audit.head()[0]
    r = await client.post(
        "/v1/chat/completions",
        content=json.dumps(body),  # ASCII: "\\ud800" escapes
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert "not valid Unicode" in r.json()["error"]["message"]
    assert appliance.services.audit.head()[0] == before  # refused before anything was recorded


async def test_surrogate_requests_do_not_fail_their_neighbours(client, appliance, scripted):
    scripted.chunks = answer("Fine.")
    bad = '{"model": "tiny", "messages": [{"role": "user", "content": "hi\\ud800"}]}'
    sent = [
        client.post("/v1/chat/completions", content=bad, headers={"content-type": "application/json"}) for _ in range(3)
    ] + [client.post("/v1/chat/completions", json=chat()) for _ in range(5)]
    statuses = [r.status_code for r in await asyncio.gather(*sent)]
    assert statuses == [400] * 3 + [200] * 5


async def test_nul_in_content_is_served_and_recorded(client, appliance, scripted):
    scripted.chunks = answer("Fine.")
    r = await client.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": "a\x00b"}]))
    assert r.status_code == 200
    assert [x.event for x in records(appliance, r.headers["x-request-id"])] == ["request", "completion"]


async def test_readyz_never_generates(appliance):
    backend = appliance.services.backend
    before = backend.stats()["generated_tokens"]
    async with appliance.client(None) as c:
        answers = await asyncio.gather(*(c.get("/readyz") for _ in range(40)))
    assert all(a.status_code == 200 and a.json()["status"] == "ready" for a in answers)
    assert backend.stats()["generated_tokens"] == before
    await backend.check()  # the replica's own health check is the one that generates
    assert backend.stats()["generated_tokens"] == before + 1


async def test_oversized_input_is_refused_unscanned_and_recorded_by_size(client, appliance, monkeypatch):
    limit = appliance.services.policy.current.pack.input.limits.max_input_chars
    scanned = []
    scanner = appliance.services.policy.current.scanner
    real_scan = scanner.scan
    monkeypatch.setattr(scanner, "scan", lambda text: scanned.append(len(text)) or real_scan(text))
    body = chat(messages=[{"role": "user", "content": "alice@example.com " * (limit // 18 + 1)}])
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "limits.input_chars"
    assert scanned == []
    record = appliance.services.audit.query(AuditFilter(event="denial"), limit=1).records[0]
    assert record.content_mode == "hash" and record.content.startswith("sha256:")
    assert int(record.detail["input_chars"]) > limit and "alice" not in (record.content or "")


async def test_policy_runs_off_the_event_loop(client, appliance, scripted, monkeypatch):
    scripted.chunks = answer("Fine.")
    threads = []
    policy = appliance.services.policy
    real = policy.evaluate_input
    monkeypatch.setattr(policy, "evaluate_input", lambda *a: threads.append(threading.current_thread()) or real(*a))
    assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
    assert threads and threads[0] is not threading.main_thread()


async def test_a_stream_whose_completion_record_fails_ends_in_error_with_one_outcome(
    client, appliance, scripted, monkeypatch
):
    scripted.chunks = answer("Fine.")
    audit = appliance.services.audit
    real = audit.append_async

    async def no_completion(event):
        if event.event == "completion":
            from appliance.audit import AuditUnavailable

            raise AuditUnavailable("disk full")
        return await real(event)

    monkeypatch.setattr(audit, "append_async", no_completion)
    failures = appliance.services.metrics.outcome_failures._value.get()
    r = await client.post("/v1/chat/completions", json=chat(stream=True))
    events = sse_events(r.text)
    assert "[DONE]" not in events and "error" in r.text
    assert [
        e.get("choices", [{}])[0].get("finish_reason") for e in events if isinstance(e, dict) and e.get("choices")
    ].count("stop") == 0
    outcome = [x for x in records(appliance, r.headers["x-request-id"]) if x.event != "request"]
    assert [(x.event, x.error_code) for x in outcome] == [("error", "audit_unavailable")]
    assert appliance.services.metrics.outcome_failures._value.get() == failures + 1


async def test_bad_keys_are_refused_before_the_body_is_read(appliance):
    read = []

    async def receive():
        read.append(1)
        await asyncio.sleep(3600)  # a client that never sends its body

    sent = []

    async def send(message):
        sent.append(message)

    headers = [(b"authorization", b"Bearer nope"), (b"content-length", b"4000000")]
    scope = chat_scope(headers, client=("10.9.9.9", 1234)) | {"app": appliance.app}
    await asyncio.wait_for(appliance.app(scope, receive, send), 10)
    assert sent[0]["status"] == 401 and not read


async def test_failed_authentications_are_throttled_and_aggregated(tmp_path, signed_tiny_bundle, publisher):
    from tests.appliance import make_appliance

    a = make_appliance(
        tmp_path / "var", signed_tiny_bundle, publisher[1], auth_failure_burst=3, auth_failure_rate=0.001
    )
    try:
        async with a.client(None, token="wrong") as c:
            statuses = [(await c.get("/v1/models")).status_code for _ in range(10)]
        assert statuses == [401] * 3 + [429] * 7
        a.services.backend.close()
        a.services.close()  # writes what the window still holds
        from appliance.audit import AuditLog

        with AuditLog.from_settings(a.settings) as log:
            failures = log.query(AuditFilter(event="auth_failure")).records
            assert log.verify().ok
        single = [r for r in failures if r.status == 401]
        aggregated = [r for r in failures if r.status == 429]
        assert len(single) == 3 and len(aggregated) == 1
        assert aggregated[0].detail["count"] == "7" and aggregated[0].source == "127.0.0.1"
        assert aggregated[0].detail["first"] <= aggregated[0].detail["last"]
    finally:
        a.services.audit.close()


@pytest.mark.parametrize(
    "query",
    [
        "since=0001-01-01T00:00:00%2B01:00",
        "since=0999-12-31T00:00:00Z",
        "until=9999-12-31T23:59:59-01:00",
        "principal=a%00b",
        "event=" + "x" * 300,
    ],
)
async def test_audit_query_parameters_are_validated(appliance, query):
    async with appliance.client("auditor") as c:
        r = await c.get(f"/admin/audit?{query}")
    assert r.status_code == 400, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
