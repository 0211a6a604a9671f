"""One ONNX Runtime session over a full-KV gpt-oss export, driven a batch row at a time.

The builder's graph (GroupQueryAttention, full KV, pruned LM head) is exact per row for right-padded
ragged batches: row i attends to its first `length_i` cached positions plus the new token, whatever the
other rows hold. So a prefill computes the KV of `prompt[:-1]` (its logits are discarded) and the last
prompt token enters the batch as an ordinary decode input: joining a running batch then costs one merge.

KV caches stay as OrtValues on the session's device between steps; when rows join or leave, a tiny ONNX
graph (gather rows, pad or trim the time axis, concatenate) rearranges them on that same device, for
every KV dtype including bf16, which numpy cannot hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from appliance.errors import ApplianceError

_ORT_TYPES = {"tensor(float)": TensorProto.FLOAT, "tensor(float16)": TensorProto.FLOAT16,
              "tensor(bfloat16)": TensorProto.BFLOAT16}


class ModelLoadError(ApplianceError):
    """The model file cannot be loaded or is not a full-KV gpt-oss export."""


@dataclass
class KVBatch:
    """Every layer's past keys and values for `rows` sequences, `length` positions each (right-padded)."""

    values: list[ort.OrtValue]
    rows: int
    length: int


def _merge_graph(elem_type: int) -> bytes:
    """ONNX graph: out = concat(fit(gather(past, keep)), fit(fresh)) along rows, time fitted to `length`."""
    nodes = [
        helper.make_node("Gather", ["past", "keep"], ["kept"], axis=0),
        helper.make_node("Constant", [], ["zeros6"], value=helper.make_tensor("z", TensorProto.INT64, [6], [0] * 6)),
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z0", TensorProto.INT64, [1], [0])),
        helper.make_node("Constant", [], ["axis2"], value=helper.make_tensor("a2", TensorProto.INT64, [1], [2])),
    ]
    for src in ("kept", "fresh"):
        nodes += [
            helper.make_node("Shape", [src], [f"{src}_t"], start=2, end=3),
            helper.make_node("Sub", ["length", f"{src}_t"], [f"{src}_gap"]),
            helper.make_node("Max", [f"{src}_gap", "zero"], [f"{src}_pad"]),
            helper.make_node("Concat", ["zeros6", f"{src}_pad", "zero"], [f"{src}_pads"], axis=0),
            helper.make_node("Pad", [src, f"{src}_pads"], [f"{src}_padded"]),
            helper.make_node("Slice", [f"{src}_padded", "zero", "length", "axis2"], [f"{src}_fit"]),
        ]
    nodes.append(helper.make_node("Concat", ["kept_fit", "fresh_fit"], ["merged"], axis=0))
    kv = ["rows", "heads", "time", "dim"]
    graph = helper.make_graph(nodes, "kv_merge", [
        helper.make_tensor_value_info("past", elem_type, kv),
        helper.make_tensor_value_info("fresh", elem_type, ["fresh_rows", "heads", "fresh_time", "dim"]),
        helper.make_tensor_value_info("keep", TensorProto.INT64, ["kept_rows"]),
        helper.make_tensor_value_info("length", TensorProto.INT64, [1]),
    ], [helper.make_tensor_value_info("merged", elem_type, ["out_rows", "heads", "out_time", "dim"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9).SerializeToString()


class ModelRunner:
    """Prefill, decode step and KV merge over one InferenceSession; not thread-safe (one scheduler owns it)."""

    def __init__(self, model_path: Path, kv_heads: int, head_size: int, providers: Sequence[str] | None = None,
                 threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        providers = list(providers or ["CPUExecutionProvider"])
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"cannot load {model_path.name}: {exc}".splitlines()[0]) from exc
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = sorted((n for n in inputs if n.startswith("past_key_values.")),
                                 key=lambda n: (int(n.split(".")[1]), n.endswith("value")))
        if not self.past_names or "attention_mask" not in inputs:
            raise ModelLoadError(f"{model_path.name} is not a gpt-oss decoder with a KV cache")
        logits = next(o for o in self.session.get_outputs() if o.name == "logits")
        if logits.shape[1] != 1:
            raise ModelLoadError(f"{model_path.name} was exported without prune_lm_head (rebuild the bundle)")
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        self.kv_heads, self.head_size = kv_heads, head_size
        self.kv_type = _ORT_TYPES[inputs[self.past_names[0]].type]
        self.vocab_size = logits.shape[2]
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.merger = ort.InferenceSession(_merge_graph(self.kv_type), options, providers=providers)

    def empty(self, rows: int) -> KVBatch:
        """`rows` sequences with nothing cached yet."""
        shape = [rows, self.kv_heads, 0, self.head_size]
        return KVBatch([ort.OrtValue.ortvalue_from_shape_and_type(shape, self.kv_type, self.device)
                        for _ in self.past_names], rows, 0)

    def _run(self, input_ids: np.ndarray, mask: np.ndarray, kv: KVBatch) -> tuple[np.ndarray, KVBatch]:
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", input_ids)
        binding.bind_cpu_input("attention_mask", mask)
        for name, value in zip(self.past_names, kv.values):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self.present_names:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        logits = outputs[0].numpy()[:, -1, :].astype(np.float32, copy=False)
        return logits, KVBatch(list(outputs[1:]), kv.rows, mask.shape[1])

    def prefill(self, prompts: Sequence[Sequence[int]]) -> KVBatch:
        """The KV of each `prompt[:-1]`, right-padded to the longest; row i holds len(prompt_i) - 1 positions."""
        width = max(len(p) for p in prompts) - 1
        if width <= 0:
            return self.empty(len(prompts))
        ids = np.zeros((len(prompts), width), np.int64)
        mask = np.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            ids[row, :len(prompt) - 1] = prompt[:-1]
            mask[row, :len(prompt) - 1] = 1
        return self._run(ids, mask, self.empty(len(prompts)))[1]

    def step(self, tokens: Sequence[int], lengths: Sequence[int], kv: KVBatch) -> tuple[np.ndarray, KVBatch]:
        """Feed one token per row; row i has `lengths[i]` cached positions. Returns logits [rows, vocab]."""
        width = max(lengths) + 1
        if kv.length != width - 1:
            kv = self.merge(kv, range(kv.rows), None, width - 1)
        mask = (np.arange(width)[None, :] <= np.asarray(lengths)[:, None]).astype(np.int64)
        return self._run(np.asarray(tokens, np.int64)[:, None], mask, kv)

    def merge(self, kv: KVBatch, keep: Sequence[int], fresh: KVBatch | None, length: int) -> KVBatch:
        """Rows `keep` of `kv` followed by all rows of `fresh`, every row fitted to `length` positions."""
        fresh = fresh or self.empty(0)
        keep_ids = np.asarray(list(keep), np.int64)
        merged = []
        for past, new in zip(kv.values, fresh.values):
            binding = self.merger.io_binding()
            binding.bind_ortvalue_input("past", past)
            binding.bind_ortvalue_input("fresh", new)
            binding.bind_cpu_input("keep", keep_ids)
            binding.bind_cpu_input("length", np.array([length], np.int64))
            binding.bind_output("merged", self.device)
            self.merger.run_with_iobinding(binding)
            merged.append(binding.get_outputs()[0])
        return KVBatch(merged, len(keep_ids) + fresh.rows, length)

