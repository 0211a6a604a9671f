"""Decode step cost of log probabilities on the demo model: batch 8 with no row, one row and every row asking.

    PYTHONPATH=. .venv/bin/python bench/logprobs/run.py [--rounds 3] [--tokens 64]

Prints the scorer's own time per row (log-softmax and top-k over the 201,088-id vocabulary) and, for each
mix of 8 concurrent greedy requests, the median over rounds (interleaved, so a loaded machine slows every
mix alike) of the scheduler's decode step (forward pass, sampling, scoring: `Scheduler._step`) and of the
wall time per step (adds the consumers turning tokens into text and entries). Figures go to
bench/results/logprobs.txt with the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance.demo.model import ensure_demo_bundle  # noqa: E402
from appliance.engine import Engine, GenerationRequest, collect  # noqa: E402
from appliance.engine.sampling import score  # noqa: E402
from appliance.engine.scheduler import Scheduler  # noqa: E402
from appliance.signing.keys import load_private_key  # noqa: E402
from tests.conftest import DEMO_CACHE, DEMO_KEY  # noqa: E402  (the demo bundle the tests use)

MIXES = {"no row asks": [None] * 8, "1 of 8 rows, top 20": [20] + [None] * 7, "8 of 8 rows, top 20": [20] * 8}


def scorer_us(k: int, reps: int = 200) -> float:
    row = np.random.default_rng(0).normal(size=201_088).astype(np.float32)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        score(row, 7, k)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


STEP_S = [0.0]
_step = Scheduler._step


def _timed_step(self: Scheduler) -> None:
    start = time.perf_counter()
    _step(self)
    STEP_S[0] += time.perf_counter() - start


Scheduler._step = _timed_step  # type: ignore[method-assign]


async def step_ms(engine: Engine, asks: list[int | None], tokens: int) -> tuple[float, float]:
    requests = [
        GenerationRequest(
            messages=[{"role": "user", "content": "Who are you?"}], temperature=0, max_tokens=tokens, logprobs=k
        )
        for k in asks
    ]
    steps, STEP_S[0] = engine.stats()["steps"], 0.0
    start = time.perf_counter()
    await asyncio.gather(*(collect(engine.generate(r)) for r in requests))
    steps = engine.stats()["steps"] - steps
    return STEP_S[0] * 1000 / steps, (time.perf_counter() - start) * 1000 / steps


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for k in (0, 5, 20):
        print(f"scorer, one 201,088-id row, top {k}: {scorer_us(k):.0f} us")
    bundle = ensure_demo_bundle(DEMO_CACHE, load_private_key(DEMO_KEY))
    engine = Engine.from_bundle(bundle, max_batch_size=8)
    try:
        await step_ms(engine, MIXES["no row asks"], 8)  # warm-up
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in MIXES}
        for _ in range(args.rounds):
            for name, asks in MIXES.items():
                results[name].append(await step_ms(engine, asks, args.tokens))
        for name, times in results.items():
            step = statistics.median(t for t, _ in times)
            wall = statistics.median(w for _, w in times)
            print(f"batch 8, {name}: decode step {step:.2f} ms, wall {wall:.2f} ms per step ({len(times)} rounds)")
    finally:
        engine.close()


if __name__ == "__main__":
    asyncio.run(main())
