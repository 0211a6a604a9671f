"""tls.termination: `ingress` (the default, unchanged objects) or `front`: the appliance's TLS front as a
hardened sidecar of every worker pod, the API Service and NetworkPolicy on its port, the gateways told the
client-certificate rules. Front mode is held to the same hardening checks as every profile."""

from __future__ import annotations

import pytest

from appliance.config import Settings
from tests.helm import test_hardening as hardening
from tests.helm.conftest import helm, one, pod_templates, render, requires_helm, serve_config, template_args

pytestmark = requires_helm

FRONT = [
    "--set",
    "tls.termination=front",
    "--set",
    "tls.secretName=api-tls",
    "--set",
    "tls.peerSecretName=api-peer",
    "--set",
    "tls.clientAuth=required",
    "--set-json",
    'tls.rolesRequireClientCert=["admin"]',
    "--set-json",
    'networkPolicy.apiFrom=[{"namespaceSelector":{"matchLabels":{"team":"apps"}}}]',
]


@pytest.fixture(scope="module")
def front():
    return render("cpu-test", *FRONT)


@pytest.mark.parametrize("check", hardening.POD_CHECKS)
def test_front_mode_keeps_every_hardening_promise(front, check):
    check(front)


def test_front_mode_runs_the_tls_front_beside_serve(front, rayservice_schema):
    rs = one(front, "RayService")
    rayservice_schema.validate(rs)
    (worker,) = [t for name, t in pod_templates(rs).items() if name.startswith("worker/")]
    sidecar = next(c for c in worker["spec"]["containers"] if c["name"] == "tls-front")
    assert sidecar["command"] == ["appliance", "tls", "front", "--upstream", "8000"]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["APPLIANCE_PORT"] == "8443" and env["APPLIANCE_TLS_CLIENT_AUTH"] == "required"
    secrets = {v["secret"]["secretName"] for v in worker["spec"]["volumes"] if "secret" in v}
    assert {"api-tls", "api-peer"} <= secrets
    args = serve_config(rs)["applications"][0]["args"]
    settings = Settings(**args)  # the gateways enforce what the front verifies
    assert settings.tls_client_auth == "required" and settings.tls_roles_require_client_cert == ["admin"]
    ports = {p["name"]: p["port"] for p in rs["spec"]["serveService"]["spec"]["ports"]}
    assert ports["https"] == 8443
    (api,) = [o for o in front if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-api")]
    assert api["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8443}]  # plain HTTP stays in the pod


def test_ingress_mode_is_the_default_and_adds_nothing():
    rs = one(render("default"), "RayService")
    assert "tls_client_auth" not in serve_config(rs)["applications"][0]["args"]
    assert {p["name"] for p in rs["spec"]["serveService"]["spec"]["ports"]} == {"serve"}


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--set", "tls.termination=front"], "needs tls.secretName"),
        (["--set", "tls.clientAuth=required"], "need tls.termination=front"),
        (["--set", "tls.termination=nginx"], "/tls/termination"),
    ],
)
def test_wrong_tls_values_fail_naming_them(extra, named):
    proc = helm(*template_args("default", *extra), check=False)
    assert proc.returncode != 0 and named in proc.stderr, proc.stderr
