"""values.schema.json and the chart's own checks: wrong values fail with a message that names them."""

from __future__ import annotations

import pytest

from tests.helm.conftest import helm, one, render, requires_helm, template_args

pytestmark = requires_helm


def _fails(*extra: str) -> str:
    proc = helm(*template_args("default", *extra), check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    return proc.stderr


@pytest.mark.parametrize(
    "setting, named",
    [
        ("worker.gpu=1", "'gpu' not allowed"),  # misspelt key
        ("upgradeStrategy.typ=None", "'typ' not allowed"),
        ("serv.port=8000", "'serv' not allowed"),  # misspelt section
        ("worker.gpus=one", "/worker/gpus"),  # wrong type
        ("persistence.size=lots", "/persistence/size"),
        ("upgradeStrategy.type=Recreate", "/upgradeStrategy/type"),
        ("image.pullPolicy=Always", "/image/pullPolicy"),  # would pull from outside the site's control
        ("image.digest=latest", "/image/digest"),  # tags are never accepted
    ],
)
def test_wrong_values_fail_naming_them(setting, named):
    assert named in _fails("--set", setting)


def test_registry_and_digest_are_required():
    assert "global.imageRegistry is required" in _fails("--set", "global.imageRegistry=")
    assert "image.digest is required" in _fails("--set", "image.digest=")


def test_sqlite_allows_one_worker_pod():
    assert "needs PostgreSQL" in _fails("--set", "worker.maxReplicas=2")
    render("default", "--set", "worker.maxReplicas=2", "--set", "database.urlSecret=appliance-db")


def test_incremental_upgrade_needs_its_gateway_and_api_server():
    assert "gatewayClassName is required" in _fails("--set", "upgradeStrategy.type=NewClusterWithIncrementalUpgrade")
    assert "networkPolicy.apiServer is required" in _fails(
        "--set", "upgradeStrategy.type=NewClusterWithIncrementalUpgrade", "--set", "upgradeStrategy.gatewayClassName=gw"
    )


@pytest.mark.parametrize("strategy", ["None", "NewCluster", "NewClusterWithIncrementalUpgrade"])
def test_upgrade_strategies_render_valid_rayservices(strategy, rayservice_schema):
    objects = render(
        "default",
        "--set",
        f"upgradeStrategy.type={strategy}",
        "--set",
        "upgradeStrategy.gatewayClassName=site-gateway",
        "--set-json",
        'networkPolicy.apiServer=[{"ipBlock":{"cidr":"10.0.0.1/32"}}]',
    )
    rs = one(objects, "RayService")
    rayservice_schema.validate(rs)
    spec = rs["spec"]
    assert spec["upgradeStrategy"]["type"] == strategy
    incremental = strategy == "NewClusterWithIncrementalUpgrade"
    assert ("clusterUpgradeOptions" in spec["upgradeStrategy"]) == incremental
    assert spec["rayClusterConfig"]["enableInTreeAutoscaling"] is incremental
    head = spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    # The one exception to automountServiceAccountToken: false, and only for the autoscaler's head pod.
    assert head["automountServiceAccountToken"] is incremental


def test_default_strategy_needs_no_spare_gpu():
    assert one(render("default"), "RayService")["spec"]["upgradeStrategy"] == {"type": "None"}
