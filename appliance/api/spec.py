"""`GenerationSpec`: one request in the API's terms, whichever route it came through, and the one place that
knows what OpenAI's `tool_choice` means for a model that cannot be forced to call a tool.

The request models (schemas.py) convert themselves into a spec; the audited path (pipeline.py) hands the
policy's redacted text back to `engine_request`, which builds what the engine runs. Plain Python: no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance.engine.types import GenerationRequest, content_text
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

    def texts(self) -> list[tuple[str, str]]:
        """(role, text) of every message, then the arguments of every tool call the client sends back (text
        the model reads too): what the input policy scans, in this order."""
        return [(m["role"], content_text(m.get("content"))) for m in self.messages] + \
            [("assistant", args) for _, _, args in self.call_arguments()]

    def call_arguments(self) -> list[tuple[int, int, str]]:
        """(message index, call index, arguments) of every tool call in the conversation."""
        return [(i, j, str(call.get("function", {}).get("arguments") or ""))
                for i, m in enumerate(self.messages) for j, call in enumerate(m.get("tool_calls") or [])]

    def engine_request(self, texts: list[str], max_tokens: int) -> GenerationRequest:
        """What the engine runs: `texts` (the policy's redacted `texts()`, same order) in place of the
        originals, non-text fields kept, and `tool_choice` applied."""
        n = len(self.messages)
        messages = [{**original, "content": text} for original, text in zip(self.messages, texts[:n])]
        for (i, j, _), arguments in zip(self.call_arguments(), texts[n:]):
            calls = [dict(c) for c in messages[i]["tool_calls"]]
            calls[j] = {**calls[j], "function": {**calls[j]["function"], "arguments": arguments}}
            messages[i] = {**messages[i], "tool_calls": calls}
        tools, instruction = self._tool_choice()
        if instruction:
            messages = [{"role": "developer", "content": instruction}, *messages]
        return GenerationRequest(
            messages=messages, tools=tools, reasoning_effort=self.reasoning_effort or "medium",  # type: ignore[arg-type]
            max_tokens=max_tokens, temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=None if self.seed is None else self.seed % 2**64,  # OpenAI's int64, as the sampler's uint64
            stop=self.stop)

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
