"""The head of the cluster test, run in the head's namespace: Ray started by the appliance's own code
(`serving.ray_env.start_ray`: a cluster head, so mutual TLS and the token), then a task and a Serve replica
placed on the worker once it has joined. Prints one JSON line; stays up until its stdin closes."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from appliance.config import get_settings
from appliance.serving.pins import NODE_DATA_ENV
from appliance.serving.ray_env import start_ray


def main(home: Path, worker_ip: str) -> None:
    start_ray(get_settings(), home)
    import ray
    from ray import serve

    print("READY", flush=True)
    deadline = time.monotonic() + 300
    while not any(n["Alive"] and n["NodeManagerAddress"] == worker_ip for n in ray.nodes()):
        if time.monotonic() > deadline:
            print(json.dumps({"error": "the worker never joined"}), flush=True)
            return
        time.sleep(1)
    on_worker = {"resources": {f"node:{worker_ip}": 0.01}}
    task = ray.remote(ray.util.get_node_ip_address).options(**on_worker).remote()  # type: ignore[call-overload]

    @serve.deployment(ray_actor_options={"num_cpus": 0, **on_worker})
    class Where:
        def __call__(self) -> str:  # its node, and the data folder a replica there loads bundles from
            return f"{ray.util.get_node_ip_address()} {os.environ.get(NODE_DATA_ENV)}"

    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": 18123})
    handle = serve.run(Where.bind(), name="where", route_prefix=None)
    replica = handle.remote().result(timeout_s=180)
    address, data = replica.split(" ", 1)
    print(json.dumps({"task": ray.get(task, timeout=180), "replica": address, "data": data}), flush=True)
    sys.stdin.read()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
