"""A model stand-in that replays scripted engine events: for tests about the API's shapes and the
audited path, not about the model (the real engine is exercised by the other API tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from appliance.api.backend import ModelInfo
from appliance.engine import FinishEvent, GenerationRequest, TextEvent, ToolCallEvent, Usage


class ScriptedBackend:
    def __init__(self, chunks: list[list] | None = None, delay: float = 0.0) -> None:
        self.chunks = chunks or []
        self.delay = delay
        self.calls: list[GenerationRequest] = []
        self.closed = 0

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo("tiny", "1.0.0", "cpu-fp32", 0)]

    async def generate(self, model: str, request: GenerationRequest) -> AsyncIterator[list]:
        self.calls.append(request)
        try:
            for chunk in self.chunks:
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield chunk
        finally:
            self.closed += 1

    async def ready(self) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        return {}


def answer(final: str, analysis: str = "thinking", prompt: int = 20) -> list[list]:
    n = len(final.split()) + len(analysis.split())
    return [
        [TextEvent("analysis", analysis)],
        [TextEvent("final", final)],
        [FinishEvent("stop", Usage(prompt, n, len(analysis.split())))],
    ]


def tool_call(name: str, arguments: str) -> list[list]:
    return [
        [TextEvent("analysis", "need a tool")],
        [ToolCallEvent("call_1", name, arguments)],
        [FinishEvent("tool_calls", Usage(30, 9, 3))],
    ]
