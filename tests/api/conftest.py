"""An appliance over the tiny engine bundle, served in-process through httpx's ASGI transport."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.orm import Session

from appliance import apikeys
from appliance.api.app import create_app
from appliance.api.services import Services
from appliance.bundles import BundleStore
from appliance.bundles.build import build_bundle
from appliance.config import Settings
from appliance.db import make_engine, upgrade
from appliance.serving.local_backend import LocalBackend
from appliance.signing import keys

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Appliance:
    settings: Settings
    services: Services
    tokens: dict[str, str]  # role -> key

    def client(self, role: str | None = "user", token: str | None = None) -> httpx.AsyncClient:
        token = token or (self.tokens[role] if role else None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://appliance",
                                 headers=headers, timeout=120)

    @property
    def app(self):
        if not hasattr(self, "_app"):
            self._app = create_app(self.services)
        return self._app


@pytest.fixture(scope="session")
def publisher(tmp_path_factory) -> tuple[keys.PrivateKey, Path]:
    d = tmp_path_factory.mktemp("publisher")
    key = keys.generate_private_key()
    keys.write_public_key(key.public_key(), d / "publisher.pub")
    return key, d / "publisher.pub"


@pytest.fixture(scope="session")
def signed_tiny_bundle(tiny_checkpoint, tmp_path_factory, publisher) -> Path:
    return build_bundle(tiny_checkpoint, tmp_path_factory.mktemp("api-bundle") / "tiny", profile="cpu-fp32",
                        name="tiny", version="1.0.0", key=publisher[0])


def make_appliance(data_dir: Path, bundle: Path, publisher_pub: Path, **overrides) -> Appliance:
    settings = Settings(data_dir=data_dir, policy_dir=REPO / "policies", hash_workers=2, **overrides)
    (settings.trust_dir).mkdir(parents=True, exist_ok=True)
    (settings.trust_dir / "publisher.pub").write_bytes(publisher_pub.read_bytes())
    store = BundleStore(settings.model_store, workers=2)
    trusted = [keys.load_public_key(publisher_pub)]
    store.import_bundle(bundle, trusted)
    store.activate("tiny", "1.0.0", trusted)
    upgrade(settings.database_url)
    tokens = {}
    with Session(make_engine(settings.database_url)) as session:
        for role in ("user", "auditor", "admin"):
            tokens[role], _ = apikeys.create_key(session, f"test-{role}", role)
    services = Services.from_settings(settings, LocalBackend.from_store(settings))
    return Appliance(settings, services, tokens)


@pytest.fixture(scope="module")
def appliance(tmp_path_factory, signed_tiny_bundle, publisher):
    a = make_appliance(tmp_path_factory.mktemp("appliance") / "var", signed_tiny_bundle, publisher[1])
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
