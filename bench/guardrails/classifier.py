"""What a classifier rule adds to a request, and how often its verdict cache answers instead of the model.

Through the API in-process (the same app the tests build), the demo model answering and the demo classifier
judging (appliance/demo/safeguard.py), one request at a time, interleaved in each round so the machine's
noise hits every arm alike:
  - `none`: the pack without classifier rules;
  - `miss`: an input rule whose verdict cache is emptied before each request (the classifier runs);
  - `hit`: the same rule, verdict cached;
  - `both`: input and output rules, cold (the classifier runs twice and the answer is held until judged).
Reported: request latency p50/p99 per arm and the added latency against `none`; then the cache's hit rate
over a chat-like workload (questions drawn with a Zipf-like skew from the demo's prompts, each request
carrying its conversation's earlier user turns).
Usage: PYTHONPATH=. .venv/bin/python bench/guardrails/classifier.py [--rounds 40] [--workload 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from appliance.demo.model import CLASSIFIER, ensure_demo_bundle  # noqa: E402
from appliance.demo.safeguard import BUNDLE_NAME, POLICY, judged_texts  # noqa: E402
from appliance.signing.keys import load_private_key  # noqa: E402
from tests.appliance import make_appliance  # noqa: E402
from tests.conftest import DEMO_CACHE, DEMO_KEY  # noqa: E402  (the demo bundles the tests use)

RESULTS = REPO / "bench" / "results" / "classifier.txt"
QUESTION = "What is the capital of France?"


def _pack(root: Path, applies_to: list[str] | None) -> Path:
    pack = root / ("pack-" + "-".join(applies_to or ["none"]))
    shutil.copytree(REPO / "tests" / "pack", pack)
    if applies_to:
        rule = {"id": "bench", "model": BUNDLE_NAME, "policy": POLICY, "applies_to": applies_to}
        (pack / "classifiers.yaml").write_text(json.dumps({"classifiers": [rule]}))
    return pack


async def _ask(client, messages: list[dict]) -> float:
    started = time.perf_counter()
    r = await client.post(
        "/v1/chat/completions", json={"model": "gpt-oss-demo", "temperature": 0, "max_tokens": 64, "messages": messages}
    )
    assert r.status_code in (200, 403), r.text
    return time.perf_counter() - started


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _latency(appliance, packs: dict[str, Path], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {arm: [] for arm in ("none", "miss", "hit", "both")}
    policy, classifiers = appliance.services.policy, appliance.services.classifiers
    messages = [{"role": "user", "content": QUESTION}]
    async with appliance.client("user") as client:
        for _ in range(rounds):
            for arm in times:
                policy.reload(packs["none" if arm == "none" else "both" if arm == "both" else "input"])
                if arm != "hit":
                    classifiers.cache._entries.clear()
                else:
                    await _ask(client, messages)  # make sure the verdict is cached
                times[arm].append(await _ask(client, messages))
    return times


async def _hit_rate(appliance, pack: Path, requests: int) -> tuple[float, int]:
    appliance.services.policy.reload(pack)
    cache = appliance.services.classifiers.cache
    cache._entries.clear()
    cache.hits = cache.misses = 0
    prompts = [t for t in judged_texts() if t.endswith("?") or t.endswith("!")]
    weights = [1 / (rank + 1) for rank in range(len(prompts))]
    rng = random.Random(0)
    async with appliance.client("user") as client:
        for _ in range(requests):
            turns = rng.choices(prompts, weights, k=rng.randint(1, 3))  # a conversation's user turns so far
            messages = []
            for turn in turns:
                messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": "..."}]
            await _ask(client, messages[:-1])
    return cache.hits / max(cache.hits + cache.misses, 1), cache.hits + cache.misses


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--workload", type=int, default=300)
    args = parser.parse_args()
    key = load_private_key(DEMO_KEY)
    demo, judge = ensure_demo_bundle(DEMO_CACHE, key), ensure_demo_bundle(DEMO_CACHE, key, model=CLASSIFIER)
    with tempfile.TemporaryDirectory(prefix="bench-classifier-") as folder:
        root = Path(folder)
        packs = {"none": _pack(root, None), "input": _pack(root, ["input"]), "both": _pack(root, ["input", "output"])}
        appliance = make_appliance(root / "var", demo, key.public_key(), (judge,), policy_dir=packs["none"])
        try:
            times = await _latency(appliance, packs, args.rounds)
            rate, judged = await _hit_rate(appliance, packs["input"], args.workload)
        finally:
            appliance.services.backend.close()
            appliance.services.close()
    base = statistics.median(times["none"]) * 1000
    lines = [
        f"classifier rules, demo model + demo classifier, {args.rounds} interleaved rounds, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        f"{'arm':<6} {'p50 ms':>8} {'p99 ms':>8} {'added p50 ms':>13}",
    ]
    for arm, values in times.items():
        p50 = statistics.median(values) * 1000
        lines.append(f"{arm:<6} {p50:8.1f} {_pct(values, 0.99):8.1f} {p50 - base:13.1f}")
    lines.append(f"verdict cache hit rate over {args.workload} chat requests ({judged} texts judged): {rate:.1%}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    RESULTS.write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
