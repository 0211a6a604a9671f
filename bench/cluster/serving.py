"""Serving across hosts on one machine: how requests split across the LLM replicas of two nodes under load,
and what losing the worker costs the clients (requests that fail, time until every request succeeds again).

Two raylets (`ray.cluster_utils.Cluster`: a head with 2 CPUs, a worker with 1) run the appliance's placement
(serving/placement.py) with a stand-in LLM deployment that streams 20 chunks 50 ms apart and names its node;
clients are the gateway's own `HandleBackend` (retries before the first chunk, errors after it). The worker
raylet is removed mid-load (as a lost host: its replica's actor dies) and added again. Results appended to
bench/results/cluster.txt with the load average.

    .venv/bin/python bench/cluster/serving.py [--clients 8] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import ray  # noqa: E402
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from appliance.engine import GenerationRequest, ServedBy, TextEvent  # noqa: E402
from appliance.serving.handle_backend import HandleBackend  # noqa: E402
from appliance.serving.nodes import NodeNames  # noqa: E402
from appliance.serving.placement import llm_placement  # noqa: E402


@serve.deployment(name="llm", ray_actor_options={"num_cpus": 1}, **llm_placement(False, 1, 64))
class StandIn:
    def __init__(self) -> None:
        self.node = ray.get_runtime_context().get_node_id()[:8]

    async def describe(self) -> dict:
        return {"models": [], "stats": {}, "ready": True}

    async def generate(self, model: str, request: GenerationRequest):
        yield [ServedBy(self.node), TextEvent("final", "a")]
        for _ in range(19):
            await asyncio.sleep(0.05)
            yield [TextEvent("final", "b")]


async def one(backend: HandleBackend) -> tuple[str, float]:
    """(the serving node, or "error"; when it ended)."""
    node = "?"
    try:
        async for chunk in backend.generate("m", GenerationRequest(messages=[{"role": "user", "content": "x"}])):
            node = next((e.node for e in chunk if isinstance(e, ServedBy)), node)
    except Exception:  # noqa: BLE001 - counted: what a client of the gateway would see as a retryable error
        return "error", time.monotonic()
    return node, time.monotonic()


async def load(backend: HandleBackend, clients: int, seconds: float) -> list[tuple[str, float]]:
    end = time.monotonic() + seconds
    done: list[tuple[str, float]] = []

    async def client() -> None:
        while time.monotonic() < end:
            done.append(await one(backend))

    await asyncio.gather(*(client() for _ in range(clients)))
    return done


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30)
    args = ap.parse_args()
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_DASHBOARD_ENABLED="0")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    ray.init(address=cluster.address, log_to_driver=False)
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    head = cluster.head_node.node_id[:8]
    serve.start(http_options={"host": "127.0.0.1", "port": 0})
    handle = serve.run(StandIn.bind(), name="bench", route_prefix=None)
    while len({asyncio.run(one(HandleBackend(handle, NodeNames(Path("/nonexistent")), "bench")))[0]
               for _ in range(20)}) < 2:  # fmt: skip
        time.sleep(1)  # both replicas up

    backend = HandleBackend(handle, NodeNames(Path("/nonexistent")), "bench")
    done: list[tuple[str, float]] = []
    began = time.monotonic()
    clients = threading.Thread(target=lambda: done.extend(asyncio.run(load(backend, args.clients, args.seconds))))
    clients.start()  # the raylets are added and removed from the main thread (Ray sets signal handlers)
    time.sleep(args.seconds / 3)
    lost = time.monotonic()
    cluster.remove_node(worker)
    time.sleep(max(0.0, began + 2 * args.seconds / 3 - time.monotonic()))
    back = time.monotonic()
    cluster.add_node(num_cpus=1)
    joined = time.monotonic()  # its raylet registered
    clients.join()
    phases = {"before": (began, lost), "worker lost": (lost, back), "worker back": (back, float("inf"))}
    lines = [
        f"serving across hosts: 2 raylets on one machine (head 2 CPUs, worker 1), stand-in replica streaming "
        f"20 chunks x 50 ms, {args.clients} clients through HandleBackend, {args.seconds:.0f} s; the worker "
        f"removed at {lost - began:.1f} s and added again at {back - began:.1f} s"
    ]
    for name, (start, stop) in phases.items():
        counts = Counter("head" if n == head else "error" if n == "error" else "worker"
                         for n, t in done if start <= t < stop)  # fmt: skip
        lines.append(f"   {name}: {dict(counts)}")
    errors = [t for n, t in done if n == "error"]
    back_on_worker = min((t for n, t in done if n not in ("error", head) and t > back), default=float("nan"))
    lines.append(
        f"   lost worker: {len(errors)} requests ended in an error (those in flight on it), last error "
        f"{(max(errors, default=lost) - lost):.2f} s after the loss; returning worker's raylet up "
        f"{joined - back:.1f} s after its start, its first request served {back_on_worker - joined:.1f} s after that; load average {os.getloadavg()[0]:.1f}"
    )
    text = "\n".join(lines)
    print(text)
    with open(REPO / "bench" / "results" / "cluster.txt", "a") as f:
        f.write(text + "\n")
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
