"""The Serve deployments: `LLMServer` (engines, GPUs), `Gateway` (the FastAPI app, CPU only) and, on a cluster
head, `Activations` (what the head activated, for the replicas on worker hosts)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

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
from appliance.serving.local_backend import LoadedBundle, LocalBackend, load_active
from appliance.serving.nodes import NodeNames
from appliance.serving.pins import Pins, head_pins, load_pinned, node_settings

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
    (in-flight requests finish on the old engine). On the head it reads the store (and the audit log); on a
    worker host it asks the head's `Activations`: `pins` is what the head had activated when it deployed.
    """

    def __init__(self, settings: dict, pins: Pins | None = None, activations: DeploymentHandle | None = None) -> None:
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
        self._activations = activations
        self._switching: asyncio.Task | None = None
        self._refused: set[tuple[str, str]] = set()  # activations that failed: not retried while
        self._store_state: tuple[int, int, int] | None = None  # this host's store stays as it was

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
        if self._switching is None or self._switching.done():
            store_state = _stat(self.settings.model_store / "state.json")
            if store_state != self._store_state:  # a copy imported here since: refused versions may load now
                self._refused.clear()
                self._store_state = store_state
            follow = self._follow_pins if self.pinned else self._follow_activation
            self._switching = asyncio.create_task(follow())

    async def _follow_activation(self) -> None:
        """The head's own store: a version activated there (checked against the audit log as it loads)."""
        active = BundleStore(self.settings.model_store).active()
        await self._switch(active, lambda name: load_active(self.settings, [name])[0])

    async def _follow_pins(self) -> None:
        """A worker host's replica: what the head activated since (this host has no audit log to ask)."""
        if self._activations is None:
            return
        try:
            pins: Pins = await self._activations.pins.remote()
        except Exception as exc:  # noqa: BLE001 - the head refused its own store's state: keep serving
            log.warning("the head's activations not read", error=str(exc)[:300])
            return
        active = {name: pin["version"] for name, pin in pins.items()}
        await self._switch(active, lambda name: load_pinned(self.settings, {name: pins[name]})[0])

    async def _switch(self, active: dict[str, str], load: Callable[[str], LoadedBundle]) -> None:
        """Load each bundle whose active version changed beside the old one, then serve it; a version that
        fails to load is refused (the old one keeps serving, and the log says so) until this host's store
        changes: a tampered 100 GiB copy is not hashed again every health check."""
        loaded = self.backend.loaded_versions()
        for name, version in active.items():
            if loaded.get(name) in (None, version) or (name, version) in self._refused:
                continue
            try:
                engine = await asyncio.to_thread(load, name)
            except Exception as exc:  # noqa: BLE001 - keep serving the old version
                self._refused.add((name, version))
                log.error("activation not applied", bundle=name, version=version, error=str(exc))
                continue
            await self.backend.swap(engine)
            log.info("switched bundle", bundle=name, version=engine.info.version)


@serve.deployment(name="activations", health_check_period_s=10)
class Activations:
    """On a cluster head: each active bundle as the head's audit log last activated it, with its manifest's
    digest (serving/pins.py), for the LLM replicas on worker hosts. Computed again only when the store's
    `state.json` changes, so polling replicas cost one stat each."""

    def __init__(self, settings: dict) -> None:
        self.settings = Settings(**settings)
        self._seen: tuple[int, int, int] | None = None
        self._pins: Pins = {}

    async def pins(self) -> Pins:
        stamp = _stat(self.settings.model_store / "state.json")
        if stamp is None or stamp != self._seen:
            self._pins = await asyncio.to_thread(head_pins, self.settings)
            self._seen = stamp
        return self._pins


def _stat(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced (atomic writes make a new inode) or edited."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


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
