"""What Ray's mutual TLS (a cluster head: `appliance cluster init`) costs per request through the gateway.

The same Serve app as bench/tls (the full gateway over the zero-cost engine stand-in), on one head started by
`serving.ray_env.start_ray`: plain (the default private head, token only) or a cluster head on 127.0.0.1 with
Ray's mutual TLS and the token. Every gateway -> replica call is a Ray gRPC call, so TLS is on the request's
path. Ray reads its environment once per process, so each measurement is a child process of its own; rounds
alternate plain and mTLS and the ratio is the median of the paired rounds (the shared machine's load drifts).
CPU is the sum over the child's process tree (Ray's proxy, replicas, raylet, GCS), the client excluded.
Both run in a network namespace with one address (the cluster head's), as in the cluster test: Ray's processes
that start before their node learn "their" address from the route towards 8.8.8.8, and that must be an address
the head's certificate names. Results: bench/results/cluster.txt.

    .venv/bin/python bench/cluster/run.py [--requests 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SERVE_PORT, GCS_PORT = 18351, 18379  # off Ray's default port: other Rays on a shared machine


def child(mode: str, n: int, address: str) -> None:
    """One head in `mode`, warmed up, then `n` requests: prints {"ms": server CPU ms per request}."""
    from appliance.cluster.ca import Cluster
    from appliance.config import Settings
    from appliance.serving.ray_env import airgap_environment, start_ray

    work = Path(tempfile.mkdtemp(prefix=f"bench-cluster-{mode}-"))
    try:
        settings = Settings(data_dir=work / "var", policy_dir=work / "policies")
        if mode == "mtls":
            Cluster(settings.keys_dir / "cluster").init("head", (address,), GCS_PORT)
        os.environ.update(airgap_environment(settings, work))  # before anything imports Ray (it reads it once)
        from bench.gateway.apps import full_app, prepare
        from bench.tls.run import CLIENTS, measure

        token = prepare(settings, REPO / "policies")
        start_ray(settings, work)
        from ray import serve

        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": SERVE_PORT})
        serve.run(full_app(settings), name="full", route_prefix="/")
        url = f"http://127.0.0.1:{SERVE_PORT}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {token}"}
        body = {"model": "standin", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        measure(url, headers, body, 40, True, True)
        ms = measure(url, headers, body, n, True, True)
        print(json.dumps({"ms": ms, "clients": CLIENTS}), flush=True)
        serve.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", choices=("plain", "mtls"))
    ap.add_argument("--address")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.requests, args.address)
    from tests.cluster.netns import Net

    net = Net().up()  # a host of one address, as in tests/media/test_cluster_join.py (root only)
    try:
        measure_rounds(args, net, net.add("bench"))
    finally:
        net.down()


def measure_rounds(args: argparse.Namespace, net, address: str) -> None:
    results: dict[str, list[float]] = {"plain": [], "mtls": []}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(args.rounds):
        for mode in results:
            argv = [sys.executable, __file__, "--child", mode, "--requests", str(args.requests), "--address", address]
            proc = subprocess.run(net.argv("bench", argv), env=env, capture_output=True, text=True, timeout=900)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                raise SystemExit(f"{mode} failed: {proc.stderr[-2000:]}")
            results[mode].append(json.loads(lines[-1])["ms"])
    ratio = statistics.median(m / p for m, p in zip(results["mtls"], results["plain"], strict=True))
    med = {k: statistics.median(v) for k, v in results.items()}
    text = "\n".join(
        [
            f"cluster bench: {args.requests} short requests x {args.rounds} rounds, 4 clients, full gateway over the "
            "stand-in engine, one head, 2 cores (shared); medians",
            f"server CPU per short request: plain head {med['plain']:.2f} ms, Ray mutual TLS + token "
            f"{med['mtls']:.2f} ms -> {ratio:.3f}x paired (goal <= 1.1x)",
            "   rounds (ms): " + "; ".join(f"{k} " + "/".join(f"{x:.2f}" for x in v) for k, v in results.items()),
        ]
    )
    print(text)
    (REPO / "bench" / "results" / "cluster.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
