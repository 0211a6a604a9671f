"""One local Ray for the whole session (starting Ray costs ~10 s), with the appliance's air-gap settings."""

from __future__ import annotations

import shutil
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.appliance import REPO, make_appliance


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def deployed(data_dir: Path, bundle: Path, publisher_pub, port: int, **overrides):
    """The appliance deployed on the shared Ray at http://127.0.0.1:PORT, with keys for each role; the
    policy pack is the shipped one with the admin's rate limits raised (tests drive load as admin)."""
    from ray import serve

    from appliance.serving.app import build_app

    policies = data_dir.parent / "policies"
    shutil.copytree(REPO / "tests" / "pack", policies)
    access = yaml.safe_load((policies / "access.yaml").read_text())
    access["access"]["roles"]["admin"]["rate"] = {"requests_per_minute": 100000, "tokens_per_minute": 10000000}
    (policies / "access.yaml").write_text(yaml.safe_dump(access))
    a = make_appliance(data_dir, bundle, publisher_pub, policy_dir=policies, **overrides)
    a.services.backend.close()
    serve.run(build_app(a.settings.model_dump(mode="json")), name="appliance", route_prefix="/")
    a.base_url = f"http://127.0.0.1:{port}"
    try:
        yield a
    finally:
        serve.delete("appliance")
        a.services.close()


@pytest.fixture(scope="module")
def served(ray_session, module_dir, signed_tiny_bundle, publisher):
    with deployed(
        module_dir / "served" / "var", signed_tiny_bundle, publisher[1], ray_session, engine_max_batch_size=8
    ) as a:
        yield a
