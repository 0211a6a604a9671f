"""Where the LLM replicas go: one per GPU on every node for GPU bundles, `serve_cpu_replicas_per_node` on
every node for CPU bundles, on each node alive in the cluster, workers that join later included.

The mechanism is Ray Serve's own: the LLM deployment's replica count comes from a custom autoscaling policy
(`NodeSlots`, run by Serve's controller on the head) that counts the slots of the alive nodes in Ray's node
table, so a node that joins, dies or comes back changes the target within seconds and nobody redeploys.
Placement follows from the replica's resources: a GPU replica needs one GPU (so at most one per GPU), a CPU
replica is capped per node by `max_replicas_per_node`. On a cluster head (`appliance cluster init`) the gateway
and Serve's proxy stay on the head (`HEAD_ONLY`, and `proxy_location="HeadOnly"`): a worker runs model
replicas and nothing that faces clients. On Kubernetes (no cluster.json; the chart's head pod has no CPUs for
work) the gateway is not pinned.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

HEAD_ONLY = {"node:__internal_head__": 0.001}  # Ray's built-in resource of the head node
_REFRESH_S = 2.0  # the controller's loop runs ~10 times a second: Ray's node table is asked at most this often


def node_slots(nodes: list[dict], gpu: bool, cpu_per_node: int) -> dict[str, int]:
    """Replica slots per alive node (by address), from `ray.nodes()`: its GPUs, or `cpu_per_node` capped by
    its whole CPUs (a CPU replica takes one). A dead node's entry is ignored, even beside a live one of the
    same address (a returning worker is a new node to Ray)."""
    slots: dict[str, int] = {}
    for node in nodes:
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        n = int(resources.get("GPU", 0)) if gpu else min(cpu_per_node, int(resources.get("CPU", 0)))
        slots[node["NodeManagerAddress"]] = slots.get(node["NodeManagerAddress"], 0) + n
    return slots


class NodeSlots:
    """Serve's autoscaling policy for the LLM deployment: the cluster's slot count (at least one, so a cluster
    with no fitting node still shows a pending replica rather than none). Serve applies min/max bounds."""

    def __init__(self, gpu: bool, cpu_per_node: int, nodes: Callable[[], list[dict]] | None = None) -> None:
        self.gpu, self.cpu_per_node = gpu, cpu_per_node
        self._nodes = nodes or _ray_nodes
        self._at, self._count = -_REFRESH_S, 1

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        if time.monotonic() - self._at >= _REFRESH_S:
            self._count = max(1, sum(node_slots(self._nodes(), self.gpu, self.cpu_per_node).values()))
            self._at = time.monotonic()
        return self._count, {}


def _ray_nodes() -> list[dict]:
    import ray

    return ray.nodes()


def llm_placement(gpu: bool, cpu_per_node: int, replicas_max: int) -> dict[str, Any]:
    """The LLM deployment's options that place it (serving/app.py)."""
    options: dict[str, Any] = {
        "autoscaling_config": {
            "min_replicas": 1,
            "max_replicas": replicas_max,
            "upscale_delay_s": 0,  # a node that joins gets its replicas at once
            "downscale_delay_s": 0,  # a lost node's replicas are not waited for
            "policy": {
                "policy_function": f"{__name__}:NodeSlots",
                "policy_kwargs": {"gpu": gpu, "cpu_per_node": cpu_per_node},
            },
        }
    }
    if not gpu:
        options["max_replicas_per_node"] = cpu_per_node
    return options
