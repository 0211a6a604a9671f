"""The model backend of a gateway replica: the LLM deployment reached through a Serve handle.

Chunks arrive already coalesced by the replica (one handle message per chunk, not per token). The
model list and engine statistics are cached for a second so routes and metrics do not cost a hop each.
A replica that dies before a generation has sent anything is retried on another (or its replacement);
one that dies mid-stream surfaces as an error the pipeline turns into an error event and an audit record.
The node that served a generation arrives in its first chunk, by address, and leaves here by member name;
the running replicas per node come from Serve's controller, refreshed with the model list.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import structlog
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle

from appliance.api.backend import ModelBackend, ModelInfo
from appliance.engine import Event, GenerationRequest, ServedBy
from appliance.serving.nodes import NodeNames, replicas_per_node

log = structlog.get_logger()

_TTL_S = 1.0
_RETRIES = 5
_RETRY_DELAY_S = 0.5  # x attempt: up to 7.5 s in all, about what Serve needs to replace a replica
_REPLICA_GONE = (RayActorError, ActorUnavailableError)


class HandleBackend(ModelBackend):
    def __init__(self, handle: DeploymentHandle, names: NodeNames, app: str) -> None:
        self._handle = handle
        self._stream = handle.options(stream=True)
        self._names, self._app = names, app
        self._described: dict = {"models": [], "stats": {}}
        self._replicas: dict[str, int] = {}
        self._at = 0.0

    async def _describe(self) -> dict:
        if time.monotonic() - self._at > _TTL_S:
            try:
                self._described = await self._handle.describe.remote()
                self._at = time.monotonic()
            except _REPLICA_GONE:
                if not self._described["models"]:
                    raise  # nothing known yet: the caller reports the model as unavailable
            self._replicas = await asyncio.to_thread(self._placement)
        return self._described

    def _placement(self) -> dict[str, int]:
        import ray
        from ray.serve.context import _get_global_client  # Serve's own client: what `serve status` asks

        if not ray.is_initialized():  # Serve's local testing mode: its client would start a Ray here
            return self._replicas
        try:
            client = _get_global_client()
            assert client is not None  # inside a replica Serve is always running
            return replicas_per_node(client.get_serve_details(), self._names, self._app)
        except Exception as exc:  # noqa: BLE001 - the controller restarting: the last counts stay shown
            log.warning("replica placement not read", error=str(exc)[:200])
            return self._replicas

    def replicas(self) -> dict[str, int]:
        """Running LLM replicas per node name, as last read (at most a second old while the API is used)."""
        return self._replicas

    async def models(self) -> list[ModelInfo]:
        return (await self._describe())["models"]

    async def generate(self, model: str, request: GenerationRequest) -> AsyncIterator[list[Event]]:
        """Stream from a replica; a replica lost before the first chunk is retried (nothing was sent yet)."""
        for attempt in range(_RETRIES + 1):
            response = self._stream.generate.remote(model, request)
            started = False
            try:
                async for chunk in response:  # type: ignore[union-attr]  # stream=True: a generator
                    yield chunk if started else [self._named(e) for e in chunk]
                    started = True
                return
            except _REPLICA_GONE:
                if started or attempt == _RETRIES:
                    raise
                await asyncio.sleep(_RETRY_DELAY_S * (attempt + 1))
            finally:
                response.cancel()  # a client that went away frees its engine slot at once

    def _named(self, event: Event) -> Event:
        return ServedBy(self._names(event.node)) if isinstance(event, ServedBy) else event

    async def ready(self) -> bool:
        """The replica's readiness as last described (cached like the model list: a probe flood costs the
        replica at most one call per second per gateway)."""
        try:
            return bool((await self._describe()).get("ready"))
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    def stats(self) -> dict[str, int]:
        return self._described.get("stats", {})
