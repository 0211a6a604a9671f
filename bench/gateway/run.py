"""Gateway overhead on Ray Serve, in one run, against a bare Serve app of the same shape.

  1. CPU per streamed token through the full path (auth, policy, audit, output filter, coalescing) with a
     zero-cost engine stand-in (goal <= 0.25 ms/token; naive per-token streaming costs ~1.8 ms here).
  2. CPU and p50/p99 latency that auth + policy + audit add to a short request over the bare app (an
     ingress FastAPI deployment calling a model deployment through a handle), goals <= 2 ms CPU, <= 3 ms p50.
  3. Requests/s of short requests, full vs bare, 16 clients (goal >= 0.8x).
  4. On the trained demo model (trained once, cached under var/cache/demo): TTFT and tokens/s through the
     API vs the same engine called in-process (goal >= 0.9x).

CPU is the sum over every Ray process (proxy, replicas, raylet, GCS) measured with psutil; the client's
own CPU is excluded. Results go to bench/results/gateway.txt.

    .venv/bin/python bench/gateway/run.py [--requests 200] [--no-demo]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from appliance.config import Settings  # noqa: E402
from appliance.serving.ray_env import start_ray  # noqa: E402

TOKENS = 256


def ray_cpu() -> dict[str, float]:
    """CPU seconds so far of every Ray process, by role (proxy, each replica, the rest)."""
    out: dict[str, float] = {}
    for p in psutil.process_iter(["cmdline", "name"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if not ("ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd or "ray/_private" in cmd):
                continue
            role = (
                "proxy"
                if "ProxyActor" in cmd
                else cmd.split("ServeReplica:")[1].split()[0]
                if "ServeReplica:" in cmd
                else "ray internals"
            )
            t = p.cpu_times()
            out[role] = out.get(role, 0.0) + t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def load(url: str, headers: dict, body: dict, n: int, clients: int, stream: bool) -> tuple[list[float], float]:
    """Latencies of n requests from `clients` threads, and the wall time of the whole run."""

    def one(_: int) -> float:
        t = time.perf_counter()
        with httpx.Client(timeout=120) as c:
            if stream:
                with c.stream("POST", url, headers=headers, json=body) as r:
                    for _ in r.iter_bytes():
                        pass
                    assert r.status_code == 200
            else:
                r = c.post(url, headers=headers, json=body)
                assert r.status_code == 200, r.text
        return time.perf_counter() - t

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        lat = list(pool.map(one, range(n)))
    return lat, time.perf_counter() - start


def measure(url, headers, body, n, clients, stream):
    cpu0 = ray_cpu()
    lat, wall = load(url, headers, body, n, clients, stream)
    by_role = {k: v - cpu0.get(k, 0.0) for k, v in ray_cpu().items()}
    return {"cpu": sum(by_role.values()), "by_role": by_role, "lat": lat, "wall": wall, "n": n}


def breakdown(m: dict) -> str:
    return ", ".join(f"{k} {v / m['n'] * 1000:.1f}" for k, v in sorted(m["by_role"].items()) if v > 0.0005)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--no-demo", action="store_true", help="skip the end-to-end comparison on the demo model")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> None:
    from bench.gateway.apps import bare_app, full_app, prepare

    settings = Settings(data_dir=work / "var", policy_dir=work / "policies", ray_auth_mode="disabled")
    token = prepare(settings, REPO / "policies")
    start_ray(settings, work)
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": 18321})
    serve.run(full_app(settings), name="full", route_prefix="/full")
    serve.run(bare_app(), name="bare", route_prefix="/bare")
    base = "http://127.0.0.1:18321"
    auth = {"Authorization": f"Bearer {token}"}
    msg = [{"role": "user", "content": "Say something long."}]
    streamed = {"model": "standin", "messages": msg, "max_tokens": TOKENS, "stream": True}
    short = {"model": "standin", "messages": msg, "max_tokens": 1}
    for path in ("/full/v1/chat/completions", "/bare/v1/chat/completions"):  # warm up
        measure(base + path, auth, short, 20, 4, False)
    n = args.requests
    s_full = measure(base + "/full/v1/chat/completions", auth, streamed, n // 4, 8, True)
    s_bare = measure(base + "/bare/v1/chat/completions", auth, streamed, n // 4, 8, True)
    q_full = measure(base + "/full/v1/chat/completions", auth, short, n, 16, False)
    q_bare = measure(base + "/bare/v1/chat/completions", auth, short, n, 16, False)
    lines = [f"gateway bench: {n} short requests and {n // 4} streams of {TOKENS} tokens per app, 2 cores (shared)"]
    per_tok = s_full["cpu"] / (s_full["n"] * TOKENS) * 1000
    lines.append(
        f"1. CPU per streamed token, full path: {per_tok:.3f} ms (bare app: "
        f"{s_bare['cpu'] / (s_bare['n'] * TOKENS) * 1000:.3f} ms; goal <= 0.25 ms)"
    )
    cpu_full, cpu_bare = q_full["cpu"] / n * 1000, q_bare["cpu"] / n * 1000
    p50f, p50b = pct(q_full["lat"], 50) * 1000, pct(q_bare["lat"], 50) * 1000
    p99f, p99b = pct(q_full["lat"], 99) * 1000, pct(q_bare["lat"], 99) * 1000
    lines.append(
        f"2. short request CPU: full {cpu_full:.2f} ms, bare {cpu_bare:.2f} ms -> added {cpu_full - cpu_bare:.2f}"
        f" ms (goal <= 2); p50 full {p50f:.1f} / bare {p50b:.1f} -> added {p50f - p50b:.1f} ms (goal <= 3);"
        f" p99 full {p99f:.1f} / bare {p99b:.1f}"
    )
    lines.append(f"   CPU ms per short request by process: full [{breakdown(q_full)}]; bare [{breakdown(q_bare)}]")
    rps_f, rps_b = n / q_full["wall"], n / q_bare["wall"]
    lines.append(
        f"3. short requests/s, 16 clients: full {rps_f:.0f}, bare {rps_b:.0f} -> {rps_f / rps_b:.2f}x (goal >= 0.8x)"
    )
    serve.delete("full")
    serve.delete("bare")
    if not args.no_demo:
        lines.append(end_to_end(settings, base))
    serve.shutdown()
    text = "\n".join(lines)
    print(text)
    (REPO / "bench" / "results" / "gateway.txt").write_text(text + "\n")


def end_to_end(settings: Settings, base: str) -> str:
    from ray import serve

    from appliance.demo.model import ensure_demo_bundle
    from appliance.engine import Engine, GenerationRequest
    from appliance.serving.app import build_app
    from appliance.signing import keys
    from bench.gateway.apps import install_bundle

    key_file = REPO / "var" / "cache" / "bench-signing.key"  # one key: the cache keeps one bundle per key
    if not key_file.exists():
        keys.write_private_key(keys.generate_private_key(), key_file)
    key = keys.load_private_key(key_file)
    bundle = ensure_demo_bundle(REPO / "var" / "cache" / "demo", key, log=lambda _: None)
    token, name = install_bundle(settings, bundle, key.public_key())
    msg = [{"role": "user", "content": "Who are you?"}]  # a memorised answer of ~40 tokens
    body = {"model": name, "messages": msg, "max_tokens": 64, "temperature": 0}

    async def engine_alone() -> tuple[float, float, int]:
        engine = Engine.from_bundle(
            settings.model_store / name / json.loads((bundle / "bundle.json").read_text())["version"]
        )
        t0 = time.perf_counter()
        ttft, n = None, 0
        async for ev in engine.generate(GenerationRequest(messages=msg, max_tokens=64, temperature=0)):
            ttft = ttft or time.perf_counter() - t0
            n = getattr(ev, "usage", None) and ev.usage.completion_tokens or n
        total = time.perf_counter() - t0
        engine.close()
        return ttft, total, n

    ttft_e, total_e, n_e = asyncio.run(engine_alone())
    serve.run(build_app(settings.model_dump(mode="json")), name="e2e", route_prefix="/e2e")
    url = base + "/e2e/v1/chat/completions"
    headers = {"Authorization": f"Bearer {token}"}
    httpx.post(url, headers=headers, json=body, timeout=120)  # warm
    t0 = time.perf_counter()
    ttft_a = None
    with httpx.stream(
        "POST",
        url,
        headers=headers,
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
        timeout=120,
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and '"usage"' in line:
                n_a = json.loads(line[6:])["usage"]["completion_tokens"]
            elif line.startswith("data: {") and ttft_a is None and '"content"' in line:
                ttft_a = time.perf_counter() - t0
    total_a = time.perf_counter() - t0
    serve.delete("e2e")
    tps_e, tps_a = n_e / total_e, n_a / total_a
    return (
        f"4. end to end ({name}, {n_a} tokens, greedy, one request): engine alone TTFT {ttft_e * 1000:.0f} ms, {tps_e:.0f} tok/s; "
        f"through the API TTFT {(ttft_a or total_a) * 1000:.0f} ms, {tps_a:.0f} tok/s -> {tps_a / tps_e:.2f}x "
        f"(goal >= 0.9x)"
    )


if __name__ == "__main__":
    main()
