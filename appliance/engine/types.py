"""What callers hand the engine and what it streams back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from appliance.errors import ApplianceError, InvalidRequest

Channel = Literal["analysis", "commentary", "final"]
FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]
ReasoningEffort = Literal["low", "medium", "high"]


class EngineError(ApplianceError):
    """A request the engine cannot serve as asked (too long, bad parameters, unknown tool shape)."""


class EngineBusy(EngineError):
    """Backpressure: the running batch and the waiting queue are full; retry later (HTTP 429/503)."""


MAX_TOP_LOGPROBS = 20  # OpenAI's limit on alternatives per token

TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


def content_text(content: Any, param: str = "content") -> str:
    """OpenAI message content as the one string the model reads: the one rule for every route.

    None is empty; a string is itself; a list may hold only text parts (`text`, `input_text`, `output_text`
    with a string `text`), joined without separators. Anything else is refused, never silently dropped,
    so what is scanned and recorded is what the model sees.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type", "text") in TEXT_PARTS and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise InvalidRequest(f"{param} must be text or a list of text parts (only text is supported)", param)


@dataclass
class GenerationRequest:
    """One chat completion. `messages`/`tools` follow OpenAI's chat shapes; `prompt_tokens` bypasses
    rendering (benchmarks, raw tests). `temperature` 0 means greedy; `seed` makes sampling reproducible;
    the penalties and `logit_bias` (token id -> bias) shift the logits before any sampler reads them, and
    `grammar` masks the tokens it does not allow. `cache_scope` lets the prompt reuse (and leave) prefix-cache
    blocks of the same scope only; None keeps the request out of the cache."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    reasoning_effort: ReasoningEffort = "medium"
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    prompt_tokens: list[int] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    grammar: str | None = None  # a harmony-aware Lark grammar (grammar.Constraint) every token must follow
    logprobs: int | None = None  # None: none; k: each final-channel token's logprob and its k best alternatives
    cache_scope: str | None = None  # opaque: requests share cached prompt blocks only within one scope

    def validate(self) -> None:
        if self.max_tokens < 1:
            raise EngineError("max_tokens must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise EngineError("temperature must be >= 0 and top_p in (0, 1]")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise EngineError("seed must be between 0 and 2**64 - 1")
        if not (-2 <= self.presence_penalty <= 2 and -2 <= self.frequency_penalty <= 2):
            raise EngineError("presence_penalty and frequency_penalty must be between -2 and 2")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise EngineError(f"logprobs asks for 0 to {MAX_TOP_LOGPROBS} alternatives")
        if self.prompt_tokens is None and not self.messages:
            raise EngineError("a request needs at least one message")


@dataclass(frozen=True)
class Alternative:
    """One of the most likely tokens at a position: its text (lossy where it is part of a character), its
    exact bytes, and its log probability."""

    token: str
    raw: bytes
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """One entry of an answer's log probabilities. `token` is exactly a piece of the answer's text (the
    entries of an answer concatenate to it); `top` holds the alternatives, most likely first."""

    token: str
    logprob: float
    top: tuple[Alternative, ...] = ()


@dataclass(frozen=True)
class TextEvent:
    """Text of one harmony channel; `recipient` is set for commentary addressed to a tool. A final-channel
    event of a request that asked for logprobs carries entries whose tokens concatenate to `text`."""

    channel: Channel
    text: str
    recipient: str | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class ToolCallEvent:
    """A complete function call the model addressed to `functions.<name>` (arguments as the model wrote them)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache (still counted in prompt_tokens)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class FinishEvent:
    finish_reason: FinishReason
    usage: Usage
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ServedBy:
    """Where a generation ran: the node of the LLM replica that served it (its address; the gateway names the
    cluster member). The replica puts it in the generation's first chunk; engines never emit it."""

    node: str


Event = TextEvent | ToolCallEvent | FinishEvent | ServedBy
