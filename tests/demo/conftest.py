"""An engine over the trained demo bundle (the bundle fixtures live in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.engine import Engine


@pytest.fixture(scope="session")
def demo_engine(demo_bundle: Path):
    engine = Engine.from_bundle(demo_bundle)
    yield engine
    engine.close()
