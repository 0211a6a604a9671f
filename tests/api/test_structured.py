"""Structured outputs and forced tool calls with the trained demo model and the official `openai` SDK.

The demo model never writes JSON on its own (it answers its memorised sentences), so every answer that
validates here was made valid by the grammar; its reasoning channel stays free. It also never closes a
string it was not trained to write, so the schemas here bound their strings (a real model closes them).
The admin key is used for its rate limit and for `high` effort.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from appliance.audit import AuditFilter
from appliance.demo.conversations import TOOLS
from tests.api.schema_corpus import CORPUS, HOSTILE

MODEL = "gpt-oss-demo"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
BOUNDED_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"The demo model's {name}, with a bounded argument.",
            "parameters": {
                "type": "object",
                "properties": {arg: {"type": "string", "maxLength": 12}},
                "required": [arg],
                "additionalProperties": False,
            },
        },
    }
    for name, arg in (("get_weather", "city"), ("calculator", "expression"))
]


class City(BaseModel):
    name: str = Field(max_length=30)
    population: int
    tags: list[Literal["capital", "port", "old"]] = Field(max_length=3)


@pytest.fixture
def client(demo) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=demo.app), base_url="http://appliance/v1")
    return openai.AsyncOpenAI(
        api_key=demo.tokens["admin"], base_url="http://appliance/v1", http_client=http, max_retries=0, timeout=120
    )


def json_schema_format(schema: dict, name: str = "answer") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


async def test_the_demo_model_answers_prose_without_a_schema(client):
    reply = await client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0)
    assert reply.choices[0].message.content == "The capital of France is Paris."


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
async def test_chat_parse_with_a_pydantic_model(client, demo, effort):
    done = await client.chat.completions.parse(
        model=MODEL, messages=QUESTION, response_format=City, reasoning_effort=effort, temperature=0, max_tokens=300
    )
    choice = done.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, City)
    rec = last_request(demo)
    assert rec.detail["response_format"] == "json_schema" and rec.detail["constrained"] == "true"
    assert len(rec.detail["schema_sha256"]) == 64


def last_request(demo):
    page = demo.services.audit.query(AuditFilter(), limit=200)
    return max((r for r in page.records if r.event == "request"), key=lambda r: r.seq)


async def test_responses_parse_with_text_format(client):
    done = await client.responses.parse(
        model=MODEL, input="What is the capital of France?", text_format=City, temperature=0, max_output_tokens=300
    )
    assert done.status == "completed"
    assert isinstance(done.output_parsed, City)


async def test_a_streamed_answer_is_valid_json_too(client):
    schema = CORPUS["nested"]
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        stream=True,
        temperature=0,
        max_tokens=300,
        response_format=json_schema_format(schema),
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(text), schema)


async def test_json_object_starts_an_object(client):
    # unbounded strings: the demo model writes one until max_tokens, but inside a JSON object
    done = await client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=40, response_format={"type": "json_object"}
    )
    assert done.choices[0].message.content.startswith('{"')


@pytest.mark.parametrize("temperature", [0, 1.0])
async def test_every_stopped_answer_over_the_corpus_validates(client, temperature):
    stopped = 0
    for i, (name, schema) in enumerate(CORPUS.items()):
        done = await client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            temperature=temperature,
            seed=i,
            max_tokens=400,
            reasoning_effort=("low", "medium", "high")[i % 3],
            response_format=json_schema_format(schema, name),
        )
        choice = done.choices[0]
        if choice.finish_reason == "stop":
            stopped += 1
            jsonschema.validate(json.loads(choice.message.content), schema, format_checker=jsonschema.FormatChecker())
    assert stopped >= len(CORPUS) - 2  # a few may run out of tokens inside a long string; none may be invalid


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
async def test_a_forced_call_is_a_call_with_valid_arguments(client, choice):
    # the demo model answers this question in prose when left alone
    done = await client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=300, tools=BOUNDED_TOOLS, tool_choice=choice
    )
    assert done.choices[0].finish_reason == "tool_calls"
    call = done.choices[0].message.tool_calls[0]
    tool = next(t["function"] for t in BOUNDED_TOOLS if t["function"]["name"] == call.function.name)
    jsonschema.validate(json.loads(call.function.arguments), tool["parameters"])
    if isinstance(choice, dict):
        assert call.function.name == "get_weather"


async def test_tool_choice_none_forbids_a_call(client):
    free = await client.chat.completions.create(model=MODEL, messages=WEATHER, temperature=0, tools=TOOLS)
    assert free.choices[0].finish_reason == "tool_calls"  # what the demo model does on its own
    done = await client.chat.completions.create(
        model=MODEL, messages=WEATHER, temperature=0, max_tokens=300, tools=BOUNDED_TOOLS, tool_choice="none"
    )
    assert done.choices[0].finish_reason == "stop" and not done.choices[0].message.tool_calls


async def test_strict_tool_arguments_follow_the_schema(client):
    strict = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "strict": True,
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"enum": ["Oslo", "Lima"]},
                        "days": {"type": "integer", "minimum": 1, "maximum": 7},
                    },
                    "required": ["city", "days"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    done = await client.chat.completions.create(
        model=MODEL, messages=WEATHER, temperature=0, max_tokens=300, tools=strict
    )
    call = done.choices[0].message.tool_calls[0]
    jsonschema.validate(json.loads(call.function.arguments), strict[0]["function"]["parameters"])


@pytest.mark.parametrize("name", HOSTILE)
async def test_a_schema_that_cannot_be_enforced_is_a_400_naming_its_field(client, name):
    with pytest.raises(openai.BadRequestError) as exc:
        await client.chat.completions.create(
            model=MODEL, messages=QUESTION, response_format=json_schema_format(HOSTILE[name])
        )
    assert exc.value.param == "response_format" and exc.value.code == "invalid_schema"
    tools = [*TOOLS, {"type": "function", "function": {"name": "bad", "parameters": HOSTILE[name]}}]
    with pytest.raises(openai.BadRequestError) as exc:
        await client.chat.completions.create(model=MODEL, messages=QUESTION, tools=tools, tool_choice="required")
    assert exc.value.param == f"tools[{len(TOOLS)}].function.parameters"
    with pytest.raises(openai.BadRequestError) as exc:
        await client.responses.create(
            model=MODEL, input="Hi", text={"format": {"type": "json_schema", "name": "x", "schema": HOSTILE[name]}}
        )
    assert exc.value.param == "text.format"


async def test_the_reason_names_the_keyword(client):
    with pytest.raises(openai.BadRequestError) as exc:
        await client.chat.completions.create(
            model=MODEL, messages=QUESTION, response_format=json_schema_format(HOSTILE["unsupported_keyword"])
        )
    assert '"if"' in exc.value.message
    ok = await client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0)
    assert ok.choices[0].finish_reason == "stop"  # still serving


async def test_text_verbosity_is_refused_by_name(client):
    with pytest.raises(openai.BadRequestError) as exc:
        await client.responses.create(model=MODEL, input="Hi", text={"verbosity": "high"})
    assert exc.value.param == "text.verbosity"


async def test_a_streamed_response_with_text_format_is_valid_json(client, demo):
    schema = CORPUS["refs"]
    stream = await client.responses.create(
        model=MODEL,
        input="What is the capital of France?",
        stream=True,
        temperature=0,
        max_output_tokens=300,
        text={"format": {"type": "json_schema", "name": "order", "schema": schema}},
    )
    events = [e async for e in stream]
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    jsonschema.validate(json.loads(text), schema)
    assert json.loads(events[-1].response.output_text) == json.loads(text)
    assert last_request(demo).detail["response_format"] == "json_schema"


@pytest.fixture
def agents_sdk():
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)  # its tracer would export to OpenAI
    return agents


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_the_agents_sdk_gets_its_output_type(client, agents_sdk, api):
    kind = agents_sdk.OpenAIChatCompletionsModel if api == "chat" else agents_sdk.OpenAIResponsesModel
    agent = agents_sdk.Agent(
        name="geo",
        instructions="Answer about cities.",
        output_type=City,
        model=kind(model=MODEL, openai_client=client),
        model_settings=agents_sdk.ModelSettings(temperature=0, max_tokens=300),
    )
    result = await agents_sdk.Runner.run(agent, "What is the capital of France?")
    assert isinstance(result.final_output, City)


async def test_the_agents_sdk_strict_function_tool_is_called_with_valid_arguments(client, agents_sdk):
    called = []

    @agents_sdk.function_tool
    def get_weather(city: Literal["Oslo", "Lima"], days: Annotated[int, Field(ge=1, le=7)]) -> str:
        """The forecast for a city."""
        called.append((city, days))
        return "sunny"

    agent = agents_sdk.Agent(
        name="weather",
        tools=[get_weather],
        tool_use_behavior="stop_on_first_tool",
        model=agents_sdk.OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
        model_settings=agents_sdk.ModelSettings(temperature=0, max_tokens=300, tool_choice="required"),
    )
    result = await agents_sdk.Runner.run(agent, "What is the capital of France?")
    assert result.final_output == "sunny" and called and called[0][0] in ("Oslo", "Lima")


class ReadmeCity(BaseModel):  # the README's example, as printed there
    name: str = Field(max_length=40)
    population: int = Field(ge=0, le=10**9)


async def test_the_readme_example(client):
    done = await client.chat.completions.parse(
        model=MODEL, response_format=ReadmeCity, messages=[{"role": "user", "content": "The capital of France?"}]
    )
    assert isinstance(done.choices[0].message.parsed, ReadmeCity)
