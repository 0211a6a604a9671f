"""Prefix cache benchmark on the trained demo model, through the engine (issue 25, part 6).

1. Time to first token (a 1-token generation) of a request sharing a 2,048-token prefix with an earlier one of
   the same scope (warm), against the first request of that prefix (cold, which also stores its blocks), the
   same prompt without the cache (uncached), and the second prompt sent by another scope (another key): goal
   warm <= 0.15x cold, another key no faster than cold. Rounds are interleaved in one process, each with a fresh
   prefix, and medians of the ratios are reported, since the machine is shared.
2. A 10-turn agent loop over a ~1,500-token tool list (each turn appends the model's answer and a tool result):
   prompt tokens prefilled and total time with the cache vs without, the greedy answers compared.
3. KV bytes the cache holds afterwards.

Usage: .venv/bin/python bench/prefix_cache/run.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from appliance.demo.model import ensure_demo_bundle
from appliance.engine import Engine, GenerationRequest, collect, render_prompt
from appliance.signing.keys import generate_private_key, load_private_key

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results" / "prefix_cache.txt"
DEMO_KEY = REPO / "var" / "cache" / "demo-test-signing.key"  # the tests' key: their cached bundle is reused


async def first_token_s(engine: Engine, prompt: list[int], scope: str | None) -> tuple[float, int]:
    start = time.perf_counter()
    finish = (
        await collect(
            engine.generate(GenerationRequest(prompt_tokens=prompt, max_tokens=1, temperature=0, cache_scope=scope))
        )
    )["finish"]
    return time.perf_counter() - start, finish.usage.cached_tokens


async def ttft(engine: Engine, rounds: int) -> list[str]:
    rng = np.random.default_rng(0)
    rows: dict[str, list[float]] = {"uncached": [], "cold": [], "warm": [], "other key": []}
    hits = []
    for _ in range(rounds + 1):  # the first round warms the process up and is dropped
        prefix = rng.integers(0, 199_998, size=2048).tolist()
        a, b, c = (rng.integers(0, 199_998, size=32).tolist() for _ in range(3))
        times = {
            "uncached": await first_token_s(engine, prefix + c, None),
            "cold": await first_token_s(engine, prefix + a, "key-a"),
            "warm": await first_token_s(engine, prefix + b, "key-a"),
            "other key": await first_token_s(engine, prefix + b, "key-b"),
        }
        for name, (seconds, _) in times.items():
            rows[name].append(seconds)
        hits.append((times["warm"][1], times["other key"][1]))
    for series in rows.values():
        del series[0]
    cold = rows["cold"]
    lines = [f"1. first token after a shared 2,048-token prefix (+32 own tokens), {rounds} interleaved rounds:"]
    for name, series in rows.items():
        ratio = statistics.median(s / c for s, c in zip(series, cold))
        lines.append(f"   {name:10} median {statistics.median(series) * 1000:8.1f} ms   {ratio:.3f}x cold")
    lines.append(f"   cached tokens (warm, other key): {sorted(set(hits[1:]))}")
    return lines


def tool_list() -> list[dict]:
    """~20 functions with long descriptions: about 1,500 prompt tokens of tool definitions."""
    words = "inventory ledger shipment invoice customer region warehouse quarter forecast audit".split()
    tools = []
    for i in range(20):
        text = " ".join(words[(i + j) % len(words)] for j in range(40))
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": f"tool_{i}",
                    "description": f"Look up {text}.",
                    "parameters": {
                        "type": "object",
                        "properties": {"query": {"type": "string", "description": f"what to find in {words[i % 10]}"}},
                        "required": ["query"],
                    },
                },
            }
        )
    return tools


async def agent_loop(engine: Engine, scope: str | None, turns: int = 10) -> tuple[float, int, int, list[str]]:
    """(seconds, prompt tokens in all, prompt tokens prefilled, answers) of one conversation."""
    tools = tool_list()
    messages: list[dict] = [
        {"role": "system", "content": "You are the warehouse agent. Use the tools."},
        {"role": "user", "content": "Reconcile this quarter's inventory with the ledger."},
    ]
    total = computed = 0
    answers: list[str] = []
    start = time.perf_counter()
    for turn in range(turns):
        prompt = render_prompt(engine.encoding, messages, tools, "low")
        out = await collect(
            engine.generate(GenerationRequest(prompt_tokens=prompt, max_tokens=32, temperature=0, cache_scope=scope))
        )
        usage = out["finish"].usage
        total += usage.prompt_tokens
        computed += usage.prompt_tokens - usage.cached_tokens
        answer = str(out["final"]) or str(out["analysis"]) or "(no text)"
        answers.append(answer)
        messages.append({"role": "assistant", "content": answer})
        messages.append(
            {"role": "user", "content": f"Tool result {turn}: {json.dumps({'rows': turn * 7, 'ok': True})}"}
        )
    return time.perf_counter() - start, total, computed, answers


async def agent(engine: Engine) -> list[str]:
    tools_tokens = len(render_prompt(engine.encoding, [{"role": "user", "content": "x"}], tool_list(), "low"))
    runs = {"cache": [], "no cache": []}
    answers = {}
    for rep in range(2):  # interleaved: cached, uncached, cached, uncached (a fresh scope each time)
        for name, scope in (("cache", f"agent-{rep}"), ("no cache", None)):
            seconds, total, computed, said = await agent_loop(engine, scope)
            runs[name].append((seconds, total, computed))
            answers[name] = said
    lines = [f"2. 10-turn agent loop, tool list + first turn = {tools_tokens} prompt tokens, 32 tokens per answer:"]
    for name, series in runs.items():
        seconds = statistics.median(s for s, _, _ in series)
        lines.append(
            f"   {name:9} prompt tokens {series[0][1]:6}  prefilled {series[0][2]:6}  total {seconds:6.2f} s (median of 2)"
        )
    ratio = statistics.median(c[0] / u[0] for c, u in zip(runs["cache"], runs["no cache"]))
    lines.append(
        f"   time with cache / without: {ratio:.3f}x; greedy answers identical: {answers['cache'] == answers['no cache']}"
    )
    return lines


async def main_async(rounds: int) -> list[str]:
    key = load_private_key(DEMO_KEY) if DEMO_KEY.exists() else generate_private_key()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = ensure_demo_bundle(DEMO_KEY.parent / "demo" if DEMO_KEY.exists() else Path(tmp), key)
        engine = Engine.from_bundle(bundle, max_tokens_in_flight=8192, kv_budget_bytes=4 * 2**30)
        try:
            lines = await ttft(engine, rounds)
            lines += await agent(engine)
            stats = engine.stats()
            lines.append(
                f"3. KV bytes the cache holds at the end: {stats['kv_bytes_cached'] / 2**20:.1f} MiB "
                f"(limit {stats['prefix_cache_limit_bytes'] / 2**20:.0f} MiB = 1/4 of a 4 GiB budget); "
                f"{stats['prefix_cache_hits']} hits, {stats['prefix_cache_tokens']} tokens served"
            )
        finally:
            engine.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()
    lines = [
        "prefix cache bench: demo model (trained, cpu-fp32), engine in process, prefill_chunk 512, blocks of 16",
        f"machine: {os.cpu_count()} cores shared with other agents; load average at start "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}",
        *asyncio.run(main_async(args.rounds)),
    ]
    end = os.getloadavg()
    lines.append(f"load average at end {end[0]:.1f} / {end[1]:.1f} / {end[2]:.1f}")
    print("\n".join(lines))
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
