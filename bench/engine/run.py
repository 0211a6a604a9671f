"""Engine benchmark on the demo-size model, every peer in the same run.

8 requests with mixed prompt lengths arrive staggered; each generates the same number of tokens. Reported:
aggregate decode tokens/s (completion tokens / wall time from the first arrival to the last token) for
  - ours: the continuous-batching Engine, requests joining as they arrive,
  - ours one at a time (single stream),
  - onnxruntime-genai og.Generator in static batches (a batch starts once all its requests arrived),
  - transformers `generate` (eager, fp32, left-padded batch of all requests),
and TTFT p50 of ours. Usage: .venv/bin/python bench/engine/run.py [--tokens 64] [--stagger 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from appliance.bundles.build import build_bundle
from appliance.demo.checkpoint import gpt_oss_config, write_checkpoint
from appliance.engine import Engine, GenerationRequest, TextEvent

PROMPT_LENGTHS = (16, 200, 48, 120, 32, 256, 80, 24)
RESULTS = Path(__file__).resolve().parents[1] / "results" / "engine.txt"


def prompts(vocab_open: list[int]) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 199_998, size=n).tolist() + vocab_open for n in PROMPT_LENGTHS]


async def ours(engine: Engine, batch: list[list[int]], tokens: int, stagger: float) -> tuple[float, list[float]]:
    ttft: list[float] = []

    async def one(i: int, prompt: list[int]) -> int:
        await asyncio.sleep(i * stagger)
        start = time.perf_counter()
        first = True
        async for event in engine.generate(GenerationRequest(prompt_tokens=prompt, max_tokens=tokens, temperature=0)):
            if first and isinstance(event, TextEvent):
                ttft.append(time.perf_counter() - start)
                first = False
            if not isinstance(event, TextEvent) and hasattr(event, "usage"):
                return event.usage.completion_tokens
        return 0

    start = time.perf_counter()
    done = await asyncio.gather(*[one(i, p) for i, p in enumerate(batch)])
    return sum(done) / (time.perf_counter() - start), ttft


async def ours_sequential(engine: Engine, batch: list[list[int]], tokens: int) -> float:
    start, total = time.perf_counter(), 0
    for prompt in batch:
        async for event in engine.generate(GenerationRequest(prompt_tokens=prompt, max_tokens=tokens, temperature=0)):
            if hasattr(event, "usage"):
                total += event.usage.completion_tokens
    return total / (time.perf_counter() - start)


def og_static(bundle: Path, batch: list[list[int]], tokens: int, stagger: float) -> float:
    import onnxruntime_genai as og

    model = og.Model(str(bundle))
    start = time.perf_counter()
    time.sleep(stagger * (len(batch) - 1))  # a static batch waits for its last member
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max(map(len, batch)) + tokens, batch_size=len(batch), do_sample=False)
    generator = og.Generator(model, params)
    width = max(map(len, batch))
    padded = np.array([[199_999] * (width - len(p)) + p for p in batch], dtype=np.int32)
    generator.append_tokens(padded)
    steps = 1
    while steps < tokens and not generator.is_done():
        generator.generate_next_token()
        steps += 1
    return steps * len(batch) / (time.perf_counter() - start)


def transformers_generate(checkpoint: Path, batch: list[list[int]], tokens: int, stagger: float) -> float:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    width = max(map(len, batch))
    ids = torch.tensor([[199_999] * (width - len(p)) + p for p in batch])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    start = time.perf_counter()
    time.sleep(stagger * (len(batch) - 1))
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=199_999,
        )
    return (out.shape[1] - width) * len(batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--stagger", type=float, default=0.05)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_checkpoint(Path(tmp) / "demo", gpt_oss_config("demo"))
        bundle = build_bundle(
            checkpoint, Path(tmp) / "bundle", profile="cpu-fp32", name="demo", version="0.1.0", key=None
        )
        engine = Engine.from_bundle(bundle, max_batch_size=8)
        batch = prompts(engine.encoding.encode("<|start|>assistant<|channel|>final<|message|>", allowed_special="all"))
        asyncio.run(ours(engine, batch[:2], 4, 0))  # warm-up
        concurrent, ttft = asyncio.run(ours(engine, batch, args.tokens, args.stagger))
        single = asyncio.run(ours_sequential(engine, batch, args.tokens))
        engine.close()
        og_rate = og_static(bundle, batch, args.tokens, args.stagger)
        hf_rate = transformers_generate(checkpoint, batch, args.tokens, args.stagger)
    lines = [
        f"engine bench: demo model ({gpt_oss_config('demo')['hidden_size']} hidden, vocab 201088), 8 requests, "
        f"prompts {PROMPT_LENGTHS}, {args.tokens} new tokens each, arrivals every {args.stagger * 1000:.0f} ms",
        f"ours (continuous batching)  {concurrent:8.1f} tok/s   TTFT p50 {statistics.median(ttft) * 1000:.1f} ms",
        f"ours one at a time          {single:8.1f} tok/s   ratio {concurrent / single:.2f}x (goal >= 2.5x)",
        f"og.Generator static batch   {og_rate:8.1f} tok/s   ratio {concurrent / og_rate:.2f}x (goal >= 1.0x)",
        f"transformers generate       {hf_rate:8.1f} tok/s   ratio {concurrent / hf_rate:.2f}x (goal >= 3x)",
    ]
    print("\n".join(lines))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
