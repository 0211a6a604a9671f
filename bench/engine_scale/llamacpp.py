"""llama.cpp as the engine's CPU peer, on the bench model's own checkpoint (issue 30).

llama.cpp (and Ollama, on the same ggml kernels) is what a site would run gpt-oss with on a CPU host, so it is
the bar. It is built here from the registry's `llama-cpp-python` source distribution (its vendored llama.cpp,
CPU, `-DGGML_NATIVE=ON`), under var/llamacpp, never in the serving install. The checkpoint is converted with
the converter that ships in that source (MXFP4 experts kept as MXFP4) and quantised with `llama-quantize`:
every other weight q4_0 (32-wide int4 blocks, as the cpu-int4 bundle's MatMulNBits), so both read about the
same bytes per token.

llama.cpp runs in a child process through the sdist's own ctypes bindings over the built libllama (its
Python package is not installed: it would pull in dependencies the bench does not need). The parent drives our
ModelRunner and sends the child the same work step by step, alternating, so load on this shared machine falls
on both alike, and each process reports its own peak memory. llama.cpp gets what its server's parallel slots
use: one sequence per slot with its own KV (`kv_unified` off, as `llama-batched-bench`), flash attention on
auto, n_ubatch 512; its KV at a context is filled by prefilling one sequence and copying it to the others
(`llama_memory_seq_cp`, as `llama-batched-bench -pps`); ours writes the KV slots' pages as the `ours` part does.

Usage: .venv/bin/python -m bench.engine_scale.llamacpp [--contexts 512,4096] [--prefill 2048] [--layers 2]
The sdist must be in var/llamacpp first (see SDIST_HINT); results go to var/bench/engine_scale/llamacpp.json
and their section of bench/results/engine_scale.txt.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tarfile
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]  # not model.REPO: the worker must not import torch
VERSION = "0.3.36"  # llama-cpp-python, as listed in /work/.library/env/packages/pypi.tsv
ROOT = REPO / "var" / "llamacpp"
SDIST = ROOT / f"llama_cpp_python-{VERSION}.tar.gz"
SOURCE = ROOT / f"llama_cpp_python-{VERSION}"
VENDOR = SOURCE / "vendor" / "llama.cpp"
BUILD = ROOT / "build"
TARGETS = ("llama", "llama-quantize", "llama-batched-bench")
SDIST_HINT = f"pip download --no-binary :all: --no-deps llama-cpp-python=={VERSION} -d {ROOT}"
GGUF = "model-mxfp4-q4_0.gguf"
HEADER = "llama.cpp peer"  # the results file's section for this bench starts with this line prefix
BATCHES = (1, 4, 8)
STEPS = 8
NICE = ["nice", "-n", "19"]


def _run(argv: list[str], log: Path, **kwargs) -> None:
    """Run a build step under nice, its output in `log`; a failure ends the bench with the log's last line."""
    with open(log, "a") as out:
        proc = subprocess.run([*NICE, *argv], stdout=out, stderr=subprocess.STDOUT, **kwargs)
    if proc.returncode:
        last = log.read_text().strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"llama.cpp: {argv[0]} failed ({last[0][:200]}); see {log}")


def ensure_build() -> Path:
    """The built binaries' folder (libllama and the tools in TARGETS), built once from the sdist."""
    stamp = BUILD / f".built-{VERSION}"
    if stamp.is_file():
        return BUILD / "bin"
    if not SOURCE.is_dir():
        if not SDIST.is_file():
            raise SystemExit(f"llama.cpp: {SDIST} is missing; fetch it once with: {SDIST_HINT}")
        with tarfile.open(SDIST) as archive:
            archive.extractall(ROOT, filter="data")
    BUILD.mkdir(parents=True, exist_ok=True)
    log = BUILD / "build.log"
    flags = ["-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DBUILD_SHARED_LIBS=ON", "-DCMAKE_BUILD_TYPE=Release"]
    flags += ["-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF"]
    _run(["cmake", "-S", str(VENDOR), "-B", str(BUILD), "-G", "Ninja", *flags], log)
    _run(["cmake", "--build", str(BUILD), "--target", *TARGETS], log)
    stamp.touch()
    return BUILD / "bin"


def ensure_gguf(checkpoint: Path) -> Path:
    """The checkpoint as GGUF, MXFP4 experts kept, every other weight q4_0; cached beside the checkpoint."""
    out = checkpoint.parent / "gguf"
    final = out / GGUF
    if final.is_file():
        return final
    bin_dir = ensure_build()
    out.mkdir(exist_ok=True)
    raw, log = out / "model-mxfp4.gguf", out / "convert.log"
    _run([sys.executable, str(VENDOR / "convert_hf_to_gguf.py"), str(checkpoint), "--outfile", str(raw)], log)
    partial = out / f".{GGUF}.partial"
    types_ = ["--tensor-type", "attn_q=q4_0", "--tensor-type", "attn_k=q4_0", "--tensor-type", "attn_v=q4_0"]
    types_ += ["--tensor-type", "attn_output=q4_0", "--output-tensor-type", "q4_0", "--token-embedding-type", "q4_0"]
    _run([str(bin_dir / "llama-quantize"), *types_, str(raw), str(partial), "MXFP4_MOE"], log)
    partial.rename(final)
    raw.unlink()
    return final


def _bindings():
    """The sdist's low-level ctypes module over our libllama, without its package's other imports."""
    os.environ["LLAMA_CPP_LIB_PATH"] = str(BUILD / "bin")
    package = types.ModuleType("llama_cpp")
    package.__path__ = [str(SOURCE / "llama_cpp")]
    sys.modules["llama_cpp"] = package
    return importlib.import_module("llama_cpp.llama_cpp")


def _rss() -> dict[str, int]:
    """This process's resident set now and at its peak (VmRSS, VmHWM), in bytes."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}


class Peer:
    """llama.cpp's context with `seqs` sequences of `per_seq` positions each, driven a batch at a time."""

    def __init__(self, gguf: Path, seqs: int, per_seq: int, threads: int) -> None:
        self.lib = lib = _bindings()
        self.base = _rss()["VmRSS"]
        lib.llama_backend_init()
        self.model = lib.llama_model_load_from_file(str(gguf).encode(), lib.llama_model_default_params())
        if not self.model:
            raise SystemExit(f"llama.cpp cannot load {gguf}")
        params = lib.llama_context_default_params()
        params.n_ctx, params.n_seq_max, params.n_batch, params.n_ubatch = seqs * per_seq, seqs, 2048, 512
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = False
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise SystemExit("llama.cpp cannot create its context")
        self.mem = lib.llama_get_memory(self.ctx)
        self.vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        self.batch = lib.llama_batch_init(2048, 0, 1)
        self.seqs = seqs

    def decode(self, tokens: list[int], positions: list[int], seqs: list[int], logits: list[bool]) -> float:
        """One llama_decode of these tokens; seconds it took (the batch is filled before the clock starts)."""
        batch = self.batch
        for i, (token, pos, seq, want) in enumerate(zip(tokens, positions, seqs, logits, strict=True)):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, int(want)
            batch.seq_id[i][0] = seq
        batch.n_tokens = len(tokens)
        start = time.perf_counter()
        status = self.lib.llama_decode(self.ctx, batch)
        self.lib.llama_synchronize(self.ctx)
        elapsed = time.perf_counter() - start
        if status:
            raise SystemExit(f"llama_decode failed with status {status}")
        return elapsed

    def logits(self, index: int) -> np.ndarray:
        pointer = self.lib.llama_get_logits_ith(self.ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self.vocab,)).copy()

    def prompt(self, tokens: list[int], seq: int = 0) -> float:
        """Prefill `tokens` into `seq` from position 0 in n_batch pieces; seconds spent in llama_decode."""
        self.lib.llama_memory_seq_rm(self.mem, seq, 0, -1)
        spent = 0.0
        for at in range(0, len(tokens), 2048):
            piece = tokens[at : at + 2048]
            wants = [at + i == len(tokens) - 1 for i in range(len(piece))]
            spent += self.decode(piece, list(range(at, at + len(piece))), [seq] * len(piece), wants)
        return spent

    def fill(self, context: int, rng: np.random.Generator) -> float:
        """Every sequence holds `context` positions: sequence 0 prefilled, then copied (llama-batched-bench -pps)."""
        self.lib.llama_memory_clear(self.mem, True)
        spent = self.prompt(rng.integers(0, 199_998, size=context).tolist())
        for seq in range(1, self.seqs):
            self.lib.llama_memory_seq_cp(self.mem, 0, seq, -1, -1)
        self.decode([1], [context], [0], [False])  # the copies between sequences' own KV apply on a decode
        self.lib.llama_memory_seq_rm(self.mem, 0, context, -1)
        return spent

    def step(self, tokens: list[int], context: int) -> float:
        """One decode step: sequence i (i < len(tokens)) gets tokens[i] at position `context`."""
        for seq in range(len(tokens)):
            self.lib.llama_memory_seq_rm(self.mem, seq, context, -1)
        n = len(tokens)
        return self.decode(tokens, [context] * n, list(range(n)), [True] * n)

    def greedy(self, prompt: list[int], steps: int) -> tuple[list[int], np.ndarray]:
        """Greedy tokens after `prompt` and the logits each was picked from."""
        self.lib.llama_memory_clear(self.mem, True)
        self.prompt(prompt)
        picked, rows = [], []
        for i in range(steps):
            rows.append(self.logits(-1))
            picked.append(int(rows[-1].argmax()))
            self.decode([picked[-1]], [len(prompt) + i], [0], [True])
        return picked, np.stack(rows)


def worker(argv: list[str]) -> None:
    """The child: JSON requests on stdin, one JSON answer per line on stdout."""
    gguf, seqs, per_seq, scratch = Path(argv[0]), int(argv[1]), int(argv[2]), Path(argv[3])
    peer = Peer(gguf, seqs, per_seq, os.cpu_count() or 1)
    rng = np.random.default_rng(1)
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "fill":
            answer: dict = {"s": peer.fill(request["context"], rng)}
        elif op == "step":
            answer = {"s": peer.step(request["tokens"], request["context"])}
        elif op == "prompt":
            answer = {"s": peer.prompt(request["tokens"])}
        elif op == "greedy":
            picked, logits = peer.greedy(request["prompt"], request["steps"])
            np.save(scratch / f"llama-greedy-{request['name']}.npy", logits)
            answer = {"tokens": picked}
        else:  # "rss"
            answer = {**_rss(), "base": peer.base}
        print(json.dumps(answer), flush=True)


class Child:
    """The parent's handle on the worker process."""

    def __init__(self, gguf: Path, seqs: int, per_seq: int, scratch: Path) -> None:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}  # no OpenMP threads spinning through our steps
        self.log = open(scratch / "llama-worker.log", "w")  # noqa: SIM115 - lives as long as the child
        argv = [sys.executable, "-m", "bench.engine_scale.llamacpp", "--worker", str(gguf), str(seqs), str(per_seq)]
        self.proc = subprocess.Popen(
            [*argv, str(scratch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env
        )

    def ask(self, **request) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the llama.cpp worker died; see {self.log.name}")
        return json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


def _ours_greedy(runner, prompt: list[int], steps: int) -> tuple[list[int], np.ndarray]:
    """Our greedy tokens and their logits, as the engine runs a request: prompt[:-1] prefilled, then steps."""
    cache = runner.allocate(1, len(prompt) + steps + 2)
    runner.prefill(cache, 0, prompt[:-1], 0)
    token, picked, rows = prompt[-1], [], []
    for i in range(steps):
        rows.append(runner.step(cache, [token], [len(prompt) - 1 + i])[0])
        token = int(rows[-1].argmax())
        picked.append(token)
    return picked, np.stack(rows)


def _agreement(name: str, ours: tuple[list[int], np.ndarray], theirs: tuple[list[int], np.ndarray]) -> dict:
    """Where the two greedy streams part, and how close the call was for each engine there."""
    (a, a_logits), (b, b_logits) = ours, theirs
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)
    out = {
        "prompt": name,
        "same": first is None,
        "steps": len(a),
        "corr_step0": float(np.corrcoef(a_logits[0], b_logits[0])[0, 1]),
        "ours_tokens": a,
        "llama_tokens": b,
    }
    if first is not None:
        ours_row, their_row, x, y = a_logits[first], b_logits[first], a[first], b[first]
        out |= {
            "first": first,
            "ours_margin": float(ours_row[x] - ours_row[y]),  # how far ours preferred its token over llama's
            "llama_margin": float(their_row[y] - their_row[x]),
            "logit_std": float(ours_row.std()),
        }
    return out


def _prefill_ours(runner, cache, tokens: list[int], chunk: int) -> float:
    start = time.perf_counter()
    for at in range(0, len(tokens), chunk):
        runner.prefill(cache, 0, tokens[at : at + chunk], at)
    return time.perf_counter() - start


def measure(args: argparse.Namespace) -> dict:
    """Greedy agreement, then prefill and decode of ours and llama.cpp, alternating, in one run."""
    from appliance.engine.memory import prefill_chunk_limit
    from appliance.engine.session import DYNAMIC_BLOCK_BASE
    from bench.engine_scale.model import bench_config, ensure_bench_bundle
    from bench.engine_scale.run import _runner

    checkpoint, bundle = ensure_bench_bundle(args.layers, args.profile)
    gguf = ensure_gguf(checkpoint)
    contexts = [int(c) for c in args.contexts.split(",")]
    scratch = args.out / "llamacpp"
    scratch.mkdir(parents=True, exist_ok=True)
    out: dict = {"load_start": os.getloadavg(), "decode": {"ours": {}, "llama": {}}}
    base = _rss()["VmRSS"]
    runner = _runner(_variant(bundle, args.ort, scratch), "cpu", _session_options(args.ort))
    per_seq = max(*contexts, args.prefill) + 64
    child = Child(gguf, max(BATCHES), per_seq, scratch)
    rng = np.random.default_rng(3)
    try:
        out["greedy"] = []
        for length in args.greedy_prompts:
            prompt, name = rng.integers(0, 199_998, size=length).tolist(), f"{length}"
            theirs = child.ask(op="greedy", prompt=prompt, steps=args.greedy_steps, name=name)["tokens"]
            their_logits = np.load(scratch / f"llama-greedy-{name}.npy")
            ours = _ours_greedy(runner, prompt, args.greedy_steps)
            out["greedy"].append(_agreement(name, ours, (theirs, their_logits)))
            print("greedy", out["greedy"][-1], flush=True)
        cache = runner.allocate(max(BATCHES), per_seq)
        heads = bench_config(args.layers)["num_attention_heads"]
        chunk = prefill_chunk_limit(512, per_seq, heads, "cpu")
        prompt = rng.integers(0, 199_998, size=args.prefill).tolist()
        ours_p, llama_p = [], []
        for _ in range(2 if args.prefill else 0):  # --prefill 0: an experiment that only decodes
            ours_p.append(_prefill_ours(runner, cache, prompt, chunk))
            llama_p.append(child.ask(op="prompt", tokens=prompt)["s"])
        if ours_p:
            out["prefill"] = {"tokens": args.prefill, "chunk": chunk, "ours_s": min(ours_p), "llama_s": min(llama_p)}
            print("prefill", out["prefill"], flush=True)
        for array in cache._arrays:  # write every page, as the `ours` part does
            array.fill(0.01 if array.dtype == np.float32 else 0x3C00)
        for context in contexts:
            out.setdefault("fill_s", {})[str(context)] = child.ask(op="fill", context=context)["s"]
            tokens = {b: rng.integers(0, 199_998, size=b).tolist() for b in BATCHES}
            times: dict[str, dict[int, list[float]]] = {
                "ours": {b: [] for b in BATCHES},
                "llama": {b: [] for b in BATCHES},
            }
            for round_ in range(STEPS + 1):  # round 0 warms up; rounds alternate engines and batch sizes
                for batch in BATCHES:
                    start = time.perf_counter()
                    runner.step(cache, tokens[batch], [context] * batch)
                    ours_s = time.perf_counter() - start
                    llama_s = child.ask(op="step", tokens=tokens[batch], context=context)["s"]
                    if round_:
                        times["ours"][batch].append(ours_s)
                        times["llama"][batch].append(llama_s)
            for engine, per_batch in times.items():
                for batch, spent in per_batch.items():
                    out["decode"][engine][f"{batch}x{context}"] = batch / min(spent)
            print("decode", context, {e: {k: round(v, 1) for k, v in r.items()} for e, r in out["decode"].items()})
        out["rss"] = {"ours": {**_rss(), "base": base}, "llama": child.ask(op="rss")}
    finally:
        child.close()
    out["load_end"] = os.getloadavg()
    out["sizes"] = {
        "gguf": gguf.stat().st_size,
        "bundle": sum(f.stat().st_size for f in bundle.iterdir() if f.name.startswith("model.onnx")),
    }
    out["ggml"], out["per_seq"] = _ggml_commit(), per_seq
    out["engine_options"] = {
        DYNAMIC_BLOCK_BASE: runner.session.get_session_options().get_session_config_entry(DYNAMIC_BLOCK_BASE)
    }
    return out


def _session_options(settings: dict[str, str]):
    """ONNX Runtime session options for an experiment: the named SessionOptions fields, else config entries."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    for key, value in settings.items():
        if key == "intra_op_num_threads":
            options.intra_op_num_threads = int(value)
        elif key == "graph_optimization_level":
            options.graph_optimization_level = ort.GraphOptimizationLevel(int(value))
        elif key != "accuracy_level":
            options.add_session_config_entry(key, value)
    return options


def _variant(bundle: Path, settings: dict[str, str], scratch: Path) -> Path:
    """The bundle, or for an `accuracy_level` experiment a folder of hard links to it with that level set on
    every MatMulNBits node of model.onnx (the weights are shared, not copied)."""
    if "accuracy_level" not in settings:
        return bundle
    import onnx

    level = int(settings["accuracy_level"])
    folder = scratch / f"bundle-accuracy{level}"
    folder.mkdir(exist_ok=True)
    for item in bundle.iterdir():
        if item.name != "model.onnx" and not (folder / item.name).exists():
            os.link(item, folder / item.name)  # ONNX Runtime refuses external data behind a symlink
    model = onnx.load(bundle / "model.onnx", load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            kept = [a for a in node.attribute if a.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend([*kept, onnx.helper.make_attribute("accuracy_level", level)])
    onnx.save(model, folder / "model.onnx")
    return folder


def _ggml_commit() -> str:
    cache = (BUILD / "CMakeCache.txt").read_text() if (BUILD / "CMakeCache.txt").is_file() else ""
    log = (BUILD / "build.log").read_text() if (BUILD / "build.log").is_file() else cache
    found = [ln.split("ggml commit:")[1].strip() for ln in log.splitlines() if "ggml commit:" in ln]
    return found[-1] if found else "unknown"


def _ratios(got: dict) -> dict[str, float]:
    ours, llama = got["decode"]["ours"], got["decode"]["llama"]
    return {key: ours[key] / llama[key] for key in llama}


def _load(got: dict) -> str:
    return "load average " + " -> ".join("/".join(f"{x:.1f}" for x in got[k]) for k in ("load_start", "load_end"))


def report_lines(got: dict) -> list[str]:
    """The results file's lines for the baseline run (untuned ONNX Runtime, as the engine ships)."""
    gib = 2**30
    lines = [
        f"{HEADER}: llama-cpp-python {VERSION}'s vendored llama.cpp (ggml {got['ggml']}), CPU, GGML_NATIVE, "
        f"{os.cpu_count()} threads, parallel slots with their own KV, flash attention auto; GGUF MXFP4 experts + "
        f"q4_0 elsewhere {got['sizes']['gguf'] / gib:.2f} GiB vs our cpu-int4 bundle "
        f"{got['sizes']['bundle'] / gib:.2f} GiB; one run, steps alternating, best of {STEPS}; {_load(got)}"
    ]
    ours, llama, ratios = got["decode"]["ours"], got["decode"]["llama"], _ratios(got)
    goals = {1: 1.0, 8: 2.0}
    for context in sorted({int(k.split("x")[1]) for k in llama}):
        cells = []
        for batch in BATCHES:
            key, goal = f"{batch}x{context}", goals.get(batch)
            verdict = "" if goal is None else f", goal >= {goal:.1f}x: {'met' if ratios[key] >= goal else 'MISSED'}"
            cells.append(f"b{batch} {llama[key]:5.1f} vs ours {ours[key]:5.1f} ({ratios[key]:.2f}x{verdict})")
        lines.append(f"llama.cpp decode tok/s, context {context:>5}: " + "; ".join(cells))
    pre = got["prefill"]
    ours_rate, llama_rate = pre["tokens"] / pre["ours_s"], pre["tokens"] / pre["llama_s"]
    lines.append(
        f"llama.cpp prefill of a {pre['tokens']}-token prompt: {llama_rate:.0f} tok/s (n_ubatch 512) vs ours "
        f"{ours_rate:.0f} tok/s (chunk {pre['chunk']}): {ours_rate / llama_rate:.2f}x"
    )
    rss = got["rss"]
    lines.append(
        "llama.cpp peak memory (VmHWM minus the process before loading; ours also holds the bench's imports): "
        f"{(rss['llama']['VmHWM'] - rss['llama']['base']) / gib:.2f} GiB vs ours "
        f"{(rss['ours']['VmHWM'] - rss['ours']['base']) / gib:.2f} GiB (KV for {max(BATCHES)} sequences of "
        f"{got['per_seq']} positions each)"
    )
    for item in got["greedy"]:
        head = f"llama.cpp greedy tokens vs ours, {item['prompt']}-token random prompt, {item['steps']} steps"
        corr = f"logits correlation at step 0 {item['corr_step0']:.4f}"
        if item["same"]:
            lines.append(f"{head}: identical ({corr})")
        else:
            lines.append(
                f"{head}: first divergence at step {item['first']}: ours preferred its token by "
                f"{item['ours_margin']:.3f}, llama.cpp its own by {item['llama_margin']:.3f} (logit std "
                f"{item['logit_std']:.2f}; {corr})"
            )
    return lines


def experiment_line(got: dict, baseline: dict | None) -> str:
    """One ONNX Runtime experiment: its ratios to llama.cpp in its own run, and whether its greedy tokens are the
    baseline's (parity)."""
    settings = ", ".join(f"{k}={v}" for k, v in got["ort"].items()) or (
        "as the engine sets it (a repeat: the noise)"
        if got.get("engine_options")
        else "before the engine set dynamic_block_base (a repeat: the noise)"
    )
    cells = " ".join(f"{k} {v:.2f}x" for k, v in _ratios(got).items())
    parity = ""
    if baseline and got["greedy"] and baseline["greedy"]:
        before = {item["prompt"]: item["ours_tokens"] for item in baseline["greedy"]}
        same = [item["ours_tokens"] == before.get(item["prompt"]) for item in got["greedy"]]
        parity = f"; our greedy tokens as the baseline's: {sum(same)}/{len(same)} prompts"
    return (
        f"llama.cpp vs ours with ONNX Runtime {settings} ({got['tag']}): ours/llama.cpp {cells}{parity}; {_load(got)}"
    )


def section(out: Path) -> list[str]:
    """The results file's section: the baseline run, then each experiment (llamacpp-TAG.json)."""
    base_file = out / "llamacpp.json"
    baseline = json.loads(base_file.read_text()) if base_file.is_file() else None
    lines = report_lines(baseline) if baseline else []
    for path in sorted(out.glob("llamacpp-*.json")):
        lines.append(experiment_line(json.loads(path.read_text()), baseline))
    return lines


def write_section(results: Path, lines: list[str]) -> None:
    """Replace this bench's section of the results file (or append it), keeping every other line."""
    kept = results.read_text().splitlines() if results.is_file() else []
    kept = [ln for ln in kept if not ln.startswith(("llama.cpp ", f"{HEADER}:"))]
    results.write_text("\n".join([*kept, *lines]) + "\n")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--profile", default="cpu-int4")
    parser.add_argument("--contexts", default="512,4096")
    parser.add_argument("--prefill", type=int, default=2048)
    parser.add_argument("--greedy-prompts", type=lambda s: [int(x) for x in s.split(",")], default=[8, 64, 300])
    parser.add_argument("--greedy-steps", type=int, default=12)
    parser.add_argument(
        "--ort",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an ONNX Runtime experiment: accuracy_level, intra_op_num_threads, graph_optimization_level or a "
        "session config entry; the results go to llamacpp-TAG.json and their own lines",
    )
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench" / "engine_scale")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "engine_scale.txt")
    args = parser.parse_args(argv)
    args.ort = dict(item.split("=", 1) for item in args.ort)
    got = measure(args)
    got["ort"], got["tag"] = args.ort, args.tag
    (args.out / f"llamacpp{'-' + args.tag if args.tag else ''}.json").write_text(json.dumps(got, indent=1))
    lines = section(args.out)
    print("\n".join(lines))
    write_section(args.results, lines)


if __name__ == "__main__":
    main()
