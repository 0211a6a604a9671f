"""An appliance over the tiny engine bundle, in-process: used by the API and integration tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy.orm import Session

from appliance import apikeys
from appliance.api.app import create_app
from appliance.api.services import Services
from appliance.bundles import BundleStore
from appliance.config import Settings
from appliance.db import make_engine, upgrade
from appliance.serving.local_backend import LocalBackend
from appliance.signing import keys

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Appliance:
    settings: Settings
    services: Services
    tokens: dict[str, str]  # role -> key

    def client(self, role: str | None = "user", token: str | None = None) -> httpx.AsyncClient:
        token = token or (self.tokens[role] if role else None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://appliance", headers=headers, timeout=120
        )

    @property
    def app(self):
        if not hasattr(self, "_app"):
            self._app = create_app(self.services)
        return self._app


def make_appliance(
    data_dir: Path, bundle: Path, publisher_pub: Path | keys.PublicKey, also: tuple[Path, ...] = (), **overrides
) -> Appliance:
    """A migrated appliance in `data_dir` serving `bundle` and those in `also` (signed by `publisher_pub`),
    with a key per role."""
    # Many tests here fail authentication on purpose from one address: the throttle has its own tests.
    settings = Settings(
        **{
            "data_dir": data_dir,
            "policy_dir": REPO / "tests" / "pack",
            "hash_workers": 2,
            "auth_failure_burst": 100_000,
            **overrides,
        }
    )
    (settings.trust_dir).mkdir(parents=True, exist_ok=True)
    publisher = keys.load_public_key(publisher_pub) if isinstance(publisher_pub, Path) else publisher_pub
    keys.write_public_key(publisher, settings.trust_dir / "publisher.pub")
    store = BundleStore(settings.model_store, workers=2)
    for each in (bundle, *also):
        meta = store.import_bundle(each, [publisher]).metadata
        store.activate(meta.name, meta.version, [publisher])
    upgrade(settings.database_url)
    tokens = {}
    with Session(make_engine(settings.database_url)) as session:
        for role in ("user", "auditor", "admin"):
            tokens[role], _ = apikeys.create_key(session, f"test-{role}", role)
    services = Services.from_settings(settings, LocalBackend.from_store(settings))
    return Appliance(settings, services, tokens)
