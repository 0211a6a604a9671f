"""Request bodies of the OpenAI-compatible routes.

No parameter is dropped silently: a top-level field the route's table (parameters.py) does not name is a
400 "Unrecognized request argument", one it refuses is a 400 `unsupported_parameter`, as OpenAI answers.
Inside a parameter's object unknown fields are ignored, as OpenAI's SDKs expect. Each request converts
itself into a `GenerationSpec` (`to_generation_spec`), so a route only parses, runs the audited path and
shapes the answer."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from appliance.api.errors import ApiError
from appliance.api.items import messages_of, without_old_reasoning
from appliance.api.parameters import CHAT, RESPONSES, Param, refused
from appliance.api.spec import AnswerFormat, GenerationSpec
from appliance.engine.types import MAX_TOP_LOGPROBS, content_text
from appliance.errors import InvalidRequest

Effort = Literal["low", "medium", "high"]
OUTPUT_LOGPROBS = "message.output_text.logprobs"  # the one Responses `include` value the appliance honours


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


def invalid_text_at(value: Any, path: str = "") -> str | None:
    """The path of the first string (or key) in a parsed JSON body that is not valid Unicode, else None.

    JSON's `\\ud800` escapes decode to lone UTF-16 surrogates, which no UTF-8 store, tokenizer or response
    can carry. One rule for every field, applied before any model sees the body: refuse, never repair.
    """
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if invalid_text_at(key, where) or (found := invalid_text_at(item, where)):
                return found or where
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if found := invalid_text_at(item, f"{path}.{i}" if path else str(i)):
                return found
    return None


class RequestBody(_Body):
    """A whole request body: refuses text that is not valid Unicode anywhere inside it (a 400)."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        if (where := invalid_text_at(data)) is not None:
            raise ValueError(f"{where} is not valid Unicode (it holds a lone UTF-16 surrogate)")
        return data


class GenerationBody(RequestBody):
    """A generation route's body: any parameter its route's table does not honour is a 400 naming it; the
    end-user fields both routes share."""

    PARAMETERS: ClassVar[dict[str, Param]]

    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = Field(default=None, max_length=64)
    parallel_tool_calls: bool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    @model_validator(mode="before")
    @classmethod
    def _decided(cls, data: Any) -> Any:
        return refused(cls.PARAMETERS, data) if isinstance(data, dict) else data

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v and (len(v) > 16 or any(len(k) > 64 or len(x) > 512 for k, x in v.items())):
            raise ValueError("metadata holds at most 16 pairs, keys up to 64 and values up to 512 characters")
        return v

    def audit_detail(self, logprobs: int | None = None) -> dict[str, str]:
        """What the request's audit record keeps about whom and what the application asked for (log
        probabilities: the alternatives asked for per token)."""
        detail = {
            "end_user": self.user,
            "safety_identifier": self.safety_identifier,
            "metadata": json.dumps(self.metadata, ensure_ascii=False, sort_keys=True) if self.metadata else None,
            "logprobs": None if logprobs is None else f"top_logprobs={logprobs}",
        }
        return {k: v for k, v in detail.items() if v}

    def logprobs_asked(self, asked: bool, needs: str) -> int | None:
        """The engine's `logprobs`: None, or the alternatives asked for. `top_logprobs` without what asks for
        log probabilities (`needs`) is refused by name rather than ignored."""
        if self.top_logprobs is not None and not asked:
            raise ApiError(400, f"top_logprobs needs {needs}", code="invalid_request", param="top_logprobs")
        return (self.top_logprobs or 0) if asked else None


class FunctionDef(_Body):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # the arguments are constrained to `parameters`


class JsonSchemaFormat(_Body):
    """Chat's `response_format.json_schema`; Responses' `text.format` carries the same fields flat."""

    name: str = Field(default="response", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")  # none: any JSON value
    strict: bool | None = None  # the answer is constrained whatever this says: a schema asked for is kept


def _answer_format(kind: str, spec: JsonSchemaFormat | None, param: str) -> AnswerFormat:
    if kind != "json_schema":
        return AnswerFormat(kind, param)  # type: ignore[arg-type]
    if spec is None:
        raise InvalidRequest(f"{param} of type json_schema needs a schema", param)
    return AnswerFormat("json_schema", param, spec.name, spec.description, spec.schema_)


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def answer_format(self) -> AnswerFormat:
        return _answer_format(self.type, self.json_schema, "response_format")


class TextFormat(JsonSchemaFormat):
    type: Literal["text", "json_object", "json_schema"]


class TextConfig(_Body):
    """Responses' `text`: the answer's format (`verbosity` is refused: gpt-oss has no such setting)."""

    format: TextFormat | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_verbosity(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("verbosity") not in (None, "medium"):
            raise ApiError(
                400,
                "text.verbosity is not supported: gpt-oss has no verbosity setting",
                code="unsupported_parameter",
                param="text.verbosity",
            )
        return data

    def answer_format(self) -> AnswerFormat | None:
        return None if self.format is None else _answer_format(self.format.type, self.format, "text.format")


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDef


class ToolCallFunction(_Body):
    name: str
    arguments: str = ""


class ToolCall(_Body):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.role != "assistant" and self.content is None:
            raise ValueError(f"a {self.role} message needs content")
        return self

    def to_spec_message(self, index: int) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": self.role, "content": content_text(self.content, f"messages.{index}.content")}
        if self.tool_calls:
            msg["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.tool_call_id:
            msg["tool_call_id"] = self.tool_call_id
        if self.name:
            msg["name"] = self.name
        return msg


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: dict[str, str]


class StreamOptions(_Body):
    include_usage: bool = False


class ChatCompletionRequest(GenerationBody):
    PARAMETERS = CHAT

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    reasoning_effort: Effort | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)  # OpenAI's int64
    stop: str | list[str] | None = None
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[int, float] | None = None
    response_format: ResponseFormat | None = None
    logprobs: StrictBool | None = None

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v: dict[int, float] | None) -> dict[int, float] | None:
        if v and (len(v) > 1024 or any(t < 0 or not -100 <= b <= 100 for t, b in v.items())):
            raise ValueError("logit_bias maps at most 1024 token ids to biases between -100 and 100")
        return v

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int | None) -> int | None:
        if v not in (None, 1):
            raise ValueError("only n=1 is supported")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and (len(v) > 4 or not all(v)):
            raise ValueError("stop takes at most 4 non-empty strings")
        return v

    def to_generation_spec(self) -> GenerationSpec:
        choice = self.tool_choice.model_dump() if isinstance(self.tool_choice, NamedToolChoice) else self.tool_choice
        logprobs = self.logprobs_asked(bool(self.logprobs), "logprobs: true")
        return GenerationSpec(
            model=self.model,
            messages=[m.to_spec_message(i) for i, m in enumerate(self.messages)],
            tools=[t.model_dump() for t in self.tools or []],
            tool_choice=choice,
            reasoning_effort=self.reasoning_effort,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=[self.stop] if isinstance(self.stop, str) else list(self.stop or []),
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            logit_bias=dict(self.logit_bias or {}),
            audit=self.audit_detail(logprobs),
            answer_format=self.response_format.answer_format() if self.response_format else None,
            logprobs=logprobs,
        )


class ResponsesTool(_Body):
    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Reasoning(_Body):
    effort: Effort | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_summary(cls, data: Any) -> Any:
        for key in ("summary", "generate_summary"):
            if isinstance(data, dict) and data.get(key) is not None:
                raise ApiError(
                    400,
                    f"reasoning.{key} is not supported: the analysis channel is shown whole "
                    "to roles allowed to read it, never summarised",
                    code="unsupported_parameter",
                    param=f"reasoning.{key}",
                )
        return data


class ResponsesRequest(GenerationBody):
    PARAMETERS = RESPONSES

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[ResponsesTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool = False
    max_tool_calls: int | None = Field(default=None, ge=1)
    text: TextConfig | None = None
    include: list[str] | None = None
    store: bool | None = None  # None: the site's default (stored unless storage is off)
    previous_response_id: str | None = None

    @field_validator("include")
    @classmethod
    def _included(cls, v: list[str] | None) -> list[str] | None:
        for value in v or []:
            if value != OUTPUT_LOGPROBS:
                raise ApiError(
                    400,
                    f"include {value!r} is not supported: only {OUTPUT_LOGPROBS!r} is",
                    code="unsupported_parameter",
                    param="include",
                )
        return v

    def input_messages(self) -> list[dict[str, Any]]:
        """This request's own input items as chat-shaped messages (no instructions, no earlier turns)."""
        items = [{"role": "user", "content": self.input}] if isinstance(self.input, str) else self.input
        return messages_of(items)

    def audit_detail(self, logprobs: int | None = None) -> dict[str, str]:
        """The end user and metadata, log probabilities asked for, and the stored response this one continues."""
        chained = {} if self.previous_response_id is None else {"previous_response_id": self.previous_response_id}
        return super().audit_detail(logprobs) | chained

    def to_generation_spec(self, history: list[dict[str, Any]] | None = None) -> GenerationSpec:
        """The instructions (a developer message), the earlier turns of a chain (`history`, chat-shaped),
        then the input; reasoning before the last user message is left out (items.without_old_reasoning)."""
        logprobs = self.logprobs_asked(OUTPUT_LOGPROBS in (self.include or []), f"include {OUTPUT_LOGPROBS!r}")
        head = [{"role": "developer", "content": self.instructions}] if self.instructions else []
        messages = without_old_reasoning([*head, *(history or []), *self.input_messages()])
        if not messages or all(m["role"] == "developer" for m in messages):
            raise InvalidRequest("input must hold at least one message", "input")
        tools = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description or "",
                    "parameters": t.parameters,
                    "strict": t.strict,
                },
            }
            for t in self.tools or []
        ]
        return GenerationSpec(
            model=self.model,
            messages=messages,
            tools=tools,
            tool_choice=self.tool_choice,
            reasoning_effort=self.reasoning.effort if self.reasoning else None,
            max_tokens=self.max_output_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            audit=self.audit_detail(logprobs),
            tool_param="tools[{}].parameters",
            answer_format=self.text.answer_format() if self.text else None,
            logprobs=logprobs,
        )
