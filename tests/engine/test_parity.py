"""Logits of the fp32 export against transformers eager on the same published checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from appliance.engine.session import ModelRunner

transformers = pytest.importorskip("transformers")


def _runner(bundle: Path) -> ModelRunner:
    decoder = json.loads((bundle / "genai_config.json").read_text())["model"]["decoder"]
    return ModelRunner(bundle / "model.onnx", decoder["num_key_value_heads"], decoder["head_size"])


@pytest.fixture(scope="module")
def reference(tiny_checkpoint: Path):
    """transformers dequantises the MXFP4 experts itself: the parity also checks our quantised layout."""
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    return model.eval()


def test_prefill_and_decode_match_transformers_across_the_sliding_window(tiny_bundle, reference):
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 199_998, size=n).tolist() for n in (23, 9, 15)]
    with torch.no_grad():
        expected = [reference(torch.tensor([s])).logits[0].numpy() for s in sequences]
    runner = _runner(tiny_bundle)
    prompts = [s[:n] for s, n in zip(sequences, (6, 3, 11))]  # window is 8: decode crosses it
    kv = runner.prefill(prompts)
    cached = [len(p) - 1 for p in prompts]
    worst = 0.0
    while all(c < len(s) for c, s in zip(cached, sequences)):
        logits, kv = runner.step([s[c] for s, c in zip(sequences, cached)], cached, kv)
        for row, (want, c) in enumerate(zip(expected, cached)):
            worst = max(worst, float(np.abs(logits[row] - want[c]).max()))
            assert logits[row].argmax() == want[c].argmax()
        cached = [c + 1 for c in cached]
    assert worst <= 1e-4, worst
