"""The engine at gpt-oss-20b's shapes (bench model: 2 layers, one sliding and one full, random weights, cpu-int4).

Parts (each a few minutes; `all` runs them one after another, each in its own process so only one model is
in memory at a time; results collect in var/bench/engine_scale/*.json and `report` writes
bench/results/engine_scale.txt):

  bandwidth  this machine's memory bandwidth (numpy copy of 1 GiB: bytes read + written per second)
  ours       decode tokens/s of our step at batch 1/4/8 and contexts 512/4k/16k. The KV slots are filled with
             random values to the context length instead of being prefilled (the step reads exactly what a
             prefill would have left; prefilling 8 x 16k tokens would take ~an hour on 2 cores), then timed.
             Also: greedy tokens alone vs in a batch at this shape (batch invariance) and KV bytes per sequence.
  og         onnxruntime-genai og.Generator, static batch, the same bundle: prefill, then the decode steps timed;
             batch 1 is prefilled in chunks, larger batches in one piece where its attention scores fit
  profile    ONNX Runtime's profiler on a batch-8 step at the smallest and largest context: time per operator
  duel       ours and og in one process, steps alternating, so machine load hits both alike (og contexts)
  hf         transformers eager (bf16): batch 1 at the og contexts (prefilled in chunks), batch 8 at 512
  stall      Engine: 4 sequences decoding while a long prompt joins, chunked vs unchunked prefill
  report     ratios against the goals of issue 18 (and the llama.cpp peer's section, if
             `python -m bench.engine_scale.llamacpp` has run: see llamacpp.py)

Usage: .venv/bin/python -m bench.engine_scale.run [all|PART ...] [--layers 2] [--profile cpu-int4]
       [--contexts 512,4096,16384] [--og-contexts 512,4096,16384] [--device cpu|cuda] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.engine_scale import llamacpp
from bench.engine_scale.model import REPO, bench_config, ensure_bench_bundle

PARTS = ("bandwidth", "ours", "profile", "og", "duel", "hf", "stall")
BATCHES = (1, 4, 8)
STEPS = 8
OG_CHUNK = 1024  # prompt chunk for og and transformers prefills where they allow chunks


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("parts", nargs="*", default=["all"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--profile", default="cpu-int4")
    parser.add_argument("--contexts", default="512,4096,16384")
    parser.add_argument("--og-contexts", default="512,4096,16384")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--stall-prompt", type=int, default=1536)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench" / "engine_scale")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "engine_scale.txt")
    return parser.parse_args(argv)


def _providers(device: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]


def _runner(bundle: Path, device: str, options=None):
    from appliance.engine.session import ModelRunner

    decoder = json.loads((bundle / "genai_config.json").read_text())["model"]["decoder"]
    window = (decoder.get("sliding_window") or {}).get("window_size")
    return ModelRunner(
        bundle / "model.onnx",
        decoder["num_key_value_heads"],
        decoder["head_size"],
        _providers(device),
        window=window,
        options=options,
    )


def bandwidth(args: argparse.Namespace) -> dict:
    if args.device == "cuda":
        return {"bytes_per_s": _device_bandwidth("cuda")}
    src = np.ones(2**28, np.float32)  # 1 GiB
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(5))
    return {"bytes_per_s": 2 * src.nbytes / best}


def _device_bandwidth(device: str) -> float:
    """Bytes read + written per second by a 1 GiB device-to-device copy (ONNX Runtime's own copy kernel)."""
    import onnxruntime as ort
    from onnx import TensorProto

    from appliance.engine.kvcache import copy_graph

    session = ort.InferenceSession(copy_graph(TensorProto.FLOAT), providers=_providers(device))
    src, dst = (ort.OrtValue.ortvalue_from_shape_and_type([2**28], TensorProto.FLOAT, device) for _ in range(2))
    binding = session.io_binding()
    binding.bind_ortvalue_input("src", src)
    binding.bind_ortvalue_output("dst", dst)
    session.run_with_iobinding(binding)
    best = min(_timed(lambda: session.run_with_iobinding(binding)) for _ in range(5))
    return 2 * 2**30 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _weight_bytes(bundle: Path, config: dict) -> dict:
    """Bytes of the exported weights: total, expert (QMoE) part, and what one token reads (active)."""
    import onnx

    model = onnx.load(bundle / "model.onnx", load_external_data=False)
    sizes: dict[str, int] = {}
    for init in model.graph.initializer:
        info = {e.key: e.value for e in init.external_data}
        sizes[init.name] = int(info.get("length", 0)) or len(init.raw_data)
    experts = sum(v for k, v in sizes.items() if "moe" in k.lower() or "experts" in k.lower())
    embedding = max((v for k, v in sizes.items() if "embed" in k.lower()), default=0)
    rest = sum(sizes.values()) - experts - embedding
    active = rest + experts * config["num_experts_per_tok"] / config["num_local_experts"]
    return {"total": sum(sizes.values()), "experts": experts, "embedding": embedding, "active_per_token": active}


def ours(args: argparse.Namespace) -> dict:
    _, bundle = ensure_bench_bundle(args.layers, args.profile)
    runner = _runner(bundle, args.device)
    config = bench_config(args.layers)
    contexts = [int(c) for c in args.contexts.split(",")]
    cache = runner.allocate(max(BATCHES), max(contexts) + STEPS + 2)
    rng = np.random.default_rng(0)
    for array in cache._arrays:  # CPU: write every page (untouched zero pages would be free to read)
        array.fill(0.01 if array.dtype == np.float32 else 0x3C00)
    out: dict = {"rates": {}, "step_s": {}}
    shapes = [(batch, context) for context in contexts for batch in BATCHES]
    inputs = {shape: rng.integers(0, 199_998, size=shape[0]).tolist() for shape in shapes}
    times: dict[tuple[int, int], list[float]] = {shape: [] for shape in shapes}
    for round_ in range(STEPS + 1):  # round-robin over the shapes, so a burst of load on this shared machine
        for batch, context in shapes:  # spoils one round of every shape, not every step of one
            elapsed = _timed(lambda: runner.step(cache, inputs[(batch, context)], [context] * batch))  # noqa: B023
            if round_:  # round 0 is the warm-up: the first steps fault in weights and scratch
                times[(batch, context)].append(elapsed)
    for (batch, context), spent in times.items():
        elapsed = min(spent)
        out["rates"][f"{batch}x{context}"] = batch / elapsed
        out["step_s"][f"{batch}x{context}"] = elapsed
        print(
            f"ours batch {batch} context {context}: {batch / elapsed:.1f} tok/s ({elapsed * 1000:.1f} ms/step)",
            flush=True,
        )
    layout = runner.layout
    out["kv"] = {
        str(c): {
            "ours": layout.bytes_for(c),
            "need": layout.architecture_need(c),
            "full_kv": len(layout.names) * c * layout.bytes_per_position,
        }
        for c in contexts
    }
    out["weights"] = _weight_bytes(bundle, config)
    out["invariance"] = _invariance(runner)
    return out


def profile(args: argparse.Namespace) -> dict:
    """Where a step's time goes, by operator (ONNX Runtime's own profiler on the engine's session): batch 1 and 8
    at the smallest context, batch 8 at the largest. With KV in place only the attention kernel should grow with
    context; what grows with batch shows which kernels are compute-bound on this machine."""
    import onnxruntime as ort

    _, bundle = ensure_bench_bundle(args.layers, args.profile)
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(args.out / "ort_profile")
    runner = _runner(bundle, args.device, options)
    contexts = [int(c) for c in args.contexts.split(",")]
    shapes = [(1, contexts[0]), (8, contexts[0]), (8, contexts[-1])]
    cache = runner.allocate(8, contexts[-1] + 2)
    for array in cache._arrays:
        array.fill(0.01 if array.dtype == np.float32 else 0x3C00)
    rng = np.random.default_rng(0)  # distinct tokens, as in `ours`: identical rows would share their experts
    tokens = {shape: rng.integers(0, 199_998, size=shape[0]).tolist() for shape in shapes}
    order: list[tuple[int, int]] = []  # the shape of each run, in run order
    for round_ in range(STEPS + 1):  # round-robin; round 0 is the warm-up
        for batch, context in shapes:
            runner.step(cache, tokens[(batch, context)], [context] * batch)
            order.append((batch, context) if round_ else (0, 0))
    trace = Path(runner.session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    runs = sorted((e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"), key=lambda e: e["ts"])
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    out: dict = {}
    for batch, context in shapes:
        timed = [run for shape, run in zip(order, runs) if shape == (batch, context)]
        per_run: list[dict[str, float]] = []
        for run in timed:
            ops: dict[str, float] = {}
            for node in nodes:
                if run["ts"] <= node["ts"] < run["ts"] + run["dur"]:
                    op = node["args"].get("op_name", "?")
                    ops[op] = ops.get(op, 0.0) + node["dur"] / 1e6
            per_run.append(ops)
        per_op = {op: float(np.median([ops.get(op, 0.0) for ops in per_run])) for op in per_run[0]}
        key = f"{batch}x{context}"
        out[key] = {"step_s": float(np.median([r["dur"] for r in timed])) / 1e6, "per_op_s": per_op}
        print(
            f"profile {key}: "
            + ", ".join(f"{op} {t * 1000:.1f} ms" for op, t in sorted(per_op.items(), key=lambda kv: -kv[1])[:4]),
            flush=True,
        )
    return out


def _invariance(runner) -> dict:
    """Greedy continuation of 3 ragged prompts, each alone vs all in one batch (slots updated in place)."""
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, 199_998, size=n).tolist() for n in (200, 37, 150)]

    def greedy(rows: list[list[int]], steps: int = 6) -> list[list[int]]:
        cache = runner.allocate(len(rows), 512)
        for slot, prompt in enumerate(rows):
            for start in range(0, len(prompt) - 1, 64):
                runner.prefill(cache, slot, prompt[start : min(start + 64, len(prompt) - 1)], start)
        lengths, nxt, out = [len(p) - 1 for p in rows], [p[-1] for p in rows], [[] for _ in rows]
        for _ in range(steps):
            logits = runner.step(cache, nxt, lengths)
            nxt = [int(row.argmax()) for row in logits]
            lengths = [n + 1 for n in lengths]
            for seq, token in zip(out, nxt):
                seq.append(token)
        return out

    alone = [greedy([p])[0] for p in prompts]
    return {"same": greedy(prompts) == alone, "rows": len(prompts)}


def _og_prefilled(model, batch: int, context: int, extra: int, rng: np.random.Generator, device: str):
    """An og.Generator holding `context - 1` random prompt tokens per row, or the reason it cannot here.

    og refuses a second append_tokens when batch > 1, so such a prompt goes in one piece, and its CPU attention
    then holds batch x heads x context x max_length fp32 scores at once (on CPU; CUDA's kernel holds none);
    batch 1 is appended in chunks."""
    import onnxruntime_genai as og

    from appliance.engine.memory import free_memory

    config = bench_config(1)
    scores = 4 * batch * config["num_attention_heads"] * context * (context + extra)
    if device == "cpu" and batch > 1 and scores > free_memory("cpu") // 2:
        return None, (
            f"og needs its {batch}x{context} prompt in one append_tokens, whose attention scores alone "
            f"are {scores / 2**30:.0f} GiB"
        )
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=context + extra, batch_size=batch, do_sample=False)
    generator = og.Generator(model, params)
    prompt = rng.integers(0, 199_998, size=(batch, context - 1), dtype=np.int32)
    step = OG_CHUNK if batch == 1 else context
    for at in range(0, context - 1, step):
        generator.append_tokens(prompt[:, at : at + step])
    return generator, ""


def og(args: argparse.Namespace) -> dict:
    import onnxruntime_genai as og

    _, bundle = ensure_bench_bundle(args.layers, args.profile)
    model = og.Model(str(bundle))
    rng = np.random.default_rng(0)
    out: dict = {"rates": {}, "prefill_s": {}, "skipped": {}}
    for context in [int(c) for c in args.og_contexts.split(",")]:
        for batch in BATCHES:
            start = time.perf_counter()
            generator, why = _og_prefilled(model, batch, context, STEPS + 2, rng, args.device)
            if generator is None:
                out["skipped"][f"{batch}x{context}"] = why
                print(f"og batch {batch} context {context}: skipped ({why})", flush=True)
                continue
            out["prefill_s"][f"{batch}x{context}"] = time.perf_counter() - start
            generator.generate_next_token()
            elapsed = min(_timed(generator.generate_next_token) for _ in range(STEPS))
            out["rates"][f"{batch}x{context}"] = batch / elapsed
            print(f"og batch {batch} context {context}: {batch / elapsed:.1f} tok/s", flush=True)
            del generator
    return out


def duel(args: argparse.Namespace) -> dict:
    """Ours and og.Generator in one process, their decode steps alternating: on a shared machine the load then
    falls on both alike, which separate runs minutes apart cannot promise. At every og context where og fits."""
    import onnxruntime_genai as og

    _, bundle = ensure_bench_bundle(args.layers, args.profile)
    runner, model = _runner(bundle, args.device), og.Model(str(bundle))
    rng = np.random.default_rng(0)
    out: dict = {"ours": {}, "og": {}}
    for context in [int(c) for c in args.og_contexts.split(",")]:
        for batch in BATCHES:
            generator, _ = _og_prefilled(model, batch, context, 4 * STEPS, rng, args.device)
            if generator is None:
                continue
            generator.generate_next_token()
            cache = runner.allocate(batch, context + 4 * STEPS)
            for array in cache._arrays:
                array.fill(0.01 if array.dtype == np.float32 else 0x3C00)
            tokens, lengths = rng.integers(0, 199_998, size=batch).tolist(), [context] * batch
            runner.step(cache, tokens, lengths)
            ours_t, og_t = [], []
            for _ in range(2 * STEPS):
                ours_t.append(_timed(lambda: runner.step(cache, tokens, lengths)))  # noqa: B023 - used at once
                og_t.append(_timed(generator.generate_next_token))
            key = f"{batch}x{context}"
            out["ours"][key], out["og"][key] = batch / min(ours_t), batch / min(og_t)
            print(f"duel {key}: ours {batch / min(ours_t):.1f} tok/s, og {batch / min(og_t):.1f} tok/s", flush=True)
            del generator
    return out


def hf(args: argparse.Namespace) -> dict:
    import torch
    import transformers

    from appliance.engine.memory import free_memory

    checkpoint, _ = ensure_bench_bundle(args.layers, args.profile)
    device = "cuda" if args.device == "cuda" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("transformers: this torch has no CUDA; skipped")
    need = 4 * sum(f.stat().st_size for f in checkpoint.glob("*.safetensors"))  # MXFP4 experts become bf16
    if device == "cpu" and need > free_memory("cpu"):
        raise SystemExit(f"transformers: needs ~{need / 2**30:.0f} GiB, more than is free here; skipped")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        checkpoint, dtype=torch.bfloat16, device_map=device
    ).eval()
    rng = np.random.default_rng(0)
    out: dict = {"rates": {}, "prefill_s": {}}
    points = [(1, int(c)) for c in args.og_contexts.split(",")] + [(8, 512)]
    with torch.no_grad():
        for batch, context in points:
            ids = torch.tensor(rng.integers(0, 199_998, size=(batch, context)), device=device)
            start, past = time.perf_counter(), None
            for at in range(0, context, OG_CHUNK):  # chunks: eager attention holds heads x chunk x context scores
                past = model(ids[:, at : at + OG_CHUNK], past_key_values=past, use_cache=True).past_key_values
            out["prefill_s"][f"{batch}x{context}"] = time.perf_counter() - start
            token = ids[:, -1:]
            times = []
            for _ in range(4):
                start = time.perf_counter()
                past = model(token, past_key_values=past, use_cache=True).past_key_values
                times.append(time.perf_counter() - start)
            out["rates"][f"{batch}x{context}"] = batch / min(times)
            print(f"transformers batch {batch} context {context}: {batch / min(times):.1f} tok/s", flush=True)
    return out


def stall(args: argparse.Namespace) -> dict:
    """Largest gap between decode steps of 4 running sequences while a long prompt joins, by prefill chunk."""
    from appliance.engine import Engine

    _, bundle = ensure_bench_bundle(args.layers, args.profile)
    rng = np.random.default_rng(2)
    out: dict = {}
    for chunk in (args.chunk, args.stall_prompt):
        engine = Engine.from_bundle(
            bundle,
            max_batch_size=8,
            prefill_chunk=chunk,
            providers=_providers(args.device),
            max_tokens_in_flight=args.stall_prompt + 64,
        )
        gaps: list[float] = []
        before: list[float] = []
        long_prompt = rng.integers(0, 199_998, size=args.stall_prompt).tolist()
        joined = asyncio.run(_join_scenario(engine, long_prompt, gaps, before, rng))
        used = engine.stats()["prefill_chunk"]
        engine.close()
        steady = float(np.median(before))
        out[str(chunk)] = {
            "max_gap_s": max(gaps, default=0.0),
            "median_gap_s": float(np.median(gaps)),
            "steady_s": steady,
            "join_s": joined,
            "chunks": -(-(args.stall_prompt - 1) // used),
            "chunk_used": used,
        }
        print(
            f"stall chunk {chunk}: max gap {max(gaps, default=0) * 1000:.0f} ms, steady {steady * 1000:.0f} ms, "
            f"join {joined:.1f} s",
            flush=True,
        )
    return out


async def _join_scenario(
    engine, long_prompt: list[int], gaps: list[float], steady: list[float], rng: np.random.Generator
) -> float:
    """4 rows decode; once steady, `long_prompt` joins. Records the time between decode steps meanwhile (each
    step gives each decoding row its next token; the harmony stream of random tokens shows no text to time)."""
    from appliance.engine import GenerationRequest

    async def decode(prompt: list[int]) -> None:
        request = GenerationRequest(
            prompt_tokens=prompt, max_tokens=engine.max_tokens_in_flight - len(prompt), temperature=0
        )
        async for _ in engine.generate(request):
            pass

    async def watch() -> None:
        steps, last = engine.stats()["steps"], time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now_steps = engine.stats()["steps"]
            if now_steps != steps:
                now = time.perf_counter()
                gaps.append(now - last)
                steps, last = now_steps, now

    runners = [asyncio.create_task(decode(rng.integers(0, 199_998, size=16).tolist())) for _ in range(4)]
    while engine.stats()["steps"] < 4:
        if any(task.done() for task in runners):
            await asyncio.gather(*runners)  # raises what failed
        await asyncio.sleep(0.01)
    watcher = asyncio.create_task(watch())
    while len(gaps) < 4:
        await asyncio.sleep(0.01)
    steady.extend(gaps)
    gaps.clear()
    start = time.perf_counter()
    async for _ in engine.generate(GenerationRequest(prompt_tokens=long_prompt, max_tokens=1)):
        pass
    joined = time.perf_counter() - start
    for task in [watcher, *runners]:
        task.cancel()
    await asyncio.gather(watcher, *runners, return_exceptions=True)
    return joined


def report(args: argparse.Namespace) -> list[str]:
    got = {p: json.loads((args.out / f"{p}.json").read_text()) for p in PARTS if (args.out / f"{p}.json").is_file()}
    config = bench_config(args.layers)
    lines = [
        f"engine_scale: gpt-oss-20b shapes (hidden {config['hidden_size']}, {config['num_attention_heads']}/"
        f"{config['num_key_value_heads']} heads of {config['head_dim']}, {config['num_local_experts']} experts "
        f"top-{config['num_experts_per_tok']}, window {config['sliding_window']}, vocab {config['vocab_size']}), "
        f"{args.layers} layers, random weights, {args.profile}, device {args.device}, {os.cpu_count()} cores"
    ]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    ours_d = got.get("ours", {})
    rates = ours_d.get("rates", {})
    contexts = sorted({int(k.split("x")[1]) for k in rates})
    for context in contexts:
        row = "  ".join(f"b{b} {rates[f'{b}x{context}']:7.1f}" for b in BATCHES if f"{b}x{context}" in rates)
        lines.append(f"ours decode tok/s, context {context:>6}: {row}")
    if rates and contexts:
        lo, hi = contexts[0], contexts[-1]
        ratio = ours_d["step_s"][f"8x{hi}"] / ours_d["step_s"][f"8x{lo}"]
        lines.append(f"step time batch 8, context {hi} vs {lo}: {ratio:.2f}x (goal <= 1.3x: {verdict(ratio <= 1.3)})")
        scale = rates[f"8x{lo}"] / rates[f"1x{lo}"]
        lines.append(
            f"aggregate batch 8 vs batch 1 (context {lo}): {scale:.2f}x (goal >= 2.5x: {verdict(scale >= 2.5)})"
        )
    for context, kv in ours_d.get("kv", {}).items():
        ratio = kv["ours"] / kv["need"]
        lines.append(
            f"KV bytes per sequence at {context}: ours {kv['ours'] / 2**20:.1f} MiB, architecture needs "
            f"{kv['need'] / 2**20:.1f} MiB ({ratio:.3f}x, goal <= 1.1x: {verdict(ratio <= 1.1)}); full KV on "
            f"every layer (before) {kv['full_kv'] / 2**20:.1f} MiB"
        )
    if "invariance" in ours_d:
        inv = ours_d["invariance"]
        lines.append(
            f"batch invariance at this shape ({inv['rows']} ragged rows, greedy, in-place slots): "
            f"{'identical' if inv['same'] else 'DIFFERENT'}"
        )
    prof = got.get("profile", {})
    if len(prof) == 3:
        (one, one_p), (lo_k, lo_p), (hi_k, hi_p) = sorted(
            prof.items(), key=lambda kv: (int(kv[0].split("x")[1]), int(kv[0].split("x")[0]))
        )

        def ms(p: dict, op: str) -> float:
            return p["per_op_s"].get(op, 0.0) * 1000

        attn, gemm = "GroupQueryAttention", "MatMulNBits"
        rest_lo, rest_hi = lo_p["step_s"] * 1000 - ms(lo_p, attn), hi_p["step_s"] * 1000 - ms(hi_p, attn)
        lines.append(
            f"where a step goes (ONNX Runtime profiler, median ms), {lo_k} vs {hi_k}: attention kernel "
            f"{ms(lo_p, attn):.0f} vs {ms(hi_p, attn):.0f}; everything else {rest_lo:.0f} vs {rest_hi:.0f} "
            f"({rest_hi / rest_lo:.2f}x: no per-step KV copy left; the growth is the attention kernel's)"
        )
        lines.append(
            f"where a step goes, {one} vs {lo_k}: step {one_p['step_s'] * 1000:.0f} vs "
            f"{lo_p['step_s'] * 1000:.0f}; int4 GEMMs (MatMulNBits, the 201,088-row LM head most) "
            f"{ms(one_p, gemm):.0f} vs {ms(lo_p, gemm):.0f} ({ms(lo_p, gemm) / max(ms(one_p, gemm), 1e-9):.1f}x"
            f" for 8x the rows); experts (QMoE) {ms(one_p, 'QMoE'):.0f} vs {ms(lo_p, 'QMoE'):.0f}"
        )
    og_d = got.get("og", {})
    for key, theirs in og_d.get("rates", {}).items():
        if key in rates:
            ratio = rates[key] / theirs
            lines.append(
                f"og.Generator static batch {key}: {theirs:7.1f} tok/s (its prefill {og_d['prefill_s'][key]:.0f}"
                f" s); ours {ratio:.2f}x (goal >= 1.0x: {verdict(ratio >= 1.0)})"
            )
    for key, why in og_d.get("skipped", {}).items():
        lines.append(f"og.Generator static batch {key}: not run: {why}, more than half of this machine's free memory")
    duel_d = got.get("duel", {})
    for key, theirs in duel_d.get("og", {}).items():
        ratio = duel_d["ours"][key] / theirs
        lines.append(
            f"same process, steps alternating, {key}: ours {duel_d['ours'][key]:7.1f} vs og {theirs:7.1f} "
            f"tok/s: {ratio:.2f}x (goal >= 1.0x: {verdict(ratio >= 1.0)})"
        )
    hf_d = got.get("hf", {})
    for key, theirs in hf_d.get("rates", {}).items():
        if key in rates:
            lines.append(
                f"transformers eager bf16 {key}: {theirs:7.2f} tok/s (its prefill "
                f"{hf_d['prefill_s'][key]:.0f} s); ours {rates[key] / theirs:.2f}x"
            )
    bw = got.get("bandwidth", {}).get("bytes_per_s")
    weights = ours_d.get("weights")
    if bw and weights and rates:
        lo = contexts[0]
        for batch, context in ((1, lo), (8, lo), (8, contexts[-1])):
            # the share of experts a batch of distinct tokens reads: each row picks k of E
            experts_read = 1 - (1 - config["num_experts_per_tok"] / config["num_local_experts"]) ** batch
            read = (
                weights["active_per_token"]
                - weights["experts"] * config["num_experts_per_tok"] / config["num_local_experts"]
                + weights["experts"] * experts_read
            )
            kv_read = batch * ours_d["kv"][str(context)]["need"] if str(context) in ours_d["kv"] else 0
            bound = batch * bw / (read + kv_read)
            got_rate = rates.get(f"{batch}x{context}", 0)
            lines.append(
                f"bandwidth bound b{batch} ctx {context}: {bound:8.1f} tok/s ({(read + kv_read) / 2**20:.0f} "
                f"MiB read per step at {bw / 1e9:.1f} GB/s); ours {got_rate:.1f} = {got_rate / bound:.0%} of it"
            )
    st = got.get("stall")
    if st:
        chunked, whole = st[str(args.chunk)], st[str(args.stall_prompt)]
        per_chunk = max(0.0, chunked["median_gap_s"] - chunked["steady_s"])
        ok = chunked["max_gap_s"] <= chunked["steady_s"] + 1.5 * per_chunk
        lines.append(
            f"decode stall while a {args.stall_prompt}-token prompt joins 4 decoding rows (time between "
            f"their tokens): chunk {chunked['chunk_used']}: max {chunked['max_gap_s'] * 1000:.0f} ms; unchunked: "
            f"max {whole['max_gap_s'] * 1000:.0f} ms ({whole['max_gap_s'] / chunked['max_gap_s']:.1f}x "
            f"longer); steady step {chunked['steady_s'] * 1000:.0f} ms, one chunk's prefill ~"
            f"{per_chunk * 1000:.0f} ms (goal: max <= step + one chunk, 1.5x slack for the later chunks' "
            f"longer attention: {verdict(ok)})"
        )
    return lines + llamacpp.section(args.out)


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    parts = list(PARTS) if args.parts == ["all"] else args.parts
    args.out.mkdir(parents=True, exist_ok=True)
    for part in parts:
        if part == "report":
            continue
        if len(parts) > 1:  # one model in memory at a time
            options = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in (*PARTS, "all", "report")]
            proc = subprocess.run([sys.executable, "-m", "bench.engine_scale.run", part, *options], cwd=REPO)
            if proc.returncode:  # a part that cannot run here (no og CUDA build, no memory) does not stop the rest
                print(f"{part}: failed with exit status {proc.returncode}; reported as skipped", flush=True)
                (args.out / f"{part}.json").unlink(missing_ok=True)
            continue
        result = globals()[part](args)
        (args.out / f"{part}.json").write_text(json.dumps(result, indent=1))
    if "report" in parts or args.parts == ["all"]:
        lines = report(args)
        print("\n".join(lines))
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
