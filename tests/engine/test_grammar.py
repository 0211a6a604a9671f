"""The harmony-aware grammar: free reasoning, a constrained final answer or call; rows independent in a batch."""

from __future__ import annotations

import asyncio
import json

import pytest

from appliance.engine import Engine, GenerationRequest, collect
from appliance.engine.grammar import Constraint, GrammarError, Guide, tokenizer
from appliance.vocabulary import packaged_harmony

ANSWER = {
    "type": "object",
    "properties": {"n": {"type": "integer", "maximum": 99}},
    "required": ["n"],
    "additionalProperties": False,
}
TOOLS = {
    "get_weather": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 10}},
        "required": ["city"],
        "additionalProperties": False,
    }
}
REASONING = "<|channel|>analysis<|message|>Free text, even <b>tags</b> and {braces}.<|end|><|start|>assistant"
FINAL = '<|channel|>final<|message|>{"n":42}<|return|>'
CALL_AFTER = ' to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{"city":"Oslo"}<|call|>'
CALL_BEFORE = '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Oslo"}<|call|>'


def accepts(constraint: Constraint, text: str) -> bool:
    """Whether the grammar lets the model write `text` token by token, to its end."""
    guide = Guide(constraint.grammar())
    for token in packaged_harmony().encode(text, allowed_special="all"):
        if not guide.mask().permits(token):
            return False
        guide.accept(token)
    return guide.matcher.is_stopped()


def test_the_tokenizer_is_built_from_the_shipped_vocabulary():
    assert tokenizer().vocab_size == 201_088
    assert tokenizer().is_special_token(200005)


@pytest.mark.parametrize(
    ("calls", "text", "ok"),
    [
        ("auto", REASONING + FINAL, True),
        ("auto", FINAL, True),
        ("auto", REASONING + "<|channel|>final<|message|>The answer is 42.<|return|>", False),
        ("auto", '<|channel|>final<|message|>{"n": 42}<|return|>', False),  # no free whitespace
        ("auto", REASONING + CALL_AFTER, True),
        ("auto", CALL_BEFORE, True),
        ("auto", CALL_BEFORE.replace("get_weather", "delete_all"), False),
        ("auto", CALL_BEFORE.replace('"Oslo"', "42"), False),
        ("required", REASONING + FINAL, False),
        ("required", REASONING + CALL_AFTER, True),
        ("none", CALL_BEFORE, False),
        ("none", REASONING + FINAL, True),
    ],
)
def test_reasoning_is_free_and_the_ending_is_what_the_request_allows(calls, text, ok):
    assert accepts(Constraint(ANSWER, TOOLS, calls), text) is ok


def test_free_text_answers_with_forbidden_calls():
    constraint = Constraint(None, TOOLS, "none")
    assert accepts(constraint, REASONING + "<|channel|>final<|message|>Plain prose.<|return|>")
    assert not accepts(constraint, REASONING + CALL_AFTER)


def test_a_schema_error_names_its_field_and_keyword():
    with pytest.raises(GrammarError) as exc:
        Constraint(ANSWER, {"t": {"type": "object", "if": {}}}, "auto", tool_params=("tools[0].parameters",)).grammar()
    assert exc.value.param == "tools[0].parameters" and '"if"' in str(exc.value)
    with pytest.raises(GrammarError) as exc:
        Constraint(None, {}, "required").grammar()
    assert exc.value.param == "tool_choice"


@pytest.fixture(scope="module")
def demo_engine(demo_bundle):
    engine = Engine.from_bundle(demo_bundle, max_batch_size=6)
    yield engine
    engine.close()


async def test_constrained_and_free_rows_are_independent_in_a_batch(demo_engine):
    schemas = [
        ANSWER,
        {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
            "additionalProperties": False,
        },
        {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 2},
    ]
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    requests = [
        GenerationRequest(messages=messages, max_tokens=200, temperature=0, grammar=Constraint(s, {}, "none").grammar())
        for s in schemas
    ]
    requests += [
        GenerationRequest(messages=messages, max_tokens=200, temperature=0),
        GenerationRequest(
            messages=messages, max_tokens=200, temperature=0.8, seed=3, grammar=Constraint(ANSWER, {}, "none").grammar()
        ),
    ]
    alone = [await collect(demo_engine.generate(r)) for r in requests]
    together = await asyncio.gather(*[collect(demo_engine.generate(r)) for r in requests])
    assert [t["finish"].token_ids for t in together] == [a["finish"].token_ids for a in alone]
    for out in alone[:3] + alone[4:]:
        assert out["finish"].finish_reason == "stop"
        json.loads(str(out["final"]))
    assert alone[3]["final"] == "The capital of France is Paris."
