"""What TLS through the front adds over plain HTTP, on the same Serve app (the full gateway over the
zero-cost engine stand-in of bench/gateway), in one run:

  1. CPU per short request with keep-alive (goal: TLS <= 1.10x plain HTTP). CPU is the sum over every
     process this bench started (Ray's proxy, replicas, raylet, GCS, and the front); the client in this
     process is excluded, and so are other users' processes on a shared machine.
  2. The handshake: CPU per request when every request opens a new connection (TLS 1.3, ECDSA P-256),
     TLS minus plain, i.e. what one handshake and connection set-up cost the server side.

Each round runs plain then TLS back to back; the ratio is the median of the rounds' ratios (paired, since
the shared machine's load drifts between rounds), beside the front process's own CPU, which is what TLS
adds by construction. The front runs as `appliance tls front`, its own process, as in the Kubernetes
sidecar. Results: bench/results/tls.txt.

    .venv/bin/python bench/tls/run.py [--requests 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from appliance.config import Settings  # noqa: E402
from appliance.serving.ray_env import start_ray  # noqa: E402
from appliance.tls import certs  # noqa: E402

SERVE_PORT, TLS_PORT, CLIENTS = 18341, 18443, 4


def server_cpu() -> float:
    """CPU seconds so far of every process below this one (what serves; this process is the client)."""
    total = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def load(url: str, headers: dict, body: dict, n: int, verify, keep_alive: bool) -> None:
    """n short requests from CLIENTS threads; each thread keeps one connection unless `keep_alive` is off."""

    def worker(count: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        with httpx.Client(verify=verify, timeout=120, limits=limits) as c:
            for _ in range(count):
                r = c.post(url, headers=headers, json=body)
                assert r.status_code == 200, r.text

    threads = [threading.Thread(target=worker, args=(n // CLIENTS,)) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def measure(url, headers, body, n, verify, keep_alive) -> float:
    """Server CPU ms per request."""
    before = server_cpu()
    load(url, headers, body, n, verify, keep_alive)
    return (server_cpu() - before) / (n // CLIENTS * CLIENTS) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> None:
    from bench.gateway.apps import full_app, prepare

    settings = Settings(data_dir=work / "var", policy_dir=work / "policies", ray_auth_mode="disabled")
    token = prepare(settings, REPO / "policies")
    cert, key = certs.self_signed(["localhost"], ["127.0.0.1"])
    certs.install(settings.keys_dir / "tls", cert, key)
    start_ray(settings, work)
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": SERVE_PORT})
    serve.run(full_app(settings), name="full", route_prefix="/")
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(settings.data_dir), "APPLIANCE_PORT": str(TLS_PORT)}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("appliance")), "tls", "front", "--upstream", str(SERVE_PORT)], env=env
    )
    try:
        front = psutil.Process(proc.pid)
        pinned = ssl.create_default_context(cadata=cert.decode())
        plain = f"http://127.0.0.1:{SERVE_PORT}/v1/chat/completions"
        tls = f"https://127.0.0.1:{TLS_PORT}/v1/chat/completions"
        _wait(tls, pinned)
        headers = {"Authorization": f"Bearer {token}"}
        body = {"model": "standin", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        measure(plain, headers, body, 40, True, True)  # warm up both paths
        measure(tls, headers, body, 40, pinned, True)
        results: dict[str, list[float]] = {
            k: [] for k in ("plain", "tls", "front", "plain_new", "tls_new", "front_new")
        }
        n = args.requests
        for _ in range(args.rounds):
            results["plain"].append(measure(plain, headers, body, n, True, True))
            f0 = _own(front)
            results["tls"].append(measure(tls, headers, body, n, pinned, True))
            results["front"].append((_own(front) - f0) / (n // CLIENTS * CLIENTS) * 1000)
            results["plain_new"].append(measure(plain, headers, body, n // 2, True, False))
            f0 = _own(front)
            results["tls_new"].append(measure(tls, headers, body, n // 2, pinned, False))
            results["front_new"].append((_own(front) - f0) / (n // 2 // CLIENTS * CLIENTS) * 1000)
        med = {k: statistics.median(v) for k, v in results.items()}
        ratio = statistics.median(t / p for t, p in zip(results["tls"], results["plain"], strict=True))
        lines = [
            f"tls bench: {n} short requests x {args.rounds} rounds, {CLIENTS} clients, full gateway over the stand-in "
            f"engine, 2 cores (shared); medians",
            f"1. server CPU per short request, keep-alive: plain HTTP {med['plain']:.2f} ms, TLS through the front "
            f"{med['tls']:.2f} ms -> {ratio:.3f}x paired (goal <= 1.10x); the front's own process "
            f"{med['front']:.2f} ms/request = {med['front'] / med['plain'] * 100:.1f}% of the plain path",
            f"2. new connection per request: plain {med['plain_new']:.2f} ms, TLS {med['tls_new']:.2f} ms; the front's "
            f"own CPU {med['front_new']:.2f} ms/request -> one handshake (TLS 1.3, ECDHE + ECDSA P-256) and connection "
            f"set-up cost the front {med['front_new'] - med['front']:.2f} ms",
            "   rounds (ms): " + "; ".join(f"{k} " + "/".join(f"{x:.2f}" for x in v) for k, v in results.items()),
        ]
    finally:
        proc.terminate()
        proc.wait(10)
        serve.shutdown()
    text = "\n".join(lines)
    print(text)
    (REPO / "bench" / "results" / "tls.txt").write_text(text + "\n")


def _own(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _wait(url: str, verify) -> None:
    for _ in range(100):
        try:
            httpx.get(url.rsplit("/v1", 1)[0] + "/healthz", verify=verify, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the TLS front never answered")


if __name__ == "__main__":
    main()
