"""Log probabilities from the trained demo model, through the real API and the official `openai` SDK.

The pack is the test pack with one change: a card number in an answer stops it (denied), so the demo model's
memorised answers cover an unchanged answer, a redacted one (an e-mail address) and a denied one.
"""

from __future__ import annotations

import json
import math
import shutil

import httpx
import jsonschema
import openai
import pytest

from appliance.engine.logprobs import REPLACED
from tests.api.helpers import records
from tests.appliance import make_appliance
from tests.conftest import REPO

MODEL = "gpt-oss-demo"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
SUPPORT = [{"role": "user", "content": "How do I contact support?"}]
CARD = [{"role": "user", "content": "Give me a card number for testing payments."}]
CARDS_STOP = """    - id: site-out.cards
      match: [pii.payment_card]
      action: stop
    - id: site-out.pii"""


@pytest.fixture(scope="module")
def demo(module_dir, demo_bundle, demo_key):
    pack = module_dir / "pack"
    shutil.copytree(REPO / "tests" / "pack", pack)
    rules = pack / "guardrails.yaml"
    rules.write_text(rules.read_text().replace("    - id: site-out.pii", CARDS_STOP, 1))
    a = make_appliance(module_dir / "var", demo_bundle, demo_key.public_key(), policy_dir=pack)
    yield a
    a.services.backend.close()
    a.services.close()


def sdk(demo, role: str = "user") -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=demo.app), base_url="http://appliance/v1")
    return openai.AsyncOpenAI(
        api_key=demo.tokens[role], base_url="http://appliance/v1", http_client=http, max_retries=0, timeout=120
    )


async def chat(demo, messages, role: str = "user", **options):
    return await sdk(demo, role).chat.completions.create(
        model=MODEL, messages=messages, temperature=0, logprobs=True, **options
    )


async def streamed(demo, messages, **options) -> tuple[str, list, list]:
    """(content, entries, chunks) of a streamed answer; each chunk's entries are exactly its content."""
    stream = await sdk(demo).chat.completions.create(
        model=MODEL, messages=messages, temperature=0, logprobs=True, stream=True, **options
    )
    chunks = [c async for c in stream]
    content, entries = "", []
    for c in chunks:
        if c.choices and c.choices[0].delta.content:
            mine = c.choices[0].logprobs.content
            assert "".join(e.token for e in mine) == c.choices[0].delta.content
            content, entries = content + c.choices[0].delta.content, entries + mine
    return content, entries, chunks


def check(entries, content: str, k: int) -> None:
    """Consistent entries of a greedy answer the filter did not touch."""
    assert "".join(e.token for e in entries) == content
    for e in entries:
        assert e.bytes == list(e.token.encode()) and math.exp(e.logprob) <= 1
        top = [t.logprob for t in e.top_logprobs]
        assert len(top) == k and top == sorted(top, reverse=True)
        assert all(math.exp(t) <= 1 for t in top) and e.logprob >= min(top)  # greedy: the best
        assert e.top_logprobs[0].token == e.token  # greedy: the chosen token is the most likely


async def test_chat_logprobs_are_consistent(demo):
    reply = await chat(demo, FRANCE, top_logprobs=5)
    choice = reply.choices[0]
    assert choice.message.content == "The capital of France is Paris."
    check(choice.logprobs.content, choice.message.content, 5)
    assert records(demo, reply._request_id)[0].detail["logprobs"] == "top_logprobs=5"  # noted in the request record
    without = await sdk(demo).chat.completions.create(model=MODEL, messages=FRANCE, temperature=0)
    assert without.choices[0].logprobs is None and without.choices[0].message.content == choice.message.content


async def test_streamed_equals_not_streamed(demo):
    whole = (await chat(demo, FRANCE, top_logprobs=3)).choices[0]
    content, entries, chunks = await streamed(demo, FRANCE, top_logprobs=3)
    assert content == whole.message.content
    assert [e.model_dump() for e in entries] == [e.model_dump() for e in whole.logprobs.content]
    assert chunks[-1].choices[0].logprobs is None  # the finishing chunk carries no text


async def test_the_reasoning_never_appears(demo):
    reply = await chat(demo, FRANCE, role="admin", top_logprobs=20)
    choice = reply.choices[0]
    assert choice.message.reasoning_content == "A simple geography question."  # admins read it...
    check(choice.logprobs.content, choice.message.content, 20)
    assert "geography" not in choice.logprobs.model_dump_json()  # ...but it is never scored


@pytest.mark.parametrize("stream", [False, True])
async def test_a_redacted_value_is_nowhere_in_the_logprobs(demo, stream):
    if stream:
        content, entries, _ = await streamed(demo, SUPPORT, top_logprobs=20)
    else:
        choice = (await chat(demo, SUPPORT, top_logprobs=20)).choices[0]
        content, entries = choice.message.content, choice.logprobs.content
    assert "[REDACTED:pii.email]" in content and "operations team" in content
    assert "".join(e.token for e in entries) == content
    replaced = [e for e in entries if "[REDACTED:pii.email]" in e.token]
    assert len(replaced) == 1 and replaced[0].logprob == REPLACED and replaced[0].top_logprobs == []
    assert "support@example.com" not in json.dumps([e.model_dump() for e in entries])
    # no entry of a token the value was written with (' support', '@example', '.com'), nor its alternatives;
    # alternatives elsewhere are single tokens the model might have written there, and may be any token
    assert not {" support", "@example", ".com"} & {e.token for e in entries}


async def test_a_denied_answer_has_no_logprobs(demo):
    choice = (await chat(demo, CARD, top_logprobs=5)).choices[0]
    assert choice.finish_reason == "content_filter" and choice.logprobs is None
    content, entries, chunks = await streamed(demo, CARD, top_logprobs=5)
    assert chunks[-1].choices[0].finish_reason == "content_filter" and "4111" not in content
    assert "".join(e.token for e in entries) == content and "4111" not in json.dumps([e.model_dump() for e in entries])


async def test_a_constrained_answer_has_logprobs_of_its_json(demo):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    choice = (await chat(demo, FRANCE, top_logprobs=4, response_format=fmt, max_tokens=200)).choices[0]
    jsonschema.validate(json.loads(choice.message.content), schema)
    entries = choice.logprobs.content
    assert "".join(e.token for e in entries) == choice.message.content
    assert entries[0].token == '{"' and all(t.logprob > REPLACED for e in entries for t in e.top_logprobs)
    # the grammar forces the opening: every alternative it forbade is gone, so the one allowed is certain
    assert entries[0].logprob == 0.0 and [t.token for t in entries[0].top_logprobs] == ['{"']


def brief(entry) -> tuple:
    return entry.token, entry.logprob, [(t.token, t.logprob) for t in entry.top_logprobs]


async def test_responses_include_output_logprobs(demo):
    client = sdk(demo)
    include = ["message.output_text.logprobs"]
    done = await client.responses.create(
        model=MODEL, input="What is the capital of France?", temperature=0, include=include, top_logprobs=2
    )
    part = done.output[-1].content[0]
    assert part.text == "The capital of France is Paris."
    check(part.logprobs, part.text, 2)
    stream = await client.responses.create(
        model=MODEL, input="What is the capital of France?", temperature=0, include=include, top_logprobs=2, stream=True
    )
    events = [e async for e in stream]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    for e in deltas:
        assert "".join(x.token for x in e.logprobs) == e.delta
    assert [brief(x) for e in deltas for x in e.logprobs] == [brief(x) for x in part.logprobs]
    text_done = next(e for e in events if e.type == "response.output_text.done")
    assert "".join(x.token for x in text_done.logprobs) == text_done.text == part.text
    final = events[-1].response.output[-1].content[0]
    assert [x.token for x in final.logprobs] == [x.token for x in part.logprobs]
    plain = await client.responses.create(model=MODEL, input="What is the capital of France?", temperature=0)
    assert plain.output[-1].content[0].logprobs is None
