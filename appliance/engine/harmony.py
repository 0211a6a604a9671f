"""Harmony: OpenAI-shaped chat messages in, channel events out.

Rendering goes through openai-harmony itself so prompts match what gpt-oss was trained on. Parsing is a
small lenient state machine over token ids instead of harmony's StreamableParser, which raises on the
first unexpected token: a model's output (truncated, sampled hot, or random weights) must never raise
into the caller, and control tokens must never reach text or tool names, so stray specials are dropped
and headers are read with patterns that only accept plain names.
"""

from __future__ import annotations

import json
import re
import uuid
from functools import lru_cache
from typing import Any

from openai_harmony import (
    Author,
    Conversation,
    DeveloperContent,
    HarmonyEncoding,
    Message,
    ReasoningEffort,
    Role,
    SystemContent,
    ToolDescription,
)

from appliance.engine.logprobs import Aligner, entry
from appliance.engine.sampling import Score
from appliance.engine.types import (
    Channel,
    EngineError,
    Event,
    GenerationRequest,
    TextEvent,
    TokenLogprob,
    ToolCallEvent,
    content_text,
)
from appliance.vocabulary import packaged_harmony

_EFFORTS = {"low": ReasoningEffort.LOW, "medium": ReasoningEffort.MEDIUM, "high": ReasoningEffort.HIGH}
_CHANNEL = re.compile(r"<\|channel\|>\s*([A-Za-z_]+)")
_RECIPIENT = re.compile(r"\bto=([A-Za-z0-9_.:\-]+)")
_CHANNELS: tuple[Channel, ...] = ("analysis", "commentary", "final")


def _tool_descriptions(tools: list[dict[str, Any]]) -> list[ToolDescription]:
    out = []
    for tool in tools:
        fn = tool.get("function") if tool.get("type", "function") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise EngineError("each tool must be {'type': 'function', 'function': {'name': ...}}")
        out.append(ToolDescription.new(fn["name"], fn.get("description") or "", parameters=fn.get("parameters")))
    return out


def render_prompt(
    encoding: HarmonyEncoding,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    reasoning_effort: str = "medium",
) -> list[int]:
    """Token ids of the conversation, ending with `<|start|>assistant` for the model to continue.

    OpenAI's system and developer messages become harmony's developer instructions (harmony's own system
    message carries the reasoning effort and channel rules); tool results are attributed to the function
    named by the assistant's call with the same id.
    """
    if reasoning_effort not in _EFFORTS:
        raise EngineError("reasoning_effort must be low, medium or high")
    instructions = [content_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
    developer = DeveloperContent.new()
    if instructions:
        developer = developer.with_instructions("\n\n".join(instructions))
    if tools:
        developer = developer.with_function_tools(_tool_descriptions(tools))
    rendered = [
        Message.from_role_and_content(
            Role.SYSTEM, SystemContent.new().with_reasoning_effort(_EFFORTS[reasoning_effort])
        )
    ]
    if instructions or tools:
        rendered.append(Message.from_role_and_content(Role.DEVELOPER, developer))
    call_names: dict[str, str] = {}
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            continue
        if role == "user":
            rendered.append(Message.from_role_and_content(Role.USER, content_text(message.get("content"))))
        elif role == "assistant":
            rendered.extend(_assistant_messages(message, call_names))
        elif role == "tool":
            name = call_names.get(message.get("tool_call_id", ""), message.get("name"))
            if not name:
                raise EngineError("a tool message must answer an earlier assistant tool call (tool_call_id)")
            rendered.append(
                Message.from_author_and_content(
                    Author.new(Role.TOOL, f"functions.{name}"), content_text(message.get("content"))
                )
                .with_recipient("assistant")
                .with_channel("commentary")
            )
        else:
            raise EngineError(f"unsupported message role {role!r}")
    return encoding.render_conversation_for_completion(Conversation.from_messages(rendered), Role.ASSISTANT)


Place = tuple[Any, ...]  # where a piece of text sits in (messages, tools): a path of keys and indices


def prompt_size(request: GenerationRequest) -> int:
    """Tokens of the prompt the engine will render for `request`, counted where no engine is (the gateway
    reserves them against an input-token quota, and charges a generation that ended before reporting usage
    by them).

    Exact, without rendering the whole prompt each time (harmony's render costs about 0.3 ms however short
    the prompt): harmony encodes each user and tool message's text on its own, between `<|message|>` and
    `<|end|>` (special-token look-alikes as plain text), so the prompt's tokens are its skeleton's (the
    same conversation with those texts empty: rendered once per shape and cached) plus each text's own
    (tests/engine/test_harmony.py checks the sum against whole renders)."""
    if request.prompt_tokens is not None:
        return len(request.prompt_tokens)
    encoding = packaged_harmony()
    texts = [content_text(m.get("content")) for m in request.messages if m.get("role") in _OWN_TEXT]
    skeleton = [{**m, "content": ""} if m.get("role") in _OWN_TEXT else m for m in request.messages]
    shape = json.dumps([skeleton, request.tools, request.reasoning_effort], sort_keys=True)
    own = sum(len(encoding.encode(text, disallowed_special=())) for text in texts)
    if len(shape) > _SHAPE_CACHED_MAX:  # a long conversation: not kept, rendered for this request alone
        return _skeleton_size.__wrapped__(shape) + own
    return _skeleton_size(shape) + own


_OWN_TEXT = ("user", "tool")  # messages whose text harmony encodes on its own
_SHAPE_CACHED_MAX = 16_384  # characters of a skeleton kept in the cache (256 of them at most)


@lru_cache(maxsize=256)
def _skeleton_size(shape: str) -> int:
    skeleton, tools, effort = json.loads(shape)
    return len(render_prompt(packaged_harmony(), skeleton, tools, effort))


def prompt_texts(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[tuple[str, str, Place]]:
    """(role, text, place) of every piece of client text `render_prompt` puts into the prompt.

    Scanning, the input size limit and the audit content all take these pieces, so none of them can
    disagree with the prompt: message contents and reasoning, tool-call names and arguments, the tool
    message's function name, and each tool's name, description and parameters (as JSON: harmony renders
    their names, descriptions and enums). `place` is where `with_texts` puts a rewritten piece back.
    """
    out: list[tuple[str, str, Place]] = []
    for i, message in enumerate(messages):
        role = str(message.get("role"))
        for key in ("reasoning_content", "reasoning", "content"):
            if message.get(key) and (key == "content" or role == "assistant"):
                out.append((role, content_text(message.get(key)), ("messages", i, key)))
        for j, call in enumerate(message.get("tool_calls") or []):
            fn = call.get("function") or {}
            out.append((role, str(fn.get("name", "")), ("messages", i, "tool_calls", j, "function", "name")))
            arguments = fn.get("arguments", "{}")
            out.append(
                (
                    role,
                    arguments if isinstance(arguments, str) else json.dumps(arguments),
                    ("messages", i, "tool_calls", j, "function", "arguments"),
                )
            )
        if role == "tool" and isinstance(message.get("name"), str):
            out.append((role, message["name"], ("messages", i, "name")))
    for k, tool in enumerate(tools):
        fn = tool.get("function") or {}
        for key in ("name", "description"):
            if isinstance(fn.get(key), str):
                out.append(("tools", fn[key], ("tools", k, "function", key)))
        if fn.get("parameters") is not None:
            out.append(
                ("tools", json.dumps(fn["parameters"], ensure_ascii=False), ("tools", k, "function", "parameters"))
            )
    return out


def with_texts(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], pieces: list[tuple[str, str, Place]], texts: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Copies of `messages` and `tools` with `texts` (rewritten `pieces`, same order) in their places.

    Parameters go back as JSON; redaction only replaces text inside strings, so it stays JSON, and a
    piece that no longer parses is refused rather than sent half-rewritten.
    """
    root: dict[str, Any] = {"messages": json.loads(json.dumps(messages)), "tools": json.loads(json.dumps(tools))}
    for (_, original, place), text in zip(pieces, texts):
        if text == original:
            continue
        parent = root
        for key in place[:-1]:
            parent = parent[key]
        if place[-1] == "parameters":
            try:
                parent[place[-1]] = json.loads(text)
            except ValueError as exc:
                raise EngineError("a tool's parameters cannot be redacted and stay JSON") from exc
        else:
            parent[place[-1]] = text
    return root["messages"], root["tools"]


def _assistant_messages(message: dict[str, Any], call_names: dict[str, str]) -> list[Message]:
    out = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        out.append(Message.from_role_and_content(Role.ASSISTANT, content_text(reasoning)).with_channel("analysis"))
    content = content_text(message.get("content"))
    if content:
        out.append(Message.from_role_and_content(Role.ASSISTANT, content).with_channel("final"))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        name, arguments = fn.get("name"), fn.get("arguments", "{}")
        if not isinstance(name, str):
            raise EngineError("an assistant tool call needs function.name")
        call_names[call.get("id", "")] = name
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        out.append(
            Message.from_role_and_content(Role.ASSISTANT, arguments)
            .with_channel("commentary")
            .with_recipient(f"functions.{name}")
            .with_content_type("<|constrain|>json")
        )
    return out


class HarmonyStream:
    """Turns the model's token ids, one at a time, into channel text and tool calls.

    Text is decoded incrementally with a hold-back for UTF-8 sequences split across tokens; stop strings
    cut final-channel text (with a hold-back of the longest stop string) and flag `stopped`. With `logprobs`,
    each final-channel event carries the entries of its text (logprobs.py): one per piece of text decoded
    at once, aligned through the stop strings' hold-back and cut.
    """

    def __init__(self, encoding: HarmonyEncoding, stop: list[str] | None = None, logprobs: bool = False) -> None:
        self._enc = encoding
        self._ids = {
            name: encoding.encode(name, allowed_special="all")[0]
            for name in ("<|start|>", "<|message|>", "<|end|>", "<|return|>", "<|call|>")
        }
        self._stop = [s for s in stop or [] if s]
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self.stopped = False
        self.reasoning_tokens = 0
        self.tool_calls = 0
        self._header: list[int] = []
        self._in_content = False
        self._channel: Channel = "analysis"
        self._recipient: str | None = None
        self._pending: list[int] = []
        self._scores: list[Score] = []  # of the pending tokens, when log probabilities were asked for
        self._logprobs = logprobs
        self._aligner = Aligner() if logprobs and self._stop else None
        self._final_out = 0  # final-channel characters released past the stop strings' hold-back
        self._message_tokens = 0
        self._body = ""
        self._final_buffer = ""

    def feed(self, token: int, score: Score | None = None) -> list[Event]:
        if self.stopped:
            return []
        self._message_tokens += 1
        ids = self._ids
        if token == ids["<|start|>"]:
            events = self._close(complete=False) if self._in_content else []
            self._header, self._message_tokens = [], 1
            return events
        if not self._in_content:
            if token == ids["<|message|>"]:
                self._open()
            elif token in (ids["<|end|>"], ids["<|return|>"], ids["<|call|>"]):
                self._header, self._message_tokens = [], 0
            else:
                self._header.append(token)
            return []
        if token in (ids["<|end|>"], ids["<|return|>"], ids["<|call|>"]):
            return self._close(complete=True)
        if self._enc.is_special_token(token):
            return []
        self._pending.append(token)
        if score is not None:
            self._scores.append(score)
        return self._flush(final=False)

    def prime(self, prompt: list[int]) -> None:
        """Read the prompt's open assistant turn (after its last `<|start|>`), e.g. a forced channel."""
        start = self._ids["<|start|>"]
        tail = prompt[len(prompt) - prompt[::-1].index(start) :] if start in prompt else []
        for token in tail:
            self.feed(token)
        self._message_tokens = 0

    def finish(self) -> list[Event]:
        """Flush what is left when generation ends; an unfinished tool call is dropped, never half-sent."""
        return self._close(complete=False) if self._in_content else []

    def _open(self) -> None:
        header = self._enc.decode(self._header)
        channel = _CHANNEL.search(header)
        recipient = _RECIPIENT.search(header)
        name = channel.group(1) if channel else None
        self._channel = next((c for c in _CHANNELS if c == name), "analysis")
        self._recipient = recipient.group(1) if recipient else None
        self._in_content, self._body, self._header = True, "", []

    def _close(self, complete: bool) -> list[Event]:
        events = self._flush(final=True)
        if self._channel == "analysis":
            self.reasoning_tokens += self._message_tokens
        if complete and self._recipient and self._recipient.startswith("functions.") and not self.stopped:
            self.tool_calls += 1
            events.append(
                ToolCallEvent(f"call_{uuid.uuid4().hex[:24]}", self._recipient[len("functions.") :], self._body)
            )
        self._in_content, self._message_tokens, self._recipient = False, 0, None
        return events

    def _flush(self, final: bool) -> list[Event]:
        text = self._enc.decode(self._pending) if self._pending else ""
        if text.endswith("\ufffd") and not final and len(self._pending) < 4:
            return []
        scores, self._pending, self._scores = self._scores, [], []
        self._body += text
        entries = None
        if self._logprobs and self._channel == "final" and self._recipient is None and text and scores:
            entries = (entry(self._enc, text, scores),)
        if self._channel == "final" and self._stop:
            return self._final_text(text, final, entries or ())
        return [TextEvent(self._channel, text, self._recipient, entries)] if text else []

    def _final_text(self, text: str, final: bool, entries: tuple[TokenLogprob, ...]) -> list[Event]:
        buffer = self._final_buffer + text
        cut = min((i for i in (buffer.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            emit, self._final_buffer = buffer[:cut], ""
        elif final:
            emit, self._final_buffer = buffer, ""
        else:
            keep = min(self._hold, len(buffer))
            emit, self._final_buffer = buffer[: len(buffer) - keep], buffer[len(buffer) - keep :]
        if self._aligner is None:
            return [TextEvent("final", emit)] if emit else []
        self._aligner.add(entries)
        self._final_out += len(emit)
        emit, aligned = self._aligner.release(self._final_out, emit)
        if self.stopped:  # the token the stop string began in is cut: its shown part goes as one entry
            rest, more = self._aligner.close()
            emit, aligned = emit + rest, aligned + more
        return [TextEvent("final", emit, None, tuple(aligned))] if emit else []
