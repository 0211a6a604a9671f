"""`cached_tokens` through the openai SDK (Chat and Responses, streamed and not), in the audit record, and only
within the caller's scope: another key's identical prompt is computed afresh."""

from __future__ import annotations

import httpx
import openai
from sqlalchemy.orm import Session

from appliance import apikeys
from appliance.api.pipeline import cache_scope
from appliance.db import make_engine

LONG = [{"role": "user", "content": "Describe how the appliance keeps its audit log tamper-evident. " * 6}]


def _client(appliance, token: str) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=appliance.app), base_url="http://appliance/v1")
    return openai.AsyncOpenAI(api_key=token, base_url="http://appliance/v1", http_client=http, max_retries=0)


async def test_cached_tokens_are_reported_on_every_path_and_recorded(appliance):
    client = _client(appliance, appliance.tokens["user"])
    first = await client.chat.completions.create(model="tiny", messages=LONG, max_tokens=2)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    again = await client.chat.completions.create(model="tiny", messages=LONG, max_tokens=2)
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert 0 < cached < again.usage.prompt_tokens and cached % 16 == 0
    assert again.usage.prompt_tokens == first.usage.prompt_tokens  # the full prompt is still what is counted
    record = appliance.services.audit.latest("completion")
    assert record.detail["cached_tokens"] == str(cached)
    assert record.usage.prompt_tokens == again.usage.prompt_tokens  # quotas are charged from this: the full prompt

    stream = await client.chat.completions.create(
        model="tiny", messages=LONG, max_tokens=2, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == cached

    text = LONG[0]["content"]
    await client.responses.create(model="tiny", input=text, max_output_tokens=16)
    done = await client.responses.create(model="tiny", input=text, max_output_tokens=16)
    assert done.usage.input_tokens_details.cached_tokens > 0
    events = [
        e async for e in await client.responses.create(model="tiny", input=text, max_output_tokens=16, stream=True)
    ]
    assert events[-1].type in ("response.completed", "response.incomplete")  # max_output_tokens reached
    assert events[-1].response.usage.input_tokens_details.cached_tokens == done.usage.input_tokens_details.cached_tokens
    assert appliance.services.audit.latest("completion").detail["cached_tokens"] == str(
        done.usage.input_tokens_details.cached_tokens
    )


async def test_another_key_gets_no_hit_on_the_same_prompt(appliance):
    mine = _client(appliance, appliance.tokens["user"])
    await mine.chat.completions.create(model="tiny", messages=LONG, max_tokens=2)
    assert (
        await mine.chat.completions.create(model="tiny", messages=LONG, max_tokens=2)
    ).usage.prompt_tokens_details.cached_tokens
    with Session(make_engine(appliance.settings.database_url)) as session:
        token, _ = apikeys.create_key(session, "another-user", "user")
    theirs = _client(appliance, token)
    done = await theirs.chat.completions.create(model="tiny", messages=LONG, max_tokens=2)
    assert done.usage.prompt_tokens_details.cached_tokens == 0
    assert appliance.services.audit.latest("completion").detail["cached_tokens"] == "0"
    async with appliance.client("auditor") as c:
        metrics = (await c.get("/metrics")).text
    cached = next(line for line in metrics.splitlines() if line.startswith('appliance_engine_kv_bytes{kind="cached"}'))
    assert float(cached.split()[-1]) > 0


def test_the_scope_is_the_key_unless_widened_on_purpose():
    assert cache_scope("key", "k1", "team") == "key:k1"
    assert cache_scope("group", "k1", "team") == "group:team"
    assert cache_scope("group", "k1", None) == "key:k1"  # a key without a group shares with nobody
    assert cache_scope("appliance", "k1", None) == "appliance"
    assert cache_scope("appliance", None, None) is None
