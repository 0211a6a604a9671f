"""The model backend of a gateway replica: the LLM deployment reached through a Serve handle.

Chunks arrive already coalesced by the replica (one handle message per chunk, not per token). The
model list and engine statistics are cached for a second so routes and metrics do not cost a hop each.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from ray.serve.handle import DeploymentHandle

from appliance.api.backend import ModelBackend, ModelInfo
from appliance.engine import Event, GenerationRequest

_TTL_S = 1.0


class HandleBackend(ModelBackend):
    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle
        self._stream = handle.options(stream=True)
        self._described: dict = {"models": [], "stats": {}}
        self._at = 0.0

    async def _describe(self) -> dict:
        if time.monotonic() - self._at > _TTL_S:
            self._described = await self._handle.describe.remote()
            self._at = time.monotonic()
        return self._described

    async def models(self) -> list[ModelInfo]:
        return (await self._describe())["models"]

    async def generate(self, model: str, request: GenerationRequest) -> AsyncIterator[list[Event]]:
        response = self._stream.generate.remote(model, request)
        try:
            async for chunk in response:
                yield chunk
        finally:
            response.cancel()  # a client that went away frees its engine slot at once

    async def ready(self) -> bool:
        try:
            return bool(await self._handle.ready.remote())
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    def stats(self) -> dict[str, int]:
        return self._described.get("stats", {})
