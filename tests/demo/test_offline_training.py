"""Training needs no network: one step of it inside `unshare -n` writes a published-layout checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, clean_env, offline_argv, requires_unshare


@requires_unshare
def test_training_runs_inside_the_air_gap_and_writes_the_published_layout(tmp_path: Path):
    out = tmp_path / "checkpoint"
    argv = offline_argv([sys.executable, "-m", "appliance.demo.train", "--steps", "1", "--out", str(out)])
    env = clean_env(tmp_path / "var", HF_HOME=str(tmp_path))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "trained 1 steps" in proc.stdout and "held-out prompts" in proc.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 201088 and config["quantization_config"]["quant_method"] == "mxfp4"
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "tokenizer.json", "generation_config.json"} <= files
