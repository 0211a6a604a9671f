"""The model backend that runs engines in this process: the LLM replica's core, tests and benchmarks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from appliance.api.backend import ModelBackend, ModelInfo, coalesce
from appliance.audit import AuditLog
from appliance.bundles import BundleStore, VerifiedBundle, trusted_keys
from appliance.bundles.metadata import BundleError
from appliance.config import Settings
from appliance.engine import Engine, EngineError, Event, GenerationRequest


@dataclass
class LoadedBundle:
    """A verified bundle's engine and what the API lists for it: what loading hands to a backend."""

    info: ModelInfo
    engine: Engine


def open_engine(settings: Settings, bundle: VerifiedBundle) -> LoadedBundle:
    engine = Engine.from_bundle(
        bundle.path,
        max_batch_size=settings.engine_max_batch_size,
        max_queue=settings.engine_max_queue,
        max_tokens_in_flight=settings.engine_max_tokens_in_flight,
        threads=settings.engine_threads,
        kv_budget_bytes=settings.engine_kv_budget_bytes,
        prefill_chunk=settings.engine_prefill_chunk,
        prefix_cache=settings.engine_prefix_cache,
    )
    m = bundle.metadata
    return LoadedBundle(ModelInfo(m.name, m.version, m.profile, int(m.created.timestamp())), engine)


def checked_active(settings: Settings, names: list[str] | None = None) -> dict[str, str]:
    """The active version of every bundle (or of those named), each the version the audit log last recorded
    as activated: `state.json` is a plain file, and an edit to it (to serve an older, vulnerable version)
    must not take effect unrecorded."""
    active = BundleStore(settings.model_store).active()
    wanted = names or sorted(active)
    if not wanted:
        raise BundleError("no active bundle in the model store (appliance bundle import DIR --activate)")
    audit = AuditLog.from_settings(settings)
    try:
        for name in wanted:
            recorded = audit.latest("admin.bundle_activated", name=name)
            if recorded is not None and recorded.detail.get("version") != active.get(name):
                raise BundleError(
                    f"the store's state.json makes {name} {active.get(name)} active, but the audit "
                    f"log's last activation of {name} is {recorded.detail.get('version')} (record "
                    f"{recorded.seq}): refusing to load a change made outside the appliance"
                )
            if name not in active:
                raise BundleError(f"no active version of {name}")
    finally:
        audit.close()
    return {name: active[name] for name in wanted}


def load_active(settings: Settings, names: list[str] | None = None) -> list[LoadedBundle]:
    """An engine per active bundle (or per one named), loaded from exactly the bytes just verified."""
    return load_versions(settings, checked_active(settings, names))


def load_versions(
    settings: Settings, versions: dict[str, str], check: Callable[[VerifiedBundle], None] | None = None
) -> list[LoadedBundle]:
    """An engine per name -> version of the store, each verified byte for byte (and passed to `check`, which
    raises to refuse it) before anything of it is loaded."""
    store = BundleStore(
        settings.model_store, workers=settings.hash_workers, max_signature_bytes=settings.max_signature_bytes
    )
    trusted = trusted_keys(settings.trust_dir)
    loaded: list[LoadedBundle] = []
    try:
        for name, version in versions.items():
            with store.loading(name, version, trusted) as bundle:
                if check is not None:
                    check(bundle)
                loaded.append(open_engine(settings, bundle))
    except BaseException:
        for done in loaded:
            done.engine.close()
        raise
    return loaded


class LocalBackend(ModelBackend):
    def __init__(self, loaded: list[LoadedBundle]) -> None:
        self._loaded = {x.info.name: x for x in loaded}

    @classmethod
    def from_store(cls, settings: Settings, names: list[str] | None = None) -> LocalBackend:
        return cls(load_active(settings, names))

    async def models(self) -> list[ModelInfo]:
        return [x.info for x in self._loaded.values()]

    async def generate(self, model: str, request: GenerationRequest) -> AsyncIterator[list[Event]]:
        loaded = self._loaded.get(model)
        if loaded is None:
            raise EngineError(f"model {model!r} is not loaded here")
        async for chunk in coalesce(loaded.engine.generate(request)):
            yield chunk

    async def ready(self) -> bool:
        """From the engines' state only: a readiness probe never costs a generation."""
        return bool(self._loaded) and all(x.engine.healthy for x in self._loaded.values())

    async def check(self) -> None:
        """One-token generation per engine (the replica's own health check); raises if one cannot."""
        for x in self._loaded.values():
            await x.engine.health()

    def stats(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for x in self._loaded.values():
            for k, v in x.engine.stats().items():
                totals[k] = totals.get(k, 0) + v
        return totals

    def loaded_versions(self) -> dict[str, str]:
        return {name: x.info.version for name, x in self._loaded.items()}

    async def swap(self, loaded: LoadedBundle) -> None:
        """Serve `loaded` under its name from now on; the engine it replaces stops after its requests end."""
        old = self._loaded.get(loaded.info.name)
        self._loaded[loaded.info.name] = loaded
        if old is not None:
            await asyncio.to_thread(old.engine.idle.wait)
            old.engine.close()

    def close(self) -> None:
        for x in self._loaded.values():
            x.engine.close()
