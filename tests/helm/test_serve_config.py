"""The rendered serveConfigV2 is a valid Serve config whose import_path builds the real application."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helm.conftest import one, render, requires_helm, serve_config

pytestmark = requires_helm


@pytest.fixture(scope="module")
def config() -> dict:
    return serve_config(one(render("cpu-test"), "RayService"))


def test_ray_serve_accepts_it_as_the_dashboard_would(config):
    """KubeRay PUTs this config (as JSON) to /api/serve/applications/; Serve parses it with this schema."""
    from ray.serve.schema import ServeDeploySchema

    parsed = ServeDeploySchema.model_validate(config)
    (app,) = parsed.applications
    assert app.runtime_env in (None, {}), "no runtime_env: everything runs from the image"
    assert app.name == "appliance" and app.route_prefix == "/"
    assert parsed.http_options.host == "0.0.0.0" and parsed.http_options.port == 8000


def test_import_path_is_the_builder_of_appliance_serve(config):
    from ray._common.utils import import_attr

    from appliance.serving import app as serving_app

    (app,) = config["applications"]
    assert import_attr(app["import_path"]) is serving_app.build_app
    cli = (Path(serving_app.__file__).parents[1] / "cli" / "serve.py").read_text()
    assert "from appliance.serving.app import build_app" in cli  # `appliance serve` builds the same app


def test_args_build_the_real_application(config, tmp_path, signed_tiny_bundle, publisher):
    """The chart's args (paths moved under a temporary folder) are valid Settings and build both deployments."""
    from ray.serve import Application

    from appliance.bundles import BundleStore
    from appliance.config import Settings
    from appliance.serving.app import build_app

    (app,) = config["applications"]
    args = dict(app["args"])
    Settings(**args)  # every key is a real setting (unknown keys are refused)
    for key in ("data_dir", "trust_dir", "keys_dir", "policy_dir"):
        args[key] = str(tmp_path / args[key].strip("/"))
    store = BundleStore(Path(args["data_dir"]) / "models")
    store.import_bundle(signed_tiny_bundle, [publisher[0].public_key()])
    store.mark_active("tiny", "1.0.0")
    built = build_app(args)
    assert isinstance(built, Application)
    gateway = built._bound_deployment
    assert gateway.name == "gateway"
    (llm,) = [a for a in gateway.init_args if hasattr(a, "_bound_deployment")]
    assert llm._bound_deployment.name == "llm"
    assert llm._bound_deployment.ray_actor_options["num_gpus"] == 0  # a cpu-* bundle asks for no GPU
    # the chart's head pod has num-cpus 0: a gateway pinned there would never start (no cluster.json here)
    assert "resources" not in gateway.ray_actor_options or not gateway.ray_actor_options["resources"]
    shared = gateway.init_args[-1]
    assert shared["engine_max_batch_size"] == 4 and shared["log_format"] == "json"  # cpu-test profile values
