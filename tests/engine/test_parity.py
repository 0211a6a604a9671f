"""Logits of the fp32 export against transformers eager on the same published checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from appliance.engine.session import ModelRunner

transformers = pytest.importorskip("transformers")


def _runner(bundle: Path, options=None) -> ModelRunner:
    decoder = json.loads((bundle / "genai_config.json").read_text())["model"]["decoder"]
    window = (decoder.get("sliding_window") or {}).get("window_size")
    heads, size = decoder["num_key_value_heads"], decoder["head_size"]
    return ModelRunner(bundle / "model.onnx", heads, size, window=window, options=options)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint: Path):
    """transformers dequantises the MXFP4 experts itself: the parity also checks our quantised layout."""
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    return model.eval()


def _decode_against(
    runner: ModelRunner,
    expected: list[np.ndarray],
    sequences: list[list[int]],
    prompts: list[int],
    chunk: int,
    capacity: int,
) -> float:
    """Prefill each prompt into its slot in `chunk`-token pieces, then decode all rows teacher-forced."""
    cache = runner.allocate(len(sequences), capacity)
    for slot, (seq, n) in enumerate(zip(sequences, prompts)):
        for start in range(0, n - 1, chunk):
            runner.prefill(cache, slot, seq[start : min(start + chunk, n - 1)], start)
    cached = [n - 1 for n in prompts]
    worst = 0.0
    while all(c < len(s) for c, s in zip(cached, sequences)):
        logits = runner.step(cache, [s[c] for s, c in zip(sequences, cached)], cached)
        for row, (want, c) in enumerate(zip(expected, cached)):
            worst = max(worst, float(np.abs(logits[row] - want[c]).max()))
            assert logits[row].argmax() == want[c].argmax()
        cached = [c + 1 for c in cached]
    return worst


def test_prefill_and_decode_match_transformers_across_the_sliding_window(tiny_bundle, reference):
    assert any(w is not None for w in _runner(tiny_bundle).layout.windows)  # the windowed export is in use
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 199_998, size=n).tolist() for n in (23, 9, 15)]
    with torch.no_grad():
        expected = [reference(torch.tensor([s])).logits[0].numpy() for s in sequences]
    worst = _decode_against(_runner(tiny_bundle), expected, sequences, [6, 3, 11], chunk=4, capacity=32)
    assert worst <= 1e-4, worst


def test_long_ragged_rows_stay_exact_far_past_the_window(tiny_bundle, reference):
    """~1,000 tokens against a window of 8: the windowed layers hold 8 positions per slot, the full ones all."""
    rng = np.random.default_rng(1)
    sequences = [rng.integers(0, 199_998, size=n).tolist() for n in (1000, 700)]
    with torch.no_grad():
        expected = [reference(torch.tensor([s])).logits[0].numpy() for s in sequences]
    runner = _runner(tiny_bundle)
    worst = _decode_against(runner, expected, sequences, [950, 640], chunk=300, capacity=1024)
    assert worst <= 1e-4, worst
    cache = runner.allocate(1, 1024)
    assert sorted(set(cache.depths)) == [8, 1024]


def test_ragged_rows_at_20b_attention_shapes_match_transformers_and_themselves_alone(attention_20b):
    """Two ragged rows prefilled in 100-token chunks across the 128-token window, then decoded together in place;
    each row alone gives the same greedy tokens. fp32 over a 2,880-wide residual: within 1e-3 of the logits' scale."""
    checkpoint, bundle = attention_20b
    runner = _runner(bundle)
    assert sorted(set(runner.allocate(1, 512).depths)) == [128, 512]
    reference = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 2990, size=n).tolist() for n in (300, 170)]
    with torch.no_grad():
        expected = [reference(torch.tensor([s])).logits[0].numpy() for s in sequences]
    scale = max(float(np.abs(e).max()) for e in expected)
    worst = _decode_against(runner, expected, sequences, [280, 140], chunk=100, capacity=512)
    assert worst <= 1e-3 * scale, (worst, scale)
    for row, (seq, n) in enumerate(zip(sequences, [280, 140])):
        alone = _decode_against(runner, [expected[row]], [seq[: n + 20]], [n], chunk=100, capacity=512)
        assert alone <= 1e-3 * scale


def test_the_session_schedules_its_threads_dynamically(tiny_bundle):
    """Issue 30: threads take work in shrinking blocks (session.dynamic_block_base), which kept decode steady
    against llama.cpp on a shared host; a caller's own value is kept."""
    import onnxruntime as ort

    from appliance.engine.session import DYNAMIC_BLOCK_BASE

    assert _runner(tiny_bundle).session.get_session_options().get_session_config_entry(DYNAMIC_BLOCK_BASE) == "4"
    options = ort.SessionOptions()
    options.add_session_config_entry(DYNAMIC_BLOCK_BASE, "2")
    runner = _runner(tiny_bundle, options)
    assert runner.session.get_session_options().get_session_config_entry(DYNAMIC_BLOCK_BASE) == "2"
