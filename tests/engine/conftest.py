"""The tiny published-layout checkpoint and its cpu-fp32 bundle, built once per test session (~15 s)."""

from __future__ import annotations

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
