"""Prefix cache benchmark on the trained demo model, through the engine (issue 25, part 6).

1. Time to first token (a 1-token generation) of a request sharing a 2,048-token prefix with an earlier one of
   the same scope (warm), against the first request of that prefix (cold, which also stores its blocks), the
   same prompt without the cache (uncached), and the second prompt sent by another scope (another key): goal
   warm <= 0.15x cold, another key no faster than cold. Rounds are interleaved in one process, each with a fresh
   prefix, and medians of the ratios are reported, since the machine is shared.
2. A 10-turn agent loop over a ~1,500-token tool list (each turn appends the model's answer and a tool result):
   prompt tokens prefilled and total time with the cache vs without, the greedy answers compared.
3. KV bytes the cache holds afterwards.
4. Through the API (in process, the openai SDK over ASGI, full gateway path: auth, policy, audit): latency of
   a 1-token chat answer whose ~2,000-token system prompt an earlier request of the same key sent (warm), the
   first such request (cold) and the same request from another key.

With `--model bench`, part 1 only, on the 20b-shape bench model (bench/engine_scale: 2 layers, random
weights, cpu-int4), appended to the results as its own section: there prefill, not per-call overhead, is what
a warm request skips.

Usage: .venv/bin/python bench/prefix_cache/run.py [--rounds 5] [--model demo|bench]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import openai
from sqlalchemy.orm import Session

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from appliance import apikeys  # noqa: E402
from appliance.db import make_engine  # noqa: E402
from appliance.demo.model import ensure_demo_bundle  # noqa: E402
from appliance.engine import Engine, GenerationRequest, collect, render_prompt  # noqa: E402
from appliance.signing.keys import load_private_key  # noqa: E402
from tests.appliance import make_appliance  # noqa: E402  (the tests' in-process appliance)
from tests.conftest import DEMO_CACHE, DEMO_KEY  # noqa: E402  (the demo bundle the tests use)

RESULTS = REPO / "bench" / "results" / "prefix_cache.txt"
NOTES = [
    "notes: a warm first token still costs two model calls (the prompt's last uncached tokens, then the decode",
    "step that samples from the last prompt token), each with ORT's per-call cost, which dominates on this loaded",
    "machine; a cold first token of the same prefix costs the prefill of all of it. Storing a prompt's blocks adds",
    "copies and at most one more prefill call (chunks end on block boundaries), within the noise of the cold runs.",
    "Not measured: CUDA, where the prefix cache is off (blocks are copied on CPU buffers only). The 20b-shape",
    "bench model: `--model bench` appends its own section below.",
]


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
    cold, uncached = rows["cold"], rows["uncached"]
    lines = [
        f"1. first token after a shared 2,048-token prefix (+32 own tokens), {rounds} interleaved rounds "
        "(cold: first of its prefix, storing it; uncached: no scope, nothing stored):"
    ]
    for name, series in rows.items():
        ratio = statistics.median(s / c for s, c in zip(series, cold))
        plain = statistics.median(s / c for s, c in zip(series, uncached))
        median = statistics.median(series) * 1000
        lines.append(f"   {name:10} median {median:8.1f} ms   {ratio:.3f}x cold   {plain:.3f}x uncached")
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


async def through_api(bundle: Path, rounds: int) -> list[str]:
    words = "the appliance keeps an audit log of every request and answer signed in a hash chain".split()
    with tempfile.TemporaryDirectory() as tmp:
        appliance = make_appliance(
            Path(tmp) / "var", bundle, load_private_key(DEMO_KEY).public_key(), engine_max_tokens_in_flight=8192
        )
        try:
            with Session(make_engine(appliance.settings.database_url)) as session:
                other, _ = apikeys.create_key(session, "bench-other", "user")

            def sdk(token: str) -> openai.AsyncOpenAI:
                http = httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=appliance.app), base_url="http://a/v1", timeout=300
                )
                return openai.AsyncOpenAI(api_key=token, base_url="http://a/v1", http_client=http, max_retries=0)

            mine, theirs = sdk(appliance.tokens["user"]), sdk(other)

            async def answer(client: openai.AsyncOpenAI, system: str, question: str) -> tuple[float, int]:
                start = time.perf_counter()
                done = await client.chat.completions.create(
                    model="gpt-oss-demo",
                    messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
                    max_tokens=1,
                    reasoning_effort="low",
                )
                return time.perf_counter() - start, done.usage.prompt_tokens_details.cached_tokens

            rows: dict[str, list[float]] = {"cold": [], "warm": [], "other key": []}
            cached, prompt = set(), 0
            rng = np.random.default_rng(1)
            for _ in range(rounds + 1):
                system = " ".join(rng.choice(words, size=1900).tolist())
                times = {
                    "cold": await answer(mine, system, "What is kept?"),
                    "warm": await answer(mine, system, "Who signs it?"),
                    "other key": await answer(theirs, system, "Who signs it?"),
                }
                for name, (seconds, _) in times.items():
                    rows[name].append(seconds)
                cached.add((times["warm"][1], times["other key"][1]))
            last = await mine.chat.completions.create(
                model="gpt-oss-demo", messages=[{"role": "system", "content": system}], max_tokens=1
            )
            prompt = last.usage.prompt_tokens
        finally:
            appliance.services.backend.close()
            appliance.services.close()
    lines = [
        f"4. through the API (openai SDK in process, full gateway path), ~{prompt}-token system prompt, {rounds} rounds:"
    ]
    for name, series in rows.items():
        del series[0]
        ratio = statistics.median(s / c for s, c in zip(series, rows["cold"]))
        lines.append(
            f"   {name:10} median {statistics.median(series) * 1000:8.1f} ms   {ratio:.3f}x cold (1-token answer)"
        )
    lines.append(f"   cached_tokens (warm, other key): {sorted(cached)}")
    return lines


async def main_async(rounds: int, api: bool) -> list[str]:
    bundle = ensure_demo_bundle(DEMO_CACHE, load_private_key(DEMO_KEY))
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
    if api:
        lines += await through_api(bundle, rounds)
    return lines


async def bench_model(rounds: int) -> list[str]:
    """Part 1 on the 20b-shape bench model."""
    from bench.engine_scale.model import ensure_bench_bundle

    _, bundle = ensure_bench_bundle(2, "cpu-int4")
    engine = Engine.from_bundle(bundle, max_tokens_in_flight=8192, kv_budget_bytes=4 * 2**30)
    try:
        return await ttft(engine, rounds)
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-api", action="store_true", help="skip part 4 (through the API)")
    parser.add_argument("--model", choices=("demo", "bench"), default="demo")
    args = parser.parse_args()
    if args.model == "bench":
        load = os.getloadavg()
        lines = [
            "",
            "20b-shape bench model (hidden 2880, 64/8 heads, 32 experts top-4, window 128, 2 layers, random "
            f"weights, cpu-int4), engine in process; load average at start {load[0]:.1f}",
            *asyncio.run(bench_model(args.rounds)),
            f"load average at end {os.getloadavg()[0]:.1f}",
        ]
        print("\n".join(lines))
        with RESULTS.open("a") as out:
            out.write("\n".join(lines) + "\n")
        return
    load = os.getloadavg()
    lines = [
        "prefix cache bench: demo model (trained, cpu-fp32), engine in process, prefill_chunk 512, blocks of 16",
        f"machine: {os.cpu_count()} cores shared with other agents; load average at start "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}",
        *asyncio.run(main_async(args.rounds, not args.no_api)),
    ]
    end = os.getloadavg()
    lines.append(f"load average at end {end[0]:.1f} / {end[1]:.1f} / {end[2]:.1f}")
    lines += NOTES
    print("\n".join(lines))
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
