"""The appliance served in-process through httpx's ASGI transport (one per test module)."""

from __future__ import annotations

import contextlib

import pytest
import pytest_asyncio

from tests.appliance import make_appliance


@pytest.fixture(scope="module")
def appliance(module_dir, signed_tiny_bundle, publisher):
    a = make_appliance(module_dir / "appliance" / "var", signed_tiny_bundle, publisher[1])
    yield a
    a.services.backend.close()
    a.services.close()


@pytest.fixture(scope="module")
def demo(module_dir, demo_bundle, demo_key):
    """The appliance serving the trained demo model (one per test module)."""
    a = make_appliance(module_dir / "demo" / "var", demo_bundle, demo_key.public_key())
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


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_appliance(request, module_dir, signed_tiny_bundle, publisher):
    """An appliance on SQLite, then on a fresh database of the test PostgreSQL server (skipped without one):
    for what only PostgreSQL refuses (over-long values, NUL, years before 1)."""
    from tests.audit.conftest import pg_database

    var = module_dir / request.param / "var"
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg_database("api")) if request.param == "postgres" else None
        a = make_appliance(var, signed_tiny_bundle, publisher[1], **({"database_url": url} if url else {}))
        yield a
        a.services.backend.close()
        a.services.close()
