"""Stored Responses with the trained demo model: the README's chained example run as printed, and the
OpenAI Agents SDK running a multi-turn agent on `previous_response_id` (a user key: its stored output
holds no reasoning, so the chained prompt is exactly the tool loop the demo model learned)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import httpx
import openai
import pytest
from starlette.testclient import TestClient

from appliance.audit import AuditFilter
from appliance.demo.conversations import TOOLS

MODEL = "gpt-oss-demo"
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
WEATHER = {"city": "Paris", "temperature_c": 18, "condition": "cloudy"}


def readme_chain_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    return next(b for b in blocks if "previous_response_id" in b)


def test_the_readme_chained_example_works_as_printed(demo, monkeypatch):
    """The block is executed as it stands, with its client pointed at the in-process appliance."""
    http = TestClient(demo.app, base_url="http://127.0.0.1:8000")
    real = openai.OpenAI

    def client(base_url: str, api_key: str) -> openai.OpenAI:
        return real(base_url=base_url, api_key=api_key, http_client=http, max_retries=0)

    monkeypatch.setattr(openai, "OpenAI", client)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(readme_chain_example(), {"KEY": demo.tokens["user"]})
    expected = re.search(r"print\(second.output_text\)\s+# (.*)", readme_chain_example()).group(1)
    assert (
        printed.getvalue().strip().splitlines()[-1] == expected
    )  # (the log may print before it) == "It is 18 °C and cloudy in Paris right now."


@pytest.fixture
def agents_sdk():
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)  # its tracer would export to OpenAI
    return agents


async def test_the_agents_sdk_runs_a_multi_turn_agent_on_stored_responses(demo, agents_sdk):
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=demo.app), base_url="http://appliance/v1")
    client = openai.AsyncOpenAI(
        api_key=demo.tokens["user"], base_url="http://appliance/v1", http_client=http, max_retries=0, timeout=120
    )
    asked: list[str] = []

    async def weather(_ctx, arguments: str) -> str:
        asked.append(json.loads(arguments)["city"])
        return json.dumps(WEATHER)

    tools = [
        agents_sdk.FunctionTool(
            name=t["function"]["name"],
            description=t["function"]["description"],
            params_json_schema=t["function"]["parameters"],
            on_invoke_tool=weather,
            strict_json_schema=False,
        )
        for t in TOOLS
    ]
    agent = agents_sdk.Agent(
        name="weather",
        tools=tools,
        model=agents_sdk.OpenAIResponsesModel(model=MODEL, openai_client=client),
        model_settings=agents_sdk.ModelSettings(temperature=0, max_tokens=300),
    )
    first = await agents_sdk.Runner.run(agent, "What is the weather in Paris?", auto_previous_response_id=True)
    assert asked == ["Paris"]
    assert first.final_output == "It is 18 °C and cloudy in Paris right now."
    responses = [r.response_id for r in first.raw_responses]
    stored = [await client.responses.retrieve(r) for r in responses]
    assert [s.previous_response_id for s in stored] == [None, responses[0]]  # the second turn sent only the output
    assert [i.type for i in (await client.responses.input_items.list(responses[1])).data] == ["function_call_output"]

    second = await agents_sdk.Runner.run(
        agent, "What is the capital of France?", previous_response_id=first.last_response_id
    )
    assert isinstance(second.final_output, str) and second.final_output
    chained = await client.responses.retrieve(second.last_response_id)
    assert chained.previous_response_id == first.last_response_id
    (newest,) = demo.services.audit.query(AuditFilter(event="request"), limit=1).records
    assert newest.detail["response_id"] == chained.id
    assert newest.detail["previous_response_id"] == first.last_response_id
