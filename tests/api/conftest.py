"""The appliance served in-process through httpx's ASGI transport (one per test module)."""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.appliance import make_appliance


@pytest.fixture(scope="module")
def appliance(tmp_path_factory, signed_tiny_bundle, publisher):
    a = make_appliance(tmp_path_factory.mktemp("appliance") / "var", signed_tiny_bundle, publisher[1])
    yield a
    a.services.backend.close()
    a.services.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory, demo_bundle, demo_key):
    """The appliance serving the trained demo model (one per test module)."""
    a = make_appliance(tmp_path_factory.mktemp("demo") / "var", demo_bundle, demo_key.public_key())
    yield a
    a.services.backend.close()
    a.services.close()


@pytest_asyncio.fixture
async def client(appliance):
    async with appliance.client("user") as c:
        yield c


@pytest.fixture
def scripted(appliance):
    """Swap the real engine for a scripted one for one test; returns it so the test can set its script."""
    from tests.api.scripted import ScriptedBackend

    real = appliance.services.backend
    appliance.services.backend = ScriptedBackend()
    yield appliance.services.backend
    appliance.services.backend = real
