"""The trained demo bundle, built once per machine: the cache under var/cache/demo survives test sessions.

The first session trains (about a minute on 2 cores) and converts; later ones, and the serving tests that
use the same fixture, find the signed bundle in the cache. The signing key beside the cache is a test key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.demo.model import ensure_demo_bundle
from appliance.engine import Engine
from appliance.signing.keys import KeyFileError, PrivateKey, generate_private_key, load_private_key, \
    write_private_key
from tests.conftest import REPO

DEMO_CACHE = REPO / "var" / "cache" / "demo"
DEMO_KEY = REPO / "var" / "cache" / "demo-test-signing.key"


@pytest.fixture(scope="session")
def demo_key() -> PrivateKey:
    if not DEMO_KEY.exists():
        DEMO_KEY.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_private_key(generate_private_key(), DEMO_KEY)
        except KeyFileError:  # another session wrote it first
            pass
    return load_private_key(DEMO_KEY)


@pytest.fixture(scope="session")
def demo_bundle(demo_key: PrivateKey) -> Path:
    return ensure_demo_bundle(DEMO_CACHE, demo_key, log=print)


@pytest.fixture(scope="session")
def demo_engine(demo_bundle: Path):
    engine = Engine.from_bundle(demo_bundle)
    yield engine
    engine.close()
