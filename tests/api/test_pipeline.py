"""The audited path with a scripted model: tool calls, withheld reasoning, output guardrails, cancellation."""

from __future__ import annotations

import asyncio
import json

from appliance.engine import FinishEvent, ServedBy, TextEvent, Usage
from appliance.engine.harmony import render_prompt
from appliance.vocabulary import packaged_harmony
from tests.api.helpers import hang_up_mid_stream, records, sse_events
from tests.api.scripted import answer, tool_call

MSG = [{"role": "user", "content": "What is the weather in Oslo?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


async def test_tool_call_shape(client, scripted):
    scripted.chunks = tool_call("get_weather", '{"city": "Oslo"}')
    body = (await client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG, "tools": TOOLS})).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    ]
    assert "reasoning_content" not in choice["message"]  # users never see the chain of thought
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3


async def test_tool_choice_none_hides_tools_from_the_model(client, scripted):
    scripted.chunks = answer("fine")
    await client.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": MSG, "tools": TOOLS, "tool_choice": "none"}
    )
    assert scripted.calls[-1].tools == []
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": MSG,
            "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": "x"}},
        },
    )
    assert r.status_code == 400


async def test_reasoning_shown_to_admin_only(appliance, scripted):
    scripted.chunks = answer("Sunny.", analysis="The user asks about weather.")
    async with appliance.client("admin") as c:
        msg = (await c.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG})).json()
    assert msg["choices"][0]["message"]["reasoning_content"] == "The user asks about weather."
    async with appliance.client("user") as c:
        msg = (await c.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG})).json()
    assert "reasoning_content" not in msg["choices"][0]["message"]
    assert msg["choices"][0]["message"]["content"] == "Sunny."


async def test_output_pii_is_redacted_and_secret_stops_stream(client, scripted, appliance):
    scripted.chunks = [
        [TextEvent("final", "Mail jane.doe@")],
        [TextEvent("final", "example.com now.")],
        [FinishEvent("stop", Usage(10, 6, 0))],
    ]
    r = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG, "stream": True})
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in sse_events(r.text)[:-1] if e["choices"])
    assert "jane.doe" not in text and "now." in text
    scripted.chunks = [
        [TextEvent("final", "The key is AKIAIOSFOD")],
        [TextEvent("final", "NN7EXAMPLE and more")],
        [FinishEvent("stop", Usage(10, 6, 0))],
    ]
    r = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["content_filter_results"]["rule_id"] == "site-out.secrets"
    assert "AKIA" not in r.text
    recs = records(appliance, r.headers["x-request-id"])
    assert recs[-1].event == "completion" and recs[-1].decision.rule_ids == ("site-out.secrets",)


async def test_input_pii_is_redacted_before_the_model(client, scripted, appliance):
    scripted.chunks = answer("ok")
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "My card is 4111 1111 1111 1111, is it valid?"}],
        },
    )
    assert r.status_code == 200 and "redact" in r.headers["x-appliance-policy"]
    assert "4111" not in scripted.calls[-1].messages[-1]["content"]
    rec = records(appliance, r.headers["x-request-id"])[0]
    assert "4111" not in (rec.content or "") and rec.decision.action == "redact"


async def test_client_disconnect_cancels_and_is_audited(appliance, scripted, monkeypatch):
    scripted.chunks = [[TextEvent("final", f"word{i} ")] for i in range(200)]
    scripted.delay = 0.01
    app = appliance.app
    charged: list[int] = []
    monkeypatch.setattr(appliance.services.policy, "charge_tokens", lambda _, tokens: charged.append(tokens))
    body = b'{"model":"tiny","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    key = f"Bearer {appliance.tokens['user']}".encode()
    await hang_up_mid_stream(app, body, [(b"authorization", key), (b"x-request-id", b"req-gone")])
    await asyncio.sleep(0.1)
    assert [r.event for r in records(appliance, "req-gone")] == ["request", "cancelled"]
    assert scripted.closed == 1
    # No usage was reported: charged its whole allowance plus the rendered prompt as the tokenizer counts it
    request = scripted.calls[-1]
    for _ in range(100):  # the first count loads the vocabulary, in a thread
        if charged:
            break
        await asyncio.sleep(0.1)
    prompt = len(render_prompt(packaged_harmony(), request.messages, request.tools, request.reasoning_effort))
    assert prompt > 10 and charged == [request.max_tokens + prompt]  # harmony's framing counts too


async def test_failure_mid_stream_becomes_an_error_event_and_a_record(client, scripted, appliance):
    async def dies(model, request):
        yield [TextEvent("final", "Partial ")]
        raise RuntimeError("replica died")

    scripted.generate = dies
    r = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG, "stream": True})
    assert r.status_code == 200
    assert "event: error" in r.text and "engine_unavailable" in r.text and "[DONE]" not in r.text
    assert [x.event for x in records(appliance, r.headers["x-request-id"])] == ["request", "error"]


async def test_each_outcome_record_names_the_node_that_served_it(client, scripted, appliance):
    """A Serve replica names its node in the first chunk (serving/deployments.py); the record keeps it, on a
    completion and on a replica lost mid-stream alike (non-streamed: a 503 with Retry-After)."""
    scripted.chunks = [[ServedBy("w1"), *answer("Sunny")[0]], *answer("Sunny")[1:]]
    r = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Sunny"
    done = records(appliance, r.headers["x-request-id"])
    assert [x.event for x in done] == ["request", "completion"] and done[1].detail["node"] == "w1"

    async def lost(model, request):
        yield [ServedBy("w1"), TextEvent("final", "Partial ")]
        raise RuntimeError("the worker's replica died")

    scripted.generate = lost
    body = {"model": "tiny", "messages": MSG}
    r = await client.post("/v1/chat/completions", json=body, headers={"x-request-id": "lost-1"})
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert r.json()["error"]["code"] == "engine_unavailable"
    failed = records(appliance, "lost-1")
    assert [x.event for x in failed] == ["request", "error"] and failed[1].detail["node"] == "w1"


async def test_output_guardrails_cover_tool_call_arguments(client, scripted):
    scripted.chunks = tool_call("send_mail", '{"to": "jane.doe@example.com", "body": "hi"}')
    body = (await client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG, "tools": TOOLS})).json()
    args = body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert "jane.doe" not in args and json.loads(args)["body"] == "hi"  # redacted in place, still valid JSON
    scripted.chunks = tool_call("upload", '{"key": "AKIAIOSFODNN7EXAMPLE"}')
    r = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG, "tools": TOOLS})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter" and "AKIA" not in r.text
    assert "tool_calls" not in choice["message"]


async def test_access_denial_keeps_no_raw_pii_in_the_audit(client, scripted, appliance):
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "reasoning_effort": "high",
            "messages": [{"role": "user", "content": "my ssn is 123-45-6789 and card 4111 1111 1111 1111"}],
        },
    )
    assert r.status_code == 403
    denial = [x for x in appliance.services.audit.query(limit=5).records if x.event == "denial"][0]
    assert denial.decision.rule_ids == ("access.reasoning_effort",)
    assert "123-45-6789" not in denial.content and "4111" not in denial.content and "[REDACTED" in denial.content


async def test_input_guardrails_cover_tool_call_arguments_sent_back(client, scripted):
    scripted.chunks = answer("ok")
    history = MSG + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"email": "jane.doe@example.com"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "found"},
    ]
    r = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": history, "tools": TOOLS})
    assert r.status_code == 200
    sent = scripted.calls[-1].messages[1]["tool_calls"][0]["function"]["arguments"]
    assert "jane.doe" not in sent and "[REDACTED" in sent
    history[1]["tool_calls"][0]["function"]["arguments"] = '{"key": "AKIAIOSFODNN7EXAMPLE"}'
    r = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": history, "tools": TOOLS})
    assert r.status_code == 403 and r.json()["error"]["code"] == "site-in.secrets"
