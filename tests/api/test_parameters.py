"""No parameter is dropped silently: every parameter of the installed `openai` SDK's create calls is honoured
or refused by name, unknown ones are refused, and docs/api-parameters.md shows the code's own table."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from openai.types.chat import completion_create_params
from openai.types.responses import response_create_params

from appliance.api.parameters import CHAT, RESPONSES, markdown_table
from appliance.api.schemas import ChatCompletionRequest, ResponsesRequest
from tests.api.helpers import records

DOC = Path(__file__).resolve().parents[2] / "docs" / "api-parameters.md"
MSG = [{"role": "user", "content": "Hello"}]
ROUTES = {
    "chat": ("/v1/chat/completions", {"model": "tiny", "messages": MSG}, CHAT),
    "responses": ("/v1/responses", {"model": "tiny", "input": "Hello"}, RESPONSES),
}


def sdk_parameters(params: object) -> set[str]:
    """Every key of a TypedDict union (streaming and not) as the installed SDK declares it."""
    members = typing.get_args(params) or (params,)
    return {name for member in members for name in typing.get_type_hints(member)}


@pytest.mark.parametrize(
    ("table", "params"),
    [(CHAT, completion_create_params.CompletionCreateParams), (RESPONSES, response_create_params.ResponseCreateParams)],
)
def test_every_sdk_parameter_is_decided(table, params):
    sdk = sdk_parameters(params)
    assert sdk - set(table) == set(), "new SDK parameters: decide them in appliance/api/parameters.py"
    assert set(table) - sdk == set(), "the table names parameters the SDK does not have"


@pytest.mark.parametrize(("table", "model"), [(CHAT, ChatCompletionRequest), (RESPONSES, ResponsesRequest)])
def test_the_request_models_take_exactly_the_honoured_parameters(table, model):
    assert {name for name, p in table.items() if p.honoured} == set(model.model_fields)


def write_doc() -> None:
    """Rewrite the tables in docs/api-parameters.md from the code's (the prose around them is kept)."""
    doc = DOC.read_text()
    for heading, table in (("## Chat Completions", CHAT), ("## Responses", RESPONSES)):
        start = doc.index("| Parameter |", doc.index(heading))
        end = doc.find("\n\n", start)
        doc = doc[:start] + markdown_table(table) + (doc[end:] if end >= 0 else "\n")
    DOC.write_text(doc)


def test_the_doc_shows_the_code_tables():
    doc = DOC.read_text()
    for table in (CHAT, RESPONSES):
        assert markdown_table(table) in doc, (
            "run: python -c 'from tests.api.test_parameters import write_doc; write_doc()'"
        )
    assert "docs/api-parameters.md" in (DOC.parents[1] / "README.md").read_text()
    assert "api-parameters.md" in (DOC.parent / "architecture.md").read_text()


@pytest.mark.parametrize("route", ROUTES)
async def test_an_unknown_parameter_is_refused_by_name(client, scripted, route):
    path, body, _ = ROUTES[route]
    r = await client.post(path, json=body | {"respnse_format": {"type": "json_object"}})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["message"] == "Unrecognized request argument supplied: respnse_format"
    assert (err["type"], err["code"], err["param"]) == ("invalid_request_error", "unknown_parameter", "respnse_format")
    assert scripted.calls == []


@pytest.mark.parametrize(
    ("route", "name"),
    [(route, name) for route, (_, _, table) in ROUTES.items() for name, p in sorted(table.items()) if not p.honoured],
)
async def test_each_refused_parameter_is_a_400_naming_it(client, scripted, route, name):
    path, body, _ = ROUTES[route]
    r = await client.post(path, json=body | {name: {"asks": "for something"}})
    assert r.status_code == 400, name
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("unsupported_parameter", name)
    assert err["message"].startswith(f"{name} is not supported: ")
    assert scripted.calls == []


async def test_values_that_ask_for_nothing_are_accepted(client, scripted):
    from tests.api.scripted import answer

    scripted.chunks = answer("ok")
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": MSG,
            "store": False,
            "logprobs": False,
            "n": 1,
            "modalities": ["text"],
            "service_tier": "auto",
            "top_logprobs": None,
            "parallel_tool_calls": False,
        },
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        "/v1/responses",
        json={
            "model": "tiny",
            "input": "Hi",
            "store": False,
            "include": [],
            "truncation": "disabled",
            "background": False,
            "max_tool_calls": 1,
        },
    )
    assert r.status_code == 200, r.text


async def test_reasoning_summary_is_refused_by_name(client, scripted):
    r = await client.post(
        "/v1/responses", json={"model": "tiny", "input": "Hi", "reasoning": {"effort": "low", "summary": "auto"}}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "reasoning.summary"


async def test_end_user_and_metadata_are_in_the_request_record(client, scripted, appliance):
    from tests.api.scripted import answer

    scripted.chunks = answer("ok")
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": MSG,
            "user": "u-42",
            "safety_identifier": "hash-9",
            "metadata": {"ticket": "T-1"},
        },
    )
    assert r.status_code == 200
    detail = records(appliance, r.headers["x-request-id"])[0].detail
    assert detail == {"end_user": "u-42", "safety_identifier": "hash-9", "metadata": '{"ticket": "T-1"}'}
    scripted.chunks = answer("ok")
    r = await client.post("/v1/responses", json={"model": "tiny", "input": "Hi", "user": "u-7"})
    assert records(appliance, r.headers["x-request-id"])[0].detail == {"end_user": "u-7", "response_id": r.json()["id"]}
    r = await client.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": MSG, "metadata": {f"k{i}": "v" for i in range(17)}}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "metadata"


async def test_penalties_and_logit_bias_reach_the_engine(client, scripted):
    from tests.api.scripted import answer

    scripted.chunks = answer("ok")
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": MSG,
            "presence_penalty": 0.5,
            "frequency_penalty": 1.5,
            "logit_bias": {"1234": -100, "99": 5},
        },
    )
    assert r.status_code == 200
    request = scripted.calls[-1]
    assert (request.presence_penalty, request.frequency_penalty) == (0.5, 1.5)
    assert request.logit_bias == {1234: -100.0, 99: 5.0}
    for bad in ({"logit_bias": {"5": 101}}, {"logit_bias": {"-1": 1}}, {"presence_penalty": 3}):
        r = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG, **bad})
        assert r.status_code == 400 and r.json()["error"]["param"] == next(iter(bad))


@pytest.mark.parametrize(
    ("route", "bad", "param"),
    [
        ("chat", {"top_logprobs": 2}, "top_logprobs"),  # without logprobs
        ("chat", {"logprobs": False, "top_logprobs": 0}, "top_logprobs"),
        ("chat", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ("chat", {"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ("chat", {"logprobs": True, "top_logprobs": 2.5}, "top_logprobs"),
        ("chat", {"logprobs": True, "top_logprobs": True}, "top_logprobs"),
        ("chat", {"logprobs": True, "top_logprobs": "3"}, "top_logprobs"),
        ("chat", {"logprobs": "yes"}, "logprobs"),
        ("chat", {"logprobs": 1}, "logprobs"),
        ("responses", {"top_logprobs": 2}, "top_logprobs"),  # without include
        ("responses", {"include": ["message.output_text.logprobs"], "top_logprobs": 30}, "top_logprobs"),
        ("responses", {"include": ["message.output_text.logprobs"], "top_logprobs": False}, "top_logprobs"),
        ("responses", {"include": ["reasoning.encrypted_content"]}, "include"),
    ],
)
async def test_bad_logprobs_values_are_400s_naming_the_parameter(client, scripted, route, bad, param):
    path, body, _ = ROUTES[route]
    r = await client.post(path, json=body | bad)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["type"], err["param"]) == ("invalid_request_error", param) and param in err["message"]
    assert scripted.calls == []


async def test_logprobs_reach_the_engine_and_the_request_record(client, scripted, appliance):
    from tests.api.scripted import answer

    for route, asks, k in (
        ("chat", {"logprobs": True, "top_logprobs": 3}, 3),
        ("chat", {"logprobs": True}, 0),
        ("responses", {"include": ["message.output_text.logprobs"], "top_logprobs": 7}, 7),
    ):
        scripted.chunks = answer("ok")
        path, body, _ = ROUTES[route]
        r = await client.post(path, json=body | asks)
        assert r.status_code == 200, r.text
        assert scripted.calls[-1].logprobs == k
        detail = records(appliance, r.headers["x-request-id"])[0].detail
        assert detail["logprobs"] == f"top_logprobs={k}" and set(detail) <= {"logprobs", "response_id"}
    scripted.chunks = answer("ok")
    r = await client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG})
    assert scripted.calls[-1].logprobs is None and r.json()["choices"][0]["logprobs"] is None
