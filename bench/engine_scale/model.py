"""The bench model: gpt-oss-20b's shapes with few layers and random weights, in the published MXFP4 layout.

Written layer by layer into one safetensors shard per layer (plus one for embedding, norm and head) with a
`model.safetensors.index.json`, as OpenAI ships the real checkpoint. At these shapes the fp32 experts are
~3.2 GB per layer and the 201,088 x 2,880 embedding and head ~2.3 GB each, so nothing is ever held in fp32 for
more than one layer (or the embedding and head) at a time.
The model is converted through `appliance bundle build`'s own code path (`build_bundle`) and cached under
var/cache/bench-model/<key>, keyed by the recipe (config, profile, export options), like the demo model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import save_file

from appliance.bundles import build
from appliance.bundles.build import build_bundle
from appliance.demo.checkpoint import gpt_oss_config, published_tensors, random_state_dict, write_checkpoint

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "var" / "cache" / "bench-model"
STD = 0.02
FORMAT = 1  # bump when the weights this file draws change


def bench_config(layers: int) -> dict:
    """gpt-oss-20b's config.json (hidden 2880, 64/8 heads of 64, 32 experts top-4, window 128, YaRN) at `layers`."""
    # dtype bfloat16 as in the published config.json (the builder's peak stayed ~15 GB at 2 layers either way).
    return {**gpt_oss_config("gpu-check", num_hidden_layers=layers), "dtype": "bfloat16"}


def _tensors(config: dict, layer: int | None, seed: int) -> dict[str, torch.Tensor]:
    """The published tensors of one layer (or, for None, embedding, final norm and head) alone in memory."""
    part = {
        **config,
        "num_hidden_layers": 0 if layer is None else 1,
        "vocab_size": config["vocab_size"] if layer is None else 1,
    }
    state = random_state_dict(part, seed=seed, std=STD)
    if layer is not None:
        state = {
            k.replace("model.layers.0.", f"model.layers.{layer}."): v
            for k, v in state.items()
            if k.startswith("model.layers.0.")
        }
    return published_tensors(state)


def _write_shard(out: Path, config: dict, layer: int | None, seed: int) -> tuple[str, list[str]]:
    torch.set_num_threads(2)  # one worker per 2 cores
    name = "model-shared.safetensors" if layer is None else f"model-layer{layer:02d}.safetensors"
    tensors = _tensors(config, layer, seed * 1000 + (0 if layer is None else layer + 1))
    save_file(tensors, str(out / name), metadata={"format": "pt"})
    return name, list(tensors)


def _workers() -> int:
    """Shards written in parallel: one per 2 cores and per ~10 GB of free memory (a layer's fp32 experts and
    their quantisation), so the 16-core GPU machine writes 24 layers in a fraction of the serial time."""
    from appliance.engine.memory import free_memory

    return max(1, min(8, (os.cpu_count() or 1) // 2, free_memory("cpu") // (10 * 2**30)))


def write_bench_checkpoint(out: Path, layers: int, seed: int = 0) -> Path:
    """The checkpoint folder: config, generation config, tokenizer, sharded safetensors with an index."""
    config = bench_config(layers)
    out.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    with ProcessPoolExecutor(_workers(), mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_write_shard, out, config, layer, seed) for layer in [None, *range(layers)]]
        for job in jobs:
            name, keys = job.result()
            weight_map.update(dict.fromkeys(keys, name))
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    write_checkpoint(out, config, state_dict={})  # config, generation config and tokenizer files, no tensors
    (out / "model.safetensors").unlink()
    return out


def cache_key(layers: int, profile: str) -> str:
    """What the bundle is made of: the weights' recipe, the config, the profile and the export options."""
    recipe = [FORMAT, bench_config(layers), profile, repr(build.PROFILES[profile]), build.EXPORT_OPTIONS]
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:32]


def ensure_bench_bundle(layers: int = 2, profile: str = "cpu-int4", cache: Path = CACHE) -> tuple[Path, Path]:
    """(checkpoint, unsigned bundle) for this depth and profile, built on first use under an exclusive lock."""
    entry = cache / cache_key(layers, profile)
    entry.mkdir(parents=True, exist_ok=True)
    with open(entry / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        checkpoint, bundle = entry / "checkpoint", entry / "bundle"
        if not checkpoint.is_dir():
            work = entry / f".checkpoint-{uuid.uuid4().hex[:8]}"
            try:
                write_bench_checkpoint(work, layers).rename(checkpoint)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        if not bundle.is_dir():
            build_bundle(checkpoint, bundle, profile=profile, name="bench", version="0.1.0", key=None)
        return checkpoint, bundle


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="build (or find) the real-shape bench bundle")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--profile", default="cpu-int4")
    args = parser.parse_args()
    print(*ensure_bench_bundle(args.layers, args.profile))
