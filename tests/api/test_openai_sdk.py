"""The official `openai` SDK as the client: chat, streaming, tools, reasoning_effort, Responses, errors."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.api.scripted import answer, tool_call

MSG = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def sdk(appliance):
    def make(role: str = "user") -> openai.AsyncOpenAI:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=appliance.app), base_url="http://appliance/v1")
        return openai.AsyncOpenAI(
            api_key=appliance.tokens[role], base_url="http://appliance/v1", http_client=http, max_retries=0
        )

    return make


async def test_chat_and_stream_with_the_real_engine(sdk):
    client = sdk()
    done = await client.chat.completions.create(model="tiny", messages=MSG, max_tokens=4, reasoning_effort="low")
    assert done.usage.completion_tokens == 4 and done.choices[0].finish_reason == "length"
    chunks = [
        c
        async for c in await client.chat.completions.create(
            model="tiny", messages=MSG, max_tokens=4, stream=True, stream_options={"include_usage": True}
        )
    ]
    assert chunks[-1].usage.completion_tokens == 4
    assert [m.id async for m in client.models.list()] == ["tiny"]


async def test_tool_calls_and_responses(sdk, scripted):
    client = sdk()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    scripted.chunks = tool_call("get_weather", '{"city":"Oslo"}')
    done = await client.chat.completions.create(model="tiny", messages=MSG, tools=tools)
    call = done.choices[0].message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city":"Oslo"}')
    scripted.chunks = tool_call("get_weather", '{"city":"Oslo"}')
    stream = await client.chat.completions.create(model="tiny", messages=MSG, tools=tools, stream=True)
    deltas = [c async for c in stream]
    assert deltas[-1].choices[0].finish_reason == "tool_calls"
    assert any(c.choices and c.choices[0].delta.tool_calls for c in deltas)

    scripted.chunks = answer("Hello from the appliance.")
    resp = await client.responses.create(model="tiny", input="Hi")
    assert resp.output_text == "Hello from the appliance."
    scripted.chunks = tool_call("get_weather", '{"city":"Oslo"}')
    resp = await client.responses.create(
        model="tiny",
        input="Weather?",
        tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
    )
    assert resp.output[0].type == "function_call" and resp.output[0].name == "get_weather"
    scripted.chunks = answer("Streamed.")
    events = [e async for e in await client.responses.create(model="tiny", input="Hi", stream=True)]
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "Streamed."


async def test_errors_raise_the_sdk_exceptions(sdk):
    with pytest.raises(openai.AuthenticationError):
        await openai.AsyncOpenAI(
            api_key="wrong", base_url="http://appliance/v1", max_retries=0, http_client=sdk()._client
        ).models.list()
    with pytest.raises(openai.NotFoundError):
        await sdk().chat.completions.create(model="nope", messages=MSG)
    with pytest.raises(openai.BadRequestError):
        await sdk().chat.completions.create(model="tiny", messages=MSG, n=3)
    with pytest.raises(openai.PermissionDeniedError) as exc:
        await sdk("auditor").chat.completions.create(model="tiny", messages=MSG)
    assert exc.value.code == "role_forbidden"
