"""One ONNX Runtime session over a gpt-oss builder export, driven over batch slots whose KV stays in place.

The builder's GroupQueryAttention is exact per row for ragged batches: row i attends to its first
`length_i` cached positions plus the new ones, whatever the other rows hold, and with past and present bound
to one buffer it writes only row i's new positions (see kvcache.py). So a prompt is prefilled into its own
slot, in chunks if asked, while other slots keep decoding; `prompt[:-1]` is prefilled and the last prompt
token enters the batch as an ordinary decode input.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from appliance.engine.kvcache import KVLayout, SlotCache, layout_of
from appliance.errors import ApplianceError

DYNAMIC_BLOCK_BASE = "session.dynamic_block_base"


class ModelLoadError(ApplianceError):
    """The model file cannot be loaded or is not a gpt-oss export with a KV cache."""


class ModelRunner:
    """Prefill and decode over a `SlotCache`; not thread-safe (one scheduler owns it)."""

    def __init__(
        self,
        model_path: Path,
        kv_heads: int,
        head_size: int,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        window: int | None = None,
        options: ort.SessionOptions | None = None,
    ) -> None:
        # `options` lets a bench profile the very session the engine would run (enable_profiling).
        options = options or ort.SessionOptions()
        options.log_severity_level = 3
        try:
            options.get_session_config_entry(DYNAMIC_BLOCK_BASE)  # a caller's own setting (a bench) stays
        except RuntimeError:  # onnxruntime's answer for an entry not set
            # Threads take work in shrinking blocks instead of fixed shares, so one preempted core does not
            # hold up the step: on a shared 2-core host it took decode from 0.42-1.33x llama.cpp's to 1.06-1.36x
            # (bench/engine_scale/llamacpp.py, issue 30). Scheduling only: the numbers computed are the same.
            options.add_session_config_entry(DYNAMIC_BLOCK_BASE, "4")
        if threads:
            options.intra_op_num_threads = threads
        providers = list(providers or ["CPUExecutionProvider"])
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"cannot load {model_path.name}: {exc}".splitlines()[0]) from exc
        inputs = {i.name for i in self.session.get_inputs()}
        if not any(n.startswith("past_key_values.") for n in inputs) or "attention_mask" not in inputs:
            raise ModelLoadError(f"{model_path.name} is not a gpt-oss decoder with a KV cache")
        logits = next(o for o in self.session.get_outputs() if o.name == "logits")
        if logits.shape[1] != 1:
            raise ModelLoadError(f"{model_path.name} was exported without prune_lm_head (rebuild the bundle)")
        try:
            self.layout: KVLayout = layout_of(self.session, kv_heads, head_size, window)
        except ValueError as exc:
            raise ModelLoadError(f"{model_path.name}: {exc}") from None
        self.vocab_size = logits.shape[2]
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def allocate(self, slots: int, capacity: int) -> SlotCache:
        """KV for `slots` sequences of up to `capacity` tokens each, on the session's device."""
        return SlotCache(self.layout, slots, capacity, self.device)

    def _run(self, cache: SlotCache, start: int, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", input_ids)
        binding.bind_cpu_input("attention_mask", mask)
        cache.bind(binding, start, input_ids.shape[0])
        binding.bind_output("logits", "cpu")
        self.session.run_with_iobinding(binding)
        logits = binding.get_outputs()[-1].numpy()
        return logits[:, -1, :].astype(np.float32, copy=False)

    def prefill(self, cache: SlotCache, slot: int, tokens: Sequence[int], start: int) -> None:
        """Write the KV of `tokens` into `slot` at positions [start, start + len(tokens))."""
        if start + len(tokens) > cache.capacity:
            raise ValueError(f"slot capacity is {cache.capacity} positions")
        ids = np.asarray(tokens, np.int64)[None, :]
        self._run(cache, slot, ids, np.ones((1, start + len(tokens)), np.int64))

    def step(self, cache: SlotCache, tokens: Sequence[int], lengths: Sequence[int]) -> np.ndarray:
        """One token for each of slots [0, len(tokens)); slot i holds `lengths[i]` positions. Logits [rows, vocab]."""
        if max(lengths) >= cache.capacity:
            raise ValueError(f"slot capacity is {cache.capacity} positions")
        width = max(lengths) + 1
        mask = (np.arange(width)[None, :] <= np.asarray(lengths)[:, None]).astype(np.int64)
        return self._run(cache, 0, np.asarray(tokens, np.int64)[:, None], mask)
