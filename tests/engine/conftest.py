"""The tiny published-layout checkpoint and its cpu-fp32 bundle, built once per test session (~15 s)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.bundles.build import build_bundle
from appliance.engine import Engine


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(
        tiny_checkpoint,
        tmp_path_factory.mktemp("bundles") / "tiny-fp32",
        profile="cpu-fp32",
        name="tiny",
        version="0.1.0",
        key=None,
    )


@pytest.fixture(scope="package")
def attention_20b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """gpt-oss-20b's attention (hidden 2880, 64 query and 8 KV heads of 64, window 128, one sliding and one full
    layer) with 4 experts and a 3,000-token vocabulary, so it builds in seconds (~50 s with the reference).
    Removed when the engine's tests end: its 1.3 GB would otherwise stay on disk for the rest of the run."""
    from appliance.demo.checkpoint import gpt_oss_config, write_checkpoint

    root = tmp_path_factory.mktemp("attention-20b")
    config = gpt_oss_config(
        "gpu-check",
        num_hidden_layers=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        vocab_size=3000,
        pad_token_id=2999,
        eos_token_id=2998,
    )
    checkpoint = write_checkpoint(root / "hf", config, seed=0)
    bundle = build_bundle(checkpoint, root / "bundle", profile="cpu-fp32", name="a20b", version="0.1.0", key=None)
    yield checkpoint, bundle
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_engine(tiny_bundle: Path):
    """Engines over the shared bundle, closed after the test."""
    engines: list[Engine] = []

    def make(**options) -> Engine:
        engines.append(Engine.from_bundle(tiny_bundle, **options))
        return engines[-1]

    yield make
    for engine in engines:
        engine.close()
