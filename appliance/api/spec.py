"""`GenerationSpec`: one request in the API's terms, whichever route it came through, and the one place that
knows what OpenAI's `tool_choice` means for a model that cannot be forced to call a tool.

The request models (schemas.py) convert themselves into a spec; the audited path (pipeline.py) hands the
policy's redacted text back to `engine_request`, which builds what the engine runs. Plain Python: no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance.engine.harmony import prompt_texts, with_texts
from appliance.engine.types import EngineError, GenerationRequest
from appliance.errors import InvalidRequest

CALL_NAMED = "Call the function {name} now."
CALL_ANY = "Answer by calling one of the functions."


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

    def texts(self) -> list[tuple[str, str]]:
        """(role, text) of every piece of client text the engine's prompt will hold (engine.harmony's
        `prompt_texts`): what the input policy scans, counts against the size limit and audits, in order."""
        return [(role, text) for role, text, _ in prompt_texts(*self._prompt())]

    def _prompt(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The messages and tools the prompt is rendered from: `tool_choice` applied."""
        tools, instruction = self._tool_choice()
        messages = [{"role": "developer", "content": instruction}, *self.messages] if instruction else self.messages
        return messages, tools

    def engine_request(self, texts: list[str], max_tokens: int) -> GenerationRequest:
        """What the engine runs: `texts` (the policy's redacted `texts()`, same order) in place of the
        originals, non-text fields kept."""
        messages, tools = self._prompt()
        try:
            messages, tools = with_texts(messages, tools, prompt_texts(messages, tools), texts)
        except EngineError as exc:
            raise InvalidRequest(str(exc), "tools") from exc
        return GenerationRequest(
            messages=messages, tools=tools, reasoning_effort=self.reasoning_effort or "medium",  # type: ignore[arg-type]
            max_tokens=max_tokens, temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=None if self.seed is None else self.seed % 2**64,  # OpenAI's int64, as the sampler's uint64
            stop=self.stop, presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
            logit_bias=self.logit_bias)

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
