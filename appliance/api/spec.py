"""`GenerationSpec`: one request in the API's terms, whichever route it came through, and the one place that
knows what OpenAI's `tool_choice` and `response_format` mean for gpt-oss.

A request is constrained (engine/grammar.py) when it asks for a JSON answer, forces or forbids a call, or
has a `strict` tool: then the grammar guarantees what the prompt asks for. The prompt still asks, as harmony
defines it (a response-format section in the developer message, an instruction to call), so a real model
knows what is wanted and the constraint rarely has to fight it.

The request models (schemas.py) convert themselves into a spec; the audited path (pipeline.py) hands the
policy's redacted text back to `engine_request`, which builds what the engine runs. Plain Python: no HTTP.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from appliance.engine.grammar import Calls, Constraint
from appliance.engine.harmony import prompt_texts, with_texts
from appliance.engine.types import EngineError, GenerationRequest
from appliance.errors import InvalidRequest

CALL_NAMED = "Call the function {name} now."
CALL_ANY = "Answer by calling one of the functions."


@dataclass(frozen=True)
class AnswerFormat:
    """OpenAI's `response_format` (chat) or `text.format` (Responses); `param` names it in errors."""

    type: Literal["text", "json_object", "json_schema"]
    param: str
    name: str = "json_object"
    description: str | None = None
    schema: dict[str, Any] | None = None

    @property
    def json_schema(self) -> dict[str, Any] | None:
        """The schema the final answer must match: None for free text."""
        if self.type == "text":
            return None
        return {"type": "object"} if self.type == "json_object" else self.schema or {}

    def section(self) -> str:
        """Harmony's developer-message "Response Formats" section for this format."""
        note = f"// {self.description}\n" if self.description else ""
        return f"# Response Formats\n\n## {self.name}\n\n{note}{json.dumps(self.json_schema, ensure_ascii=False)}"


@dataclass
class GenerationSpec:
    """Chat-shaped messages (content already flattened to text), tools and sampling settings."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    reasoning_effort: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    audit: dict[str, str] = field(default_factory=dict)  # end user and metadata, for the request record
    answer_format: AnswerFormat | None = None
    tool_param: str = "tools[{}].function.parameters"  # where a tool's schema sits in this route's body
    logprobs: int | None = None  # the answer's log probabilities with this many alternatives; None: not asked

    def texts(self) -> list[tuple[str, str]]:
        """(role, text) of every piece of client text the engine's prompt will hold (engine.harmony's
        `prompt_texts`): what the input policy scans, counts against the size limit and audits, in order."""
        return [(role, text) for role, text, _ in prompt_texts(*self._prompt())]

    def _prompt(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The messages and tools the prompt is rendered from: `tool_choice` and the answer format applied."""
        tools, instruction = self._tool_choice()
        fmt = self.answer_format
        added = [text for text in (instruction, fmt.section() if fmt and fmt.type != "text" else None) if text]
        return [*({"role": "developer", "content": text} for text in added), *self.messages], tools

    def constraint(self) -> Constraint | None:
        """What the grammar must guarantee, or None for an unconstrained answer."""
        shown, _ = self._tool_choice()
        choice = self.tool_choice
        calls: Calls = (
            "none"
            if choice == "none" or not shown
            else "required"
            if choice == "required" or isinstance(choice, dict)
            else "auto"
        )
        answer = self.answer_format.json_schema if self.answer_format else None
        strict = any((t.get("function") or {}).get("strict") for t in self.tools)
        if answer is None and not strict and calls != "required" and not (choice == "none" and self.tools):
            return None
        indexed = [(i, t["function"]) for i, t in enumerate(self.tools) if t in shown]
        return Constraint(
            answer,
            {fn["name"]: fn.get("parameters") or {"type": "object"} for _, fn in indexed},
            calls,
            self.answer_format.param if self.answer_format else "response_format",
            tuple(self.tool_param.format(i) for i, _ in indexed),
        )

    def format_detail(self, constrained: bool) -> dict[str, str]:
        """What the request record keeps about the answer format: its type, the schema's SHA-256, and
        whether the answer is constrained."""
        detail = {"constrained": "true"} if constrained else {}
        fmt = self.answer_format
        if fmt is not None and fmt.type != "text":
            canonical = json.dumps(fmt.json_schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            detail |= {"response_format": fmt.type, "schema_sha256": hashlib.sha256(canonical.encode()).hexdigest()}
        return detail

    def engine_request(self, texts: list[str], max_tokens: int, grammar: str | None = None) -> GenerationRequest:
        """What the engine runs: `texts` (the policy's redacted `texts()`, same order) in place of the
        originals, non-text fields kept."""
        messages, tools = self._prompt()
        try:
            messages, tools = with_texts(messages, tools, prompt_texts(messages, tools), texts)
        except EngineError as exc:
            raise InvalidRequest(str(exc), "tools") from exc
        return GenerationRequest(
            messages=messages,
            tools=tools,
            reasoning_effort=self.reasoning_effort or "medium",  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=None if self.seed is None else self.seed % 2**64,  # OpenAI's int64, as the sampler's uint64
            stop=self.stop,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias=self.logit_bias,
            grammar=grammar,
            logprobs=self.logprobs,
        )

    def _tool_choice(self) -> tuple[list[dict[str, Any]], str | None]:
        """(tools the prompt shows, an instruction to prepend): `none` shows no tools, a named function only
        that one with an instruction to call it, `required` all with an instruction to call one."""
        choice = self.tool_choice
        if choice in (None, "auto"):
            return self.tools, None
        if choice == "none":
            return [], None
        if choice == "required":
            return self.tools, CALL_ANY if self.tools else None
        if isinstance(choice, dict):
            fn = choice.get("function")
            name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
            tools = [t for t in self.tools if t["function"]["name"] == name]
            if not tools:
                raise InvalidRequest(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
            return tools, CALL_NAMED.format(name=name)
        raise InvalidRequest("tool_choice must be auto, none, required or a named function", "tool_choice")
