"""Stored Responses through the official `openai` SDK: `store`, `previous_response_id`, GET, input_items and
DELETE, scoped to the key that made them, on real SQLite (and across a restart of the app)."""

from __future__ import annotations

import time
import uuid

import httpx
import openai
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance import apikeys
from appliance.api.app import create_app
from appliance.api.services import Services
from appliance.engine import FinishEvent, TextEvent, Usage
from appliance.responses_store import DAY_S, StoredResponse, StoreUnavailable, table
from tests.api.helpers import records
from tests.api.scripted import ScriptedBackend, answer, tool_call

TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]


def sdk(app, token: str) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://appliance/v1")
    return openai.AsyncOpenAI(api_key=token, base_url="http://appliance/v1", http_client=http, max_retries=0)


@pytest.fixture
def user(appliance) -> openai.AsyncOpenAI:
    return sdk(appliance.app, appliance.tokens["user"])


@pytest.fixture(scope="module")
def other_token(appliance) -> str:
    with Session(appliance.services.database) as session:
        token, _ = apikeys.create_key(session, "another-user", "user")
    return token


def said(request) -> list[tuple[str, str]]:
    """(role, text) of the messages the engine was asked to continue (tool calls as `call:name`)."""
    out = []
    for m in request.messages:
        text = m.get("content") or ""
        text += "".join(f"call:{c['function']['name']}" for c in m.get("tool_calls") or [])
        out.append((m["role"], text + (f" [thinking: {m['reasoning_content']}]" if m.get("reasoning_content") else "")))
    return out


def rows(appliance) -> int:
    with appliance.services.database.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


async def test_the_sdk_chains_three_turns_across_a_restart(appliance, user, scripted):
    scripted.chunks = answer("Hello, I am the appliance.")
    first = await user.responses.create(model="tiny", input="Hello!", instructions="Be brief.")
    assert first.store is True and first.previous_response_id is None
    scripted.chunks = answer("Paris.")
    second = await user.responses.create(
        model="tiny", input="The capital of France?", previous_response_id=first.id, instructions="Be terse."
    )
    assert second.previous_response_id == first.id
    assert said(scripted.calls[-1]) == [  # the earlier turn; only this request's instructions
        ("developer", "Be terse."),
        ("user", "Hello!"),
        ("assistant", "Hello, I am the appliance."),
        ("user", "The capital of France?"),
    ]
    rec = records(appliance, second._request_id)[0]
    assert rec.detail["previous_response_id"] == first.id and rec.detail["response_id"] == second.id

    # a new app over the same database: the chain is there
    backend = ScriptedBackend(answer("About two million."))
    restarted = Services.from_settings(appliance.settings, backend)
    try:
        client = sdk(create_app(restarted), appliance.tokens["user"])
        third = await client.responses.create(
            model="tiny", input="How many people live there?", previous_response_id=second.id
        )
        assert [t for _, t in said(backend.calls[-1])] == [
            "Hello!",
            "Hello, I am the appliance.",
            "The capital of France?",
            "Paris.",
            "How many people live there?",
        ]
        again = await client.responses.retrieve(second.id)
        assert again.model_dump() == second.model_dump()
        assert third.output_text == "About two million."
    finally:
        restarted.close()


async def test_an_empty_input_continues_a_chain_and_stores_no_items(user, scripted):
    scripted.chunks = answer("First.")
    first = await user.responses.create(model="tiny", input="Hello")
    scripted.chunks = answer("More.")
    more = await user.responses.create(model="tiny", input=[], previous_response_id=first.id)
    assert [t for _, t in said(scripted.calls[-1])] == ["Hello", "First."]
    assert (await user.responses.input_items.list(more.id)).data == []


async def test_a_streamed_response_is_stored_as_it_was_sent(user, scripted):
    scripted.chunks = answer("Streamed.")
    stream = await user.responses.create(model="tiny", input="Hi", stream=True)
    done = [e async for e in stream][-1]
    assert done.type == "response.completed"
    assert (await user.responses.retrieve(done.response.id)).model_dump() == done.response.model_dump()


async def test_tool_calls_are_kept_and_reasoning_dropped_after_a_new_user_turn(appliance, scripted):
    admin = sdk(appliance.app, appliance.tokens["admin"])  # its role is shown the reasoning: it is stored
    scripted.chunks = tool_call("get_weather", '{"city":"Paris"}')
    call = await admin.responses.create(model="tiny", input="Weather in Paris?", tools=TOOLS)
    assert [o.type for o in call.output] == ["reasoning", "function_call"]
    scripted.chunks = answer("It is sunny.", analysis="The tool says sunny.")
    result = [{"type": "function_call_output", "call_id": call.output[1].call_id, "output": '{"sky":"sunny"}'}]
    answered = await admin.responses.create(model="tiny", input=result, previous_response_id=call.id, tools=TOOLS)
    assert said(scripted.calls[-1]) == [  # within the turn: the reasoning that led to the call stays
        ("user", "Weather in Paris?"),
        ("assistant", "call:get_weather [thinking: need a tool]"),
        ("tool", '{"sky":"sunny"}'),
    ]
    chained = scripted.calls[-1]
    scripted.chunks = answer("It is sunny.", analysis="The tool says sunny.")
    sent = [{"role": "user", "content": "Weather in Paris?"}, *[o.model_dump() for o in call.output], *result]
    await admin.responses.create(model="tiny", input=sent, tools=TOOLS)
    assert scripted.calls[-1].messages == chained.messages  # continuing is exactly sending the items again
    scripted.chunks = answer("You are welcome.")
    await admin.responses.create(model="tiny", input="Thanks!", previous_response_id=answered.id, tools=TOOLS)
    assert said(scripted.calls[-1]) == [  # a new user turn: earlier reasoning dropped, the call and result kept
        ("user", "Weather in Paris?"),
        ("assistant", "call:get_weather"),
        ("tool", '{"sky":"sunny"}'),
        ("assistant", "It is sunny."),
        ("user", "Thanks!"),
    ]


async def test_another_key_cannot_read_continue_or_delete(appliance, user, other_token, scripted):
    scripted.chunks = answer("Mine.")
    mine = await user.responses.create(model="tiny", input="Hello")
    other = sdk(appliance.app, other_token)
    unknown = f"resp_{uuid.uuid4().hex}"
    for target in (mine.id, unknown):  # another key's id reads exactly as an id that never existed
        with pytest.raises(openai.NotFoundError) as got:
            await other.responses.retrieve(target)
        assert got.value.body == {
            "message": f"response {target!r} not found",
            "type": "not_found_error",
            "param": None,
            "code": "response_not_found",
        }
        with pytest.raises(openai.NotFoundError):
            await other.responses.input_items.list(target)
        with pytest.raises(openai.NotFoundError):
            await other.responses.delete(target)
        with pytest.raises(openai.NotFoundError) as got:
            await other.responses.create(model="tiny", input="Go on", previous_response_id=target)
        assert got.value.body["param"] == "previous_response_id"
        assert got.value.body["code"] == "previous_response_not_found"
    assert (await user.responses.retrieve(mine.id)).output_text == "Mine."


async def test_deletion_is_recorded_first_and_breaks_chains_clearly(appliance, user, scripted):
    scripted.chunks = answer("One.")
    one = await user.responses.create(model="tiny", input="1")
    scripted.chunks = answer("Two.")
    two = await user.responses.create(model="tiny", input="2", previous_response_id=one.id)
    rid = f"req-{uuid.uuid4().hex}"
    raw = await user.responses.with_raw_response.delete(one.id, extra_headers={"x-request-id": rid})
    assert raw.http_response.json() == {"id": one.id, "object": "response.deleted", "deleted": True}
    deleted = records(appliance, rid)
    assert [(r.event, r.detail["response_id"]) for r in deleted] == [("response.deleted", one.id)]
    with pytest.raises(openai.NotFoundError):
        await user.responses.retrieve(one.id)
    with pytest.raises(openai.NotFoundError):
        await user.responses.delete(one.id)
    with pytest.raises(openai.NotFoundError):  # continuing the deleted one
        await user.responses.create(model="tiny", input="3", previous_response_id=one.id)
    with pytest.raises(openai.BadRequestError) as got:  # continuing a chain that held it
        await user.responses.create(model="tiny", input="3", previous_response_id=two.id)
    assert got.value.body["code"] == "previous_response_broken" and one.id in got.value.body["message"]


async def test_views_are_recorded(appliance, user, scripted):
    scripted.chunks = answer("Seen.")
    seen = await user.responses.create(model="tiny", input="Look")
    rid = f"req-{uuid.uuid4().hex}"
    await user.responses.retrieve(seen.id, extra_headers={"x-request-id": rid})
    (rec,) = records(appliance, rid)
    assert (rec.event, rec.detail) == ("response.viewed", {"response_id": seen.id, "part": "response"})


async def test_storage_off(appliance, user, scripted, monkeypatch):
    monkeypatch.setattr(appliance.services.settings, "responses_store", False)
    scripted.chunks = answer("Not kept.")
    kept = await user.responses.create(model="tiny", input="Hi")
    assert kept.store is False
    with pytest.raises(openai.NotFoundError):
        await user.responses.retrieve(kept.id)
    for asked in ({"store": True}, {"previous_response_id": kept.id}):
        with pytest.raises(openai.BadRequestError) as got:
            await user.responses.create(model="tiny", input="Hi", **asked)
        assert got.value.body["param"] == next(iter(asked)) and "responses_store" in got.value.body["message"]
    assert (await user.responses.create(model="tiny", input="Hi", store=False)).store is False


async def test_store_false_keeps_nothing(appliance, user, scripted):
    before = rows(appliance)
    scripted.chunks = answer("Gone.")
    gone = await user.responses.create(model="tiny", input="Hi", store=False)
    assert gone.store is False and rows(appliance) == before
    with pytest.raises(openai.NotFoundError):
        await user.responses.create(model="tiny", input="Go on", previous_response_id=gone.id)


async def test_what_is_stored_is_what_the_policy_let_through(appliance, user, scripted):
    scripted.chunks = [[TextEvent("final", "Mail jane.doe@example.com now.")], [FinishEvent("stop", Usage(9, 5, 0))]]
    sent = await user.responses.create(model="tiny", input="My card is 4111 1111 1111 1111, write to whom?")
    assert "jane.doe" not in sent.output_text
    kept = await user.responses.retrieve(sent.id)
    assert kept.output_text == sent.output_text  # the output as the client received it
    (item,) = (await user.responses.input_items.list(sent.id)).data
    assert "4111" not in item.content[0].text and "write to whom?" in item.content[0].text


async def test_a_chain_after_a_denial_or_a_stopped_answer(appliance, user, scripted):
    before = rows(appliance)
    with pytest.raises(openai.PermissionDeniedError):  # an input denial makes no response at all
        await user.responses.create(model="tiny", input="My key is AKIAIOSFODNN7EXAMPLE")
    assert rows(appliance) == before and scripted.calls == []
    scripted.chunks = [
        [TextEvent("final", "Fine. The key is AKIAIOSFODNN7EXAMPLE")],
        [FinishEvent("stop", Usage(9, 5, 0))],
    ]
    stopped = await user.responses.create(model="tiny", input="Tell me a key")
    assert stopped.status == "incomplete" and stopped.incomplete_details.reason == "content_filter"
    scripted.chunks = answer("Sorry.")
    await user.responses.create(model="tiny", input="Why did you stop?", previous_response_id=stopped.id)
    history = said(scripted.calls[-1])
    assert history[0] == ("user", "Tell me a key") and "AKIA" not in str(history)


async def test_input_items_are_paged_as_openai_pages_them(user, scripted):
    scripted.chunks = answer("Ok.")
    items = [{"role": "user", "content": f"line {i}"} for i in range(5)]
    made = await user.responses.create(model="tiny", input=items)
    newest = await user.responses.input_items.list(made.id, limit=2)
    assert [i.content[0].text for i in newest.data] == ["line 4", "line 3"] and newest.has_more
    rest = await user.responses.input_items.list(made.id, after=newest.last_id, limit=10)
    assert [i.content[0].text for i in rest.data] == ["line 2", "line 1", "line 0"] and not rest.has_more
    oldest = await user.responses.input_items.list(made.id, order="asc", limit=1)
    assert oldest.data[0].content[0].text == "line 0"
    every = [i.content[0].text async for i in user.responses.input_items.list(made.id, limit=2)]  # auto-paging
    assert every == [f"line {i}" for i in range(4, -1, -1)]
    with pytest.raises(openai.BadRequestError):
        await user.responses.input_items.list(made.id, limit=0)
    with pytest.raises(openai.BadRequestError):
        await user.responses.input_items.list(made.id, after="msg_nothere")


async def test_retention_hides_and_prunes_old_responses(appliance, user, scripted):
    store = appliance.services.responses
    old = StoredResponse(f"resp_{uuid.uuid4().hex}", "k", None, time.time() - 31 * DAY_S, [], {"output": []})
    store.put(old)
    scripted.chunks = answer("Fresh.")
    fresh = await user.responses.create(model="tiny", input="Hi")
    assert store.get(old.id, "k") is None  # past the retention: as if absent, before any prune
    store._next_prune = 0.0  # the next store prunes (a gateway does so at most once an hour)
    scripted.chunks = answer("Again.")
    await user.responses.create(model="tiny", input="Hi")
    with appliance.services.database.connect() as conn:
        ids = set(conn.execute(select(table.c.id)).scalars())
    assert old.id not in ids and fresh.id in ids


@pytest.mark.parametrize(
    "odd",
    [
        "resp_é",
        "resp_" + "a" * 30_000,  # httpx refuses URLs over 64 KiB
        "..%2F..%2Fadmin%2Fkeys",
        "resp_00000000000000000000000000000000%00",
        "RESP_" + "0" * 32,
        "%F0%9F%92%A9",
        "resp_%2e%2e",
    ],
)
async def test_odd_ids_are_clean_404s(client, odd):
    for method, path in (("GET", odd), ("GET", f"{odd}/input_items"), ("DELETE", odd)):
        r = await client.request(method, f"/v1/responses/{odd if path == odd else path}")
        assert r.status_code == 404, (method, path[:80], r.text[:200])
        assert r.json()["error"]["type"] == "not_found_error" and len(r.text) < 300


@pytest.mark.parametrize("odd", ["resp_é", "resp_" + "a" * 1_000_000, "../x", "", 7, ["resp_x"]])
async def test_odd_previous_response_ids_are_clean_4xx(client, scripted, odd):
    r = await client.post("/v1/responses", json={"model": "tiny", "input": "Hi", "previous_response_id": odd})
    assert r.status_code in (400, 404) and r.json()["error"]["param"] == "previous_response_id"
    assert len(r.text) < 400 and scripted.calls == []


async def test_a_response_that_cannot_be_stored_is_an_error_not_a_lost_id(appliance, user, scripted, monkeypatch):
    def down(_record):
        raise StoreUnavailable("stored responses: store failed: disk I/O error")

    monkeypatch.setattr(appliance.services.responses, "put", down)
    scripted.chunks = answer("Unkept.")
    with pytest.raises(openai.InternalServerError) as got:
        await user.responses.create(model="tiny", input="Hi")
    assert got.value.status_code == 503 and got.value.body["code"] == "response_store_unavailable"
    scripted.chunks = answer("Unkept.")
    seen = []
    with pytest.raises(openai.APIError, match="store failed"):  # the stream's error event, never its completion
        async for e in await user.responses.create(model="tiny", input="Hi", stream=True):
            seen.append(e.type)
    assert "response.completed" not in seen and "response.output_text.done" in seen
    assert (await user.responses.create(model="tiny", input="Hi", store=False)).output_text == "Unkept."


async def test_a_stored_response_is_not_streamed_again(client, user, scripted):
    scripted.chunks = answer("Once.")
    once = await user.responses.create(model="tiny", input="Hi")
    for query in ({"stream": "true"}, {"include": "reasoning.encrypted_content"}):
        r = await client.get(f"/v1/responses/{once.id}", params=query)
        assert r.status_code == 400 and r.json()["error"]["param"] == next(iter(query))


@pytest.mark.parametrize("refused", [{"background": True}, {"conversation": "conv_1"}])
async def test_background_and_conversation_stay_refused(client, refused):
    r = await client.post("/v1/responses", json={"model": "tiny", "input": "Hi", **refused})
    assert r.status_code == 400 and r.json()["error"]["param"] == next(iter(refused))
