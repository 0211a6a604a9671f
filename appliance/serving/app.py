"""`build_app`: one builder for `appliance serve`, a `serve build` config file and the Helm chart.

    import_path: appliance.serving.app:build_app
    args: {data_dir: /var/lib/appliance, ...}     # any Settings field

GPUs per LLM replica follow the active bundles' engine profiles (cuda-* needs one GPU); the replicas are
placed on every node of the cluster (serving/placement.py), the gateway on the head.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from appliance.bundles import BundleMetadata, BundleStore
from appliance.config import Settings
from appliance.serving.deployments import Activations, Gateway, LLMServer
from appliance.serving.pins import head_pins
from appliance.serving.placement import HEAD_ONLY, llm_placement
from appliance.serving.ray_env import cluster_of


def build_app(args: dict[str, Any] | None = None) -> Application:
    settings = Settings(**(args or {}))
    store = BundleStore(settings.model_store)
    profiles = [BundleMetadata.read(settings.model_store / n / v).profile for n, v in store.active().items()]
    gpus = 1 if any(p.startswith("cuda-") for p in profiles) else 0
    shared = settings.model_dump(mode="json")
    cluster = cluster_of(settings) is not None
    head = HEAD_ONLY if cluster else {}
    pins, activations = None, None
    if cluster:  # workers load what the head activated, and follow its later activations
        pins = head_pins(settings)
        activations = Activations.options(  # type: ignore[attr-defined]  # a Deployment
            ray_actor_options={"num_cpus": 0, "resources": head}
        ).bind(shared)
    llm = LLMServer.options(  # type: ignore[attr-defined]  # @serve.deployment made it a Deployment
        ray_actor_options={"num_gpus": gpus, "num_cpus": 1},
        max_ongoing_requests=settings.serve_max_ongoing_requests,
        **llm_placement(bool(gpus), settings.serve_cpu_replicas_per_node, settings.serve_replicas_max),
    ).bind(shared, pins, activations)
    return Gateway.options(  # type: ignore[attr-defined]  # @serve.deployment made it a Deployment
        ray_actor_options={"num_cpus": 0.5, "resources": head},
        max_ongoing_requests=4 * settings.serve_max_ongoing_requests,
    ).bind(llm, shared)
