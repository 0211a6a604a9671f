"""The two Serve deployments: `LLMServer` (engines, GPUs) and `Gateway` (the FastAPI app, CPU only)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import ray
import structlog
from ray import serve
from ray.serve.handle import DeploymentHandle

from appliance.api.app import create_app
from appliance.api.services import Services
from appliance.bundles import BundleStore
from appliance.config import Settings
from appliance.engine import Event, GenerationRequest, ServedBy
from appliance.logs import configure_logging
from appliance.serving.handle_backend import HandleBackend
from appliance.serving.local_backend import LocalBackend, load_active
from appliance.serving.nodes import NodeNames
from appliance.serving.pins import Pins, load_pinned, node_settings

log = structlog.get_logger()


@serve.deployment(
    name="llm",
    health_check_period_s=2,
    health_check_timeout_s=60,
    graceful_shutdown_wait_loop_s=1,
    graceful_shutdown_timeout_s=30,
)
class LLMServer:
    """Loads every active bundle (verified byte for byte first) and streams coalesced generations.

    Its health check runs a one-token generation (bounded by Serve's timeout, one at a time), and notices a
    newly activated bundle version, which it verifies and loads beside the old one before switching
    (in-flight requests finish on the old engine).
    """

    def __init__(self, settings: dict, pins: Pins | None = None) -> None:
        self.settings = Settings(**settings)
        configure_logging(self.settings.log_level, self.settings.log_format)
        here = node_settings(self.settings)
        self.pinned = here is not None  # a worker host's replica: its own store, the head's activations
        if here is None:
            self.backend = LocalBackend.from_store(self.settings)
        else:
            self.settings = here
            try:
                self.backend = LocalBackend(load_pinned(here, pins or {}))
            except Exception as exc:
                log.error("replica not started: bundle refused", store=str(here.model_store), error=str(exc))
                raise
        self.node = ServedBy(_node_address())  # named in the completion records
        self._switching: asyncio.Task | None = None
        self._refused: set[tuple[str, str]] = set()  # activations that failed verification: not retried

    async def generate(self, model: str, request: GenerationRequest) -> AsyncIterator[list[Event]]:
        """The engine's chunks, the first one carrying this node (not a chunk of its own: the gateway retries
        a generation whose replica died before its first chunk, and a node alone is no progress)."""
        first = True
        async for chunk in self.backend.generate(model, request):
            yield [self.node, *chunk] if first else chunk
            first = False

    async def describe(self) -> dict:
        return {
            "models": await self.backend.models(),
            "stats": self.backend.stats(),
            "pid": os.getpid(),
            "ready": await self.backend.ready(),
        }

    async def check_health(self) -> None:
        try:
            await self.backend.check()
        except Exception as exc:
            raise RuntimeError(f"the engine failed its one-token generation: {exc}") from exc
        if not self.pinned and (self._switching is None or self._switching.done()):
            self._switching = asyncio.create_task(self._follow_activation())

    async def _follow_activation(self) -> None:
        store = BundleStore(self.settings.model_store)
        loaded = self.backend.loaded_versions()
        changed = [
            (name, version)
            for name, version in store.active().items()
            if loaded.get(name) not in (None, version) and (name, version) not in self._refused
        ]
        for name, version in changed:
            try:
                engine = (await asyncio.to_thread(load_active, self.settings, [name]))[0]
            except Exception as exc:  # noqa: BLE001 - keep serving the old version
                self._refused.add((name, version))
                log.error("activation not applied", bundle=name, version=version, error=str(exc))
                continue
            await self.backend.swap(engine)
            log.info("switched bundle", bundle=name, version=engine.info.version)


def _node_address() -> str:
    """This replica's node as Ray knows it (the address `ray start` gave it, what cluster.json lists); not
    `ray.util.get_node_ip_address()`, which is the host's route towards the outside. Serve's local testing
    mode runs replicas without Ray, and asking Ray there would start one in the caller's process."""
    if not ray.is_initialized():
        return "local"
    node_id = ray.get_runtime_context().get_node_id()
    return next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id)


@serve.deployment(
    name="gateway", health_check_period_s=2, graceful_shutdown_wait_loop_s=1, graceful_shutdown_timeout_s=30
)
@serve.ingress()
class Gateway:
    """Auth, policy and audit in front of the LLM deployment; the FastAPI app is built per replica."""

    def __init__(self, llm: DeploymentHandle, settings: dict) -> None:
        self.settings = Settings(**settings)
        configure_logging(self.settings.log_level, self.settings.log_format)
        app = serve.get_replica_context().app_name
        names = NodeNames(self.settings.keys_dir / "cluster")
        self.services = Services.from_settings(self.settings, HandleBackend(llm, names, app))

    def __serve_build_asgi_app__(self):
        return create_app(self.services, owns_services=True)  # closed by the app's ASGI shutdown
