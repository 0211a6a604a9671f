"""GPU check (run through bench/gpu_check.sh): CUDA EP parity against CPU and decode tokens/s beside transformers.

A gpt-oss-shaped model with random weights (gpt-oss-20b layer shapes, 2 layers, real vocabulary) is written in
the published layout, converted to a cuda-bf16 and a cpu-fp32 bundle, then:
  parity: greedy decode of 3 prompts on CUDA (bf16) vs CPU (fp32): top-1 agreement and max |logit diff|;
  speed:  aggregate decode tokens/s of our Engine on CUDA at batch 1, 8 and 32, and of transformers
          `generate` on the same GPU in bf16 (skipped when torch has no CUDA).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from appliance.bundles.build import build_bundle
from appliance.demo.checkpoint import gpt_oss_config, write_checkpoint
from appliance.engine import Engine, GenerationRequest
from appliance.engine.session import ModelRunner

LAYERS, NEW_TOKENS, PROMPT = 2, 64, 128


def log(line: str, out: list[str]) -> None:
    print(line, flush=True)
    out.append(line)


def runner(bundle: Path, providers: list[str]) -> ModelRunner:
    decoder = json.loads((bundle / "genai_config.json").read_text())["model"]["decoder"]
    return ModelRunner(bundle / "model.onnx", decoder["num_key_value_heads"], decoder["head_size"], providers)


def parity(gpu: ModelRunner, cpu: ModelRunner, prompts: list[list[int]], steps: int) -> tuple[float, float]:
    """Teacher-forced on the CPU's greedy tokens so both see the same inputs."""
    kv = [r.prefill(prompts) for r in (gpu, cpu)]
    cached = [len(p) - 1 for p in prompts]
    tokens = [p[-1] for p in prompts]
    agree, total, worst = 0, 0, 0.0
    for _ in range(steps):
        (lg, kv[0]), (lc, kv[1]) = gpu.step(tokens, cached, kv[0]), cpu.step(tokens, cached, kv[1])
        agree += int((lg.argmax(1) == lc.argmax(1)).sum())
        total += len(prompts)
        worst = max(worst, float(np.abs(lg - lc).max() / (np.abs(lc).max() + 1e-9)))
        tokens, cached = lc.argmax(1).tolist(), [c + 1 for c in cached]
    return agree / total, worst


async def engine_rate(engine: Engine, batch: int) -> float:
    rng = np.random.default_rng(batch)
    requests = [GenerationRequest(prompt_tokens=rng.integers(0, 199_998, PROMPT).tolist(), max_tokens=NEW_TOKENS,
                                  temperature=0) for _ in range(batch)]

    async def one(r: GenerationRequest) -> int:
        async for event in engine.generate(r):
            if hasattr(event, "usage"):
                return event.usage.completion_tokens
        return 0

    start = time.perf_counter()
    done = await asyncio.gather(*[one(r) for r in requests])
    return sum(done) / (time.perf_counter() - start)


def transformers_rate(checkpoint: Path, batches: list[int]) -> dict[int, float] | str:
    import torch

    if not torch.cuda.is_available():
        return "skipped (this torch has no CUDA)"
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.bfloat16).cuda().eval()
    rates = {}
    for batch in batches:
        ids = torch.randint(0, 199_998, (batch, PROMPT), device="cuda")
        with torch.no_grad():
            model.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=199_999)
            torch.cuda.synchronize()
            start = time.perf_counter()
            model.generate(input_ids=ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                           pad_token_id=199_999)
            torch.cuda.synchronize()
        rates[batch] = batch * NEW_TOKENS / (time.perf_counter() - start)
    return rates


def main(result_file: Path) -> None:
    out: list[str] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=result_file.parent) as tmp:
        checkpoint = write_checkpoint(Path(tmp) / "hf", gpt_oss_config("gpu-check", num_hidden_layers=LAYERS),
                                      seed=0)
        log(f"checkpoint (20b layer shapes, {LAYERS} layers) written in {time.perf_counter() - t0:.0f} s", out)
        bundles = {}
        for profile in ("cuda-bf16", "cpu-fp32"):
            t = time.perf_counter()
            bundles[profile] = build_bundle(checkpoint, Path(tmp) / profile, profile=profile, name="gpu-check",
                                            version="0.1.0", key=None)
            log(f"{profile} bundle built in {time.perf_counter() - t:.0f} s", out)
        rng = np.random.default_rng(0)
        prompts = [rng.integers(0, 199_998, n).tolist() for n in (17, 64, 150)]
        gpu = runner(bundles["cuda-bf16"], ["CUDAExecutionProvider", "CPUExecutionProvider"])
        if gpu.device != "cuda":
            raise SystemExit("error: the CUDA execution provider did not load (install onnxruntime-gpu + CUDA 12)")
        agreement, worst = parity(gpu, runner(bundles["cpu-fp32"], ["CPUExecutionProvider"]), prompts, 24)
        log(f"parity cuda-bf16 vs cpu-fp32: top-1 agreement {agreement:.1%}, max |diff| / max |logit| {worst:.4f} "
            f"(bf16 tolerance: agreement >= 90%, relative diff <= 0.05) -> "
            f"{'PASS' if agreement >= 0.9 and worst <= 0.05 else 'FAIL'}", out)
        del gpu
        engine = Engine.from_bundle(bundles["cuda-bf16"], max_batch_size=32)
        asyncio.run(engine_rate(engine, 2))
        ours = {b: asyncio.run(engine_rate(engine, b)) for b in (1, 8, 32)}
        engine.close()
        theirs = transformers_rate(checkpoint, [1, 8, 32])
        for b, rate in ours.items():
            peer = f"transformers {theirs[b]:8.1f} tok/s  ratio {rate / theirs[b]:.2f}x" if isinstance(theirs, dict) \
                else f"transformers {theirs}"
            log(f"decode batch {b:2d}: ours {rate:8.1f} tok/s   {peer}", out)
    log(f"total {time.perf_counter() - t0:.0f} s", out)
    result_file.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
