"""A two-node Ray on one machine (`ray.cluster_utils.Cluster`: a head and a worker raylet) running the
appliance's placement (serving/placement.py) with stand-in deployments: prints one JSON line per phase with
the nodes the LLM replicas and the gateway run on. Run in a process of its own by test_placement_ray.py."""

from __future__ import annotations

import json
import time

import ray
from ray import serve
from ray.cluster_utils import Cluster
from ray.serve.context import _get_global_client

from appliance.serving.placement import HEAD_ONLY, llm_placement


@serve.deployment(name="llm", ray_actor_options={"num_cpus": 1}, **llm_placement(False, 1, 64))
class Llm:
    def __call__(self) -> str:
        return ray.get_runtime_context().get_node_id()


@serve.deployment(name="gateway", ray_actor_options={"num_cpus": 0.1, "resources": HEAD_ONLY})
class Gateway:
    def __init__(self, llm) -> None:
        self.llm = llm

    async def __call__(self) -> str:
        return await self.llm.remote()


def placed() -> dict[str, list[str]]:
    deployments = _get_global_client().get_serve_details()["applications"]["appliance"]["deployments"]
    return {
        name: sorted(r.get("node_id", "") for r in deployments[name]["replicas"] if r["state"] == "RUNNING")
        for name in ("llm", "gateway")
    }


def settle(llm: int, timeout: float = 120) -> dict[str, list[str]]:
    end = time.monotonic() + timeout
    while len(placed()["llm"]) != llm and time.monotonic() < end:
        time.sleep(0.5)
    return placed()


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    ray.init(address=cluster.address, log_to_driver=False)
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    head = cluster.head_node.node_id
    serve.start(http_options={"host": "127.0.0.1", "port": 0})
    serve.run(Gateway.bind(Llm.bind()), name="appliance", route_prefix=None)
    print(json.dumps({"phase": "joined", "head": head, "worker": worker.node_id, **settle(2)}), flush=True)
    cluster.remove_node(worker)
    began = time.monotonic()
    lost = settle(1)
    print(json.dumps({"phase": "lost", "s": round(time.monotonic() - began, 1), **lost}), flush=True)
    back = cluster.add_node(num_cpus=1)
    began = time.monotonic()
    returned = settle(2)
    print(json.dumps({"phase": "back", "worker": back.node_id, "s": round(time.monotonic() - began, 1), **returned}))
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
