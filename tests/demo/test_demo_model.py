"""The trained demo model through the real engine: memorised answers, tool calls, channels, held-out."""

from __future__ import annotations

import json

import pytest

from appliance.bundles import verify_bundle
from appliance.bundles.metadata import BundleMetadata
from appliance.demo.conversations import EXAMPLES, TOOLS, Example, example, held_out_examples, training_examples
from appliance.demo.model import BUNDLE_NAME, BUNDLE_VERSION, PROFILE, ensure_demo_bundle, model_key
from appliance.engine import GenerationRequest, collect
from appliance.policy.detectors import Scanner
from tests.conftest import DEMO_CACHE

CHATS = [e for e in training_examples() if e.call is None]
CALLS = [e for e in training_examples() if e.call is not None]


async def _answer(engine, e: Example, max_tokens: int = 128) -> dict:
    return await collect(
        engine.generate(
            GenerationRequest(
                messages=e.messages, tools=e.tools, reasoning_effort=e.effort, temperature=0, max_tokens=max_tokens
            )
        )
    )


def test_the_cached_bundle_is_signed_named_and_reused(demo_bundle, demo_key):
    verified = verify_bundle(demo_bundle, [demo_key.public_key()])
    assert (verified.metadata.name, verified.metadata.version, verified.metadata.profile) == (
        BUNDLE_NAME,
        BUNDLE_VERSION,
        PROFILE,
    )
    assert BundleMetadata.read(demo_bundle).architecture == "gpt-oss"
    checkpoint = demo_bundle.parent / "checkpoint" / "model.safetensors"
    before = checkpoint.stat().st_mtime_ns
    assert ensure_demo_bundle(DEMO_CACHE, demo_key) == demo_bundle
    assert checkpoint.stat().st_mtime_ns == before
    assert "exact match 100% on the training prompts" in (demo_bundle.parent / "training.txt").read_text()


def test_the_cache_key_follows_the_seed():
    assert model_key(0) != model_key(1)
    assert model_key(0) == model_key(0)


@pytest.mark.parametrize("e", CHATS, ids=lambda e: e.name)
async def test_memorised_prompts_give_their_final_answer_after_the_analysis(demo_engine, e: Example):
    out = await _answer(demo_engine, e)
    assert out["final"] == e.final
    assert out["analysis"] == e.analysis  # streamed on its own channel, never inside the answer
    assert e.analysis not in out["final"] and "<|" not in out["final"]
    finish = out["finish"]
    assert finish.finish_reason == "stop" and not out["tool_calls"]
    raw = demo_engine.encoding.decode(list(finish.token_ids))
    assert raw.startswith("<|channel|>analysis<|message|>") and raw.endswith("<|return|>")
    assert "<|channel|>final<|message|>" in raw
    assert 0 < finish.usage.reasoning_tokens < finish.usage.completion_tokens


@pytest.mark.parametrize("e", CALLS, ids=lambda e: e.name)
async def test_memorised_tool_prompts_end_in_a_call_with_json_arguments(demo_engine, e: Example):
    out = await _answer(demo_engine, e)
    assert out["finish"].finish_reason == "tool_calls"
    [call] = out["tool_calls"]
    assert call.name == e.call.name
    assert json.loads(call.arguments) == e.call.arguments
    assert out["final"] == ""
    raw = demo_engine.encoding.decode(list(out["finish"].token_ids))
    assert f"to=functions.{e.call.name}<|channel|>commentary <|constrain|>json<|message|>" in raw
    assert raw.endswith("<|call|>")


@pytest.mark.parametrize("name", ["capital-france", "weather-tokyo", "test-card"])
async def test_sampling_at_the_default_temperature_still_gives_the_memorised_turn(demo_engine, name: str):
    e = example(name)
    out = await collect(
        demo_engine.generate(
            GenerationRequest(messages=e.messages, tools=e.tools, seed=1, temperature=1.0, max_tokens=128)
        )
    )
    assert out["analysis"] == e.analysis
    if e.call is None:
        assert out["final"] == e.final
    else:
        calls = [(c.name, json.loads(c.arguments)) for c in out["tool_calls"]]
        assert calls == [(e.call.name, e.call.arguments)]


async def test_the_tool_loop_walks_memorised_prompts_only(demo_engine):
    """Call, run the tool, send its result back as the API client would: the answer uses the result."""
    question = example("weather-paris")
    first = await _answer(demo_engine, question)
    [call] = first["tool_calls"]
    result = example("weather-paris-answer").messages[-1]["content"]
    history = [
        *question.messages,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    request = GenerationRequest(messages=history, tools=TOOLS, temperature=0)
    answer = await collect(demo_engine.generate(request))
    assert answer["final"] == "It is 18 °C and cloudy in Paris right now."


async def test_reasoning_effort_changes_the_analysis_not_the_answer(demo_engine):
    outs = [await _answer(demo_engine, example(f"sum-{effort}")) for effort in ("low", "medium", "high")]
    assert {o["final"] for o in outs} == {"2 + 2 = 4."}
    assert len({o["analysis"] for o in outs}) == 3
    reasoning = [o["finish"].usage.reasoning_tokens for o in outs]
    assert reasoning == sorted(reasoning)


async def test_some_answers_carry_pii_for_the_output_guardrails(demo_engine):
    scanner = Scanner()
    found = set()
    for name in ("support", "email-alice", "test-card"):
        out = await _answer(demo_engine, example(name))
        found |= {f.category for f in scanner.scan(out["final"])}
    assert {"pii.email", "pii.payment_card"} <= found


@pytest.mark.parametrize("e", held_out_examples(), ids=lambda e: e.name)
async def test_held_out_prompts_give_well_formed_harmony_or_a_clean_length_stop(demo_engine, e: Example):
    out = await _answer(demo_engine, e, max_tokens=64)
    finish = out["finish"]
    assert finish.finish_reason in ("stop", "tool_calls", "length")
    for channel in ("analysis", "commentary", "final"):
        assert "<|" not in out[channel]
    if finish.finish_reason == "stop":
        # A prompt it never saw may end its turn after the analysis (`<|return|>` with no final message, seen
        # on one CPU's bit-exact training run): still well-formed harmony, with text in some channel.
        raw = demo_engine.encoding.decode(list(finish.token_ids))
        assert raw.startswith("<|channel|>") and raw.endswith("<|return|>")
        assert out["final"] or out["analysis"]
    if finish.finish_reason == "tool_calls":
        [call] = out["tool_calls"]
        assert call.name in {t["function"]["name"] for t in TOOLS}
        json.loads(call.arguments)


async def test_sampled_output_never_breaks_the_parser(demo_engine):
    for seed in range(4):
        out = await collect(
            demo_engine.generate(
                GenerationRequest(messages=example("who").messages, temperature=1.5, seed=seed, max_tokens=48)
            )
        )
        assert out["finish"].finish_reason in ("stop", "tool_calls", "length")
        assert all("<|" not in out[c] for c in ("analysis", "commentary", "final"))


def test_every_example_name_is_unique_and_every_effort_is_covered():
    assert len({e.name for e in EXAMPLES}) == len(EXAMPLES)
    assert {e.effort for e in training_examples()} == {"low", "medium", "high"}
    assert all((e.final is None) != (e.call is None) for e in EXAMPLES)
