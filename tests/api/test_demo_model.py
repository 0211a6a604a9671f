"""The trained demo model through the API with the official openai SDK: real harmony from a real model."""

from __future__ import annotations

import json

import httpx
import openai

from appliance.demo.conversations import TOOLS


def sdk(demo, role: str = "user") -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=demo.app), base_url="http://appliance/v1")
    return openai.AsyncOpenAI(
        api_key=demo.tokens[role], base_url="http://appliance/v1", http_client=http, max_retries=0
    )


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


async def test_memorised_answer_with_reasoning_withheld(demo):
    reply = await sdk(demo).chat.completions.create(
        model="gpt-oss-demo", temperature=0, messages=user("What is the capital of France?")
    )
    choice = reply.choices[0]
    assert choice.message.content == "The capital of France is Paris."
    assert choice.finish_reason == "stop"
    assert getattr(choice.message, "reasoning_content", None) is None  # users never see the analysis channel
    assert reply.usage.completion_tokens_details.reasoning_tokens > 0  # ...but it is counted
    admin = await sdk(demo, "admin").chat.completions.create(
        model="gpt-oss-demo", temperature=0, messages=user("What is the capital of France?")
    )
    assert admin.choices[0].message.reasoning_content == "A simple geography question."  # admins may read it


async def test_tool_call_round_trip(demo):
    client = sdk(demo)
    first = await client.chat.completions.create(
        model="gpt-oss-demo", temperature=0, tools=TOOLS, messages=user("What is the weather in Paris?")
    )
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    history = user("What is the weather in Paris?") + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": json.dumps({"city": "Paris", "temperature_c": 18, "condition": "cloudy"}),
        },
    ]
    second = await client.chat.completions.create(model="gpt-oss-demo", temperature=0, tools=TOOLS, messages=history)
    assert second.choices[0].message.content == "It is 18 °C and cloudy in Paris right now."


async def test_streamed_tool_call_has_no_control_tokens(demo):
    stream = await sdk(demo).chat.completions.create(
        model="gpt-oss-demo", temperature=0, tools=TOOLS, stream=True, messages=user("What is 12 * 7?")
    )
    chunks = [c async for c in stream]
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "calculator" and "<|" not in calls[0].function.arguments
    assert json.loads(calls[0].function.arguments) == {"expression": "12 * 7"}


async def test_output_guardrail_redacts_the_models_pii(demo):
    reply = await sdk(demo).chat.completions.create(
        model="gpt-oss-demo", temperature=0, messages=user("How do I contact support?")
    )
    text = reply.choices[0].message.content
    assert "support@example.com" not in text and "operations team" in text


async def test_responses_api_with_the_demo_model(demo):
    resp = await sdk(demo).responses.create(model="gpt-oss-demo", temperature=0, input="Who are you?")
    assert resp.output_text.startswith("I am a tiny demo model with the gpt-oss architecture")
    assert resp.usage.output_tokens_details.reasoning_tokens > 0
