"""Harmony rendering of OpenAI-shaped chats and lenient parsing of model output."""

from __future__ import annotations

import json

import pytest
from openai_harmony import Role

from appliance.engine import EngineError, HarmonyStream, TextEvent, ToolCallEvent, load_harmony, render_prompt
from appliance.vocabulary import VocabularyError

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def enc(tiny_bundle):
    return load_harmony(tiny_bundle)


def _events(enc, text: str, stop: list[str] | None = None) -> tuple[list, HarmonyStream]:
    stream = HarmonyStream(enc, stop)
    events = [e for t in enc.encode(text, allowed_special="all") for e in stream.feed(t)]
    return events + stream.finish(), stream


def test_a_chat_with_tools_and_tool_results_renders_as_harmony(enc):
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
    ]
    text = enc.decode(render_prompt(enc, messages, [WEATHER], "high"))
    assert "Reasoning: high" in text
    assert "# Instructions\n\nAnswer briefly." in text and "type get_weather = (_: {" in text
    assert (
        "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>"
        '{"city":"Paris"}<|call|>'
    ) in text
    assert '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"temp_c": 21}<|end|>' in text
    assert text.endswith("<|start|>assistant")


def test_a_tool_without_a_description_renders(enc):
    """The API passes `description: null` through for a tool that has none (it was a 503)."""
    tool = {"type": "function", "function": {"name": "ping", "description": None, "parameters": None}}
    assert "type ping = () => any;" in enc.decode(render_prompt(enc, [{"role": "user", "content": "hi"}], [tool]))


def test_bad_chats_are_refused_with_one_clear_error(enc):
    with pytest.raises(EngineError, match="tool_call_id"):
        render_prompt(enc, [{"role": "tool", "tool_call_id": "nope", "content": "x"}], [], "low")
    with pytest.raises(EngineError, match="reasoning_effort"):
        render_prompt(enc, [{"role": "user", "content": "x"}], [], "extreme")
    with pytest.raises(EngineError, match="tool"):
        render_prompt(enc, [{"role": "user", "content": "x"}], [{"type": "function"}], "low")


def test_analysis_tool_call_and_final_parse_like_harmony_does(enc):
    completion = (
        "<|channel|>analysis<|message|>Need the weather.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
        '{"city": "Zürich"}<|call|>'
    )
    events, stream = _events(enc, completion)
    reference = enc.parse_messages_from_completion_tokens(enc.encode(completion, allowed_special="all"), Role.ASSISTANT)
    analysis = "".join(e.text for e in events if isinstance(e, TextEvent) and e.channel == "analysis")
    calls = [e for e in events if isinstance(e, ToolCallEvent)]
    assert analysis == reference[0].content[0].text
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Zürich"})]
    assert reference[1].recipient == "functions." + calls[0].name
    assert stream.tool_calls == 1 and stream.reasoning_tokens == len(
        enc.encode("<|channel|>analysis<|message|>Need the weather.<|end|>", allowed_special="all")
    )

    events, _ = _events(enc, "<|channel|>final<|message|>Bonjour 日本 😀<|return|>")
    assert {e.channel for e in events} == {"final"} and "".join(e.text for e in events) == "Bonjour 日本 😀"


def test_malformed_and_truncated_output_never_raises_or_leaks_control_tokens(enc):
    cases = [
        "<|channel|>final<|message|>Hi<|channel|><|constrain|><|reserved_200013|> there<|end|>",
        "<|message|><|message|>text with no header<|end|>garbage<|return|>",
        '<|channel|>commentary to=functions.get<|call|>weather<|message|>{"a":',  # truncated call
        "<|start|><|start|>assistant<|channel|>nonsense<|message|>secret<|end|>",
        "<|end|><|return|><|call|><|endoftext|>",
    ]
    for case in cases:
        events, _ = _events(enc, case)
        for event in events:
            assert "<|" not in getattr(event, "text", "") + getattr(event, "name", "")
        assert not any(isinstance(e, ToolCallEvent) for e in events)  # no half-written tool call
    events, _ = _events(enc, cases[0])
    assert "".join(e.text for e in events) == "Hi there"
    events, _ = _events(enc, cases[3])
    assert [(e.channel, e.text) for e in events] == [("analysis", "secret")]  # unknown channel stays hidden


def test_stop_strings_cut_the_final_text(enc):
    events, stream = _events(enc, "<|channel|>final<|message|>one two STOP three<|return|>", stop=["STOP"])
    assert "".join(e.text for e in events) == "one two " and stream.stopped


def test_a_tampered_vocabulary_is_refused(tmp_path, tiny_bundle):
    (tmp_path / "o200k_base.tiktoken").write_bytes((tiny_bundle / "o200k_base.tiktoken").read_bytes()[:-10])
    with pytest.raises(VocabularyError, match="not the o200k vocabulary"):
        load_harmony(tmp_path)
    with pytest.raises(VocabularyError, match="cannot be read"):
        load_harmony(tmp_path / "missing")


_PIECES = [
    "Say ok.",
    " hello",
    "\n\nhi\n",
    "a<|end|>b",
    "<|start|>user",
    "  ",
    "\t",
    "héllo wörld 日本語 🎉",
    "x" * 300,
]
_PIECES += ["'s 're 'LL", "123456789", " \t\n x", "", "  leading", "trailing  \n", "<|message|>", "Ünïcode ﬁ"]


def _conversations():
    """Chats of every shape the gateway counts: system prompts, several turns, parts lists, tool calls and
    results, tools, each reasoning effort; the user and tool texts run through awkward pieces."""
    for i, piece in enumerate(_PIECES):
        other = _PIECES[(i * 7 + 3) % len(_PIECES)]
        yield [{"role": "user", "content": piece}], [], "low"
        yield [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": piece + other}], [], "high"
        yield (
            [
                {"role": "developer", "content": "Be kind."},
                {"role": "user", "content": [{"type": "text", "text": piece}, {"type": "text", "text": other}]},
                {"role": "assistant", "content": "Hello! " + other},
                {"role": "user", "content": other},
            ],
            [],
            "medium",
        )
        yield (
            [
                {"role": "user", "content": "Weather in Paris?" + piece},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": piece + "sunny" + other},
                {"role": "user", "content": other},
            ],
            [WEATHER],
            "medium",
        )


def test_the_prompt_is_counted_exactly_without_rendering_it_each_time(enc, monkeypatch):
    """The gateway counts a prompt (input-token quotas, hang-ups) as its skeleton's tokens, rendered once per
    shape, plus each user and tool text's own: always the whole render's count, and a second prompt of the
    same shape renders nothing."""
    from appliance.engine import harmony
    from appliance.engine.types import GenerationRequest

    for messages, tools, effort in _conversations():
        request = GenerationRequest(messages=messages, tools=tools, reasoning_effort=effort)
        assert harmony.prompt_size(request) == len(render_prompt(enc, messages, tools, effort)), messages
    renders = []
    real = harmony.render_prompt
    monkeypatch.setattr(harmony, "render_prompt", lambda *args: renders.append(1) or real(*args))
    for text in ("What is 2 + 2?", "Name three rivers in Europe, please."):
        system = {"role": "system", "content": "A prompt of this test's own shape."}
        request = GenerationRequest(messages=[system, {"role": "user", "content": text}])
        assert harmony.prompt_size(request) == len(real(enc, request.messages, [], "medium"))
    assert len(renders) == 1
