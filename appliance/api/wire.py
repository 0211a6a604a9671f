"""Typed shapes of what the API sends: chat completions and their stream chunks, models, errors.

Declared as `response_model`s (and the error body under every 4xx/5xx), so `/openapi.json` documents what a
client receives; routes build these objects, never loose dicts. Field order follows OpenAI's own objects.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from appliance.engine.types import Alternative, TokenLogprob, ToolCallEvent, Usage


def unset() -> Any:
    """An optional field left out of the JSON while it is None (OpenAI omits these; `logprobs` it sends as null)."""
    return Field(default=None, exclude_if=lambda v: v is None)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error the API returns, OpenAI-shaped."""

    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "Invalid request"),
        (401, "Missing or invalid API key"),
        (403, "Role or policy refuses it"),
        (404, "No such model or object"),
        (413, "Body too large"),
        (429, "Rate limited or busy"),
        (503, "Audit store or model unavailable"),
    )
}


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    @classmethod
    def of(cls, call: ToolCallEvent) -> ToolCall:
        return cls(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments))


class StreamToolCall(ToolCall):
    index: int


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)

    @classmethod
    def of(cls, usage: Usage) -> ChatUsage:
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            completion_tokens_details=CompletionTokensDetails(reasoning_tokens=usage.reasoning_tokens),
            prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
        )


class ContentFilterResults(BaseModel):
    rule_id: str


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = unset()
    reasoning_content: str | None = unset()  # only for roles whose policy shows the chain of thought


class TopLogprob(BaseModel):
    """An alternative at one position of the answer: a single token (its UTF-8 bytes exact)."""

    token: str
    bytes: list[int]
    logprob: float

    @classmethod
    def of(cls, alt: Alternative) -> TopLogprob:
        return cls(token=alt.token, bytes=list(alt.raw), logprob=alt.logprob)


class LogprobEntry(BaseModel):
    """One piece of the answer as sent (the entries concatenate to the content) and its alternatives."""

    token: str
    bytes: list[int]
    logprob: float
    top_logprobs: list[TopLogprob]

    @classmethod
    def of(cls, entry: TokenLogprob) -> LogprobEntry:
        top = [TopLogprob.of(a) for a in entry.top]
        return cls(token=entry.token, bytes=list(entry.token.encode()), logprob=entry.logprob, top_logprobs=top)


class ChoiceLogprobs(BaseModel):
    content: list[LogprobEntry] | None
    refusal: None = None

    @classmethod
    def of(cls, entries: list[TokenLogprob] | None) -> ChoiceLogprobs | None:
        return None if entries is None else cls(content=[LogprobEntry.of(e) for e in entries])


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: ChoiceLogprobs | None = None  # null unless asked for (and none for an answer the filter stopped)
    content_filter_results: ContentFilterResults | None = unset()


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: ChatUsage
    system_fingerprint: str


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = unset()
    content: str | None = unset()
    reasoning_content: str | None = unset()
    tool_calls: list[StreamToolCall] | None = unset()


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None  # the entries of this chunk's content, when asked for
    content_filter_results: ContentFilterResults | None = unset()


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion (the last may carry only `usage`)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = unset()
    choices: list[ChunkChoice]
    usage: ChatUsage | None = unset()


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "appliance"
    version: str
    profile: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[LogprobEntry] | None = unset()  # with include "message.output_text.logprobs"


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: str
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningItem(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[Any] = Field(default_factory=list)
    content: list[ReasoningText]


class FunctionCallItem(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: str

    @classmethod
    def of(cls, call: ToolCallEvent, status: str) -> FunctionCallItem:
        return cls(
            id=f"fc_{call.id}",
            call_id=call.id,
            name=call.name,
            status=status,
            arguments=call.arguments if status == "completed" else "",
        )


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int


class ResponseUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens_details: OutputTokensDetails

    @classmethod
    def of(cls, usage: Usage) -> ResponseUsage:
        return cls(
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=usage.cached_tokens),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=usage.reasoning_tokens),
        )


class IncompleteDetails(BaseModel):
    reason: str


class ResponseObject(BaseModel):
    """A Responses API response: while in progress (no output, no usage) and when done."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    model: str
    status: Literal["in_progress", "completed", "incomplete"]
    incomplete_details: IncompleteDetails | None = None
    output: list[ReasoningItem | OutputMessage | FunctionCallItem] = Field(default_factory=list)
    parallel_tool_calls: bool = False
    tool_choice: str = "auto"
    tools: list[Any] = Field(default_factory=list)
    error: None = None
    usage: ResponseUsage | None = None
    previous_response_id: str | None = None
    store: bool = False  # kept for GET, input_items and `previous_response_id`


class InputItemList(BaseModel):
    """A page of a stored response's input items (message, function_call, function_call_output, reasoning)."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: Literal[True] = True
