"""The llama.cpp peer's bookkeeping (bench/engine_scale/llamacpp.py) without llama.cpp: its section of the results
file replaces only itself, and the greedy comparison names the first divergence and how close each engine's call was."""

from __future__ import annotations

import numpy as np

from bench.engine_scale import llamacpp


def test_section_replaces_itself_and_keeps_the_other_figures(tmp_path):
    results = tmp_path / "engine_scale.txt"
    results.write_text("engine_scale: header\nours decode tok/s, context 512: b1 27.7\n")
    llamacpp.write_section(results, [f"{llamacpp.HEADER}: run 1", "llama.cpp decode tok/s: old"])
    llamacpp.write_section(results, [f"{llamacpp.HEADER}: run 2", "llama.cpp decode tok/s: new"])
    assert results.read_text().splitlines() == [
        "engine_scale: header",
        "ours decode tok/s, context 512: b1 27.7",
        f"{llamacpp.HEADER}: run 2",
        "llama.cpp decode tok/s: new",
    ]


def test_agreement_reports_the_first_divergence_and_both_margins():
    ours_logits = np.array([[0.0, 3.0, 1.0], [0.0, 2.0, 1.5], [1.0, 0.0, 0.0]])
    their_logits = np.array([[0.0, 2.5, 1.0], [0.0, 1.0, 1.2], [1.0, 0.0, 0.0]])
    got = llamacpp._agreement("p", ([1, 1, 0], ours_logits), ([1, 2, 0], their_logits))
    assert (got["same"], got["first"]) == (False, 1)
    assert np.isclose(got["ours_margin"], 0.5) and np.isclose(got["llama_margin"], 0.2)
    assert llamacpp._agreement("p", ([1, 1], ours_logits[:2]), ([1, 1], their_logits[:2]))["same"]
