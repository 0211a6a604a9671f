"""rayTLS: mutual TLS between the Ray pods, as on the bare-metal cluster (appliance/cluster/ray_tls.py).

`secret`: an init container issues each pod's certificate from the site's CA Secret (its command is run here
for real, with the variables the kubelet substitutes); `kuberay`: KubeRay >= 1.7's `tlsOptions.enabled`
(RayClusterMTLS), with nothing the operator refuses beside it. Both are checked against KubeRay's CRD and
held to the chart's hardening checks; inconsistent values fail naming the value."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography import x509

from appliance.tls import certs
from tests.conftest import one_line_error, run_cli
from tests.helm import test_hardening as hardening
from tests.helm.conftest import helm, one, pod_templates, render, requires_helm, template_args

pytestmark = requires_helm

SECRET = ["--set", "rayTLS.mode=secret", "--set", "rayTLS.caSecretName=ray-ca"]
KUBERAY = ["--set", "rayTLS.mode=kuberay", "--api-versions", "cert-manager.io/v1"]
INCREMENTAL = [
    "--set",
    "upgradeStrategy.type=NewClusterWithIncrementalUpgrade",
    "--set",
    "upgradeStrategy.gatewayClassName=site-gw",
    "--set-json",
    'networkPolicy.apiServer=[{"ipBlock":{"cidr":"10.0.0.1/32"}}]',
]
RAY_TLS_ENV = {"RAY_USE_TLS", "RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT"}
RAY_CONTAINERS = {"ray-head", "ray-worker"}


@pytest.fixture(scope="module")
def secret_mode():
    return render("cpu-test", *SECRET)


def _env(container: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_secret_mode_and_kuberay_mode_keep_every_hardening_promise(secret_mode):
    for objects in (secret_mode, render("cpu-test", *KUBERAY)):
        for check in hardening.POD_CHECKS:
            check(objects)


def test_secret_mode_gives_every_ray_container_its_pod_certificate_never_the_ca_key(secret_mode, rayservice_schema):
    rs = one(secret_mode, "RayService")
    rayservice_schema.validate(rs)
    assert "tlsOptions" not in rs["spec"]["rayClusterConfig"]  # the operator's own PKI stays off
    for name, template in pod_templates(rs).items():
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["ray-ca"]["secret"]["secretName"] == "ray-ca", name
        assert volumes["ray-pod-tls"]["emptyDir"]["medium"] == "Memory", name
        assert "ray-tls" not in volumes  # KubeRay's own volume name, refused beside tlsOptions
        inits = [c["name"] for c in spec["initContainers"]]
        assert inits.index("verify-bundles") < inits.index("ray-tls-cert"), name
        for c in [*spec["initContainers"], *spec["containers"]]:
            mounts = {m["name"]: m for m in c["volumeMounts"]}
            assert ("ray-ca" in mounts) == (c["name"] == "ray-tls-cert"), (name, c["name"])
            if c["name"] == "ray-tls-cert":  # beside the CA key: nothing else it does not need
                assert set(mounts) == {"tmp", "home", "ray-ca", "ray-pod-tls"}, name
                assert mounts["ray-ca"]["readOnly"] is True
            if c["name"] in RAY_CONTAINERS:
                env = _env(c)
                assert env["RAY_USE_TLS"] == "1", name
                assert env["RAY_TLS_SERVER_KEY"] == "/var/run/appliance/ray-tls/node.key"
                assert mounts["ray-pod-tls"] == {
                    "name": "ray-pod-tls",
                    "mountPath": "/var/run/appliance/ray-tls",
                    "readOnly": True,
                }
            elif c["name"] != "ray-tls-cert":
                assert not RAY_TLS_ENV & set(_env(c)), (name, c["name"])  # no Ray in it: no TLS of Ray's


def test_the_init_containers_command_issues_a_pod_certificate(secret_mode, tmp_path):
    """Its command, run as the kubelet would (with $(POD_IP) and KubeRay's $(FQ_RAY_IP) substituted) against
    a CA Secret's files: a certificate for the pod's IP and the head Service, from that CA, key 0600."""
    rs = one(secret_mode, "RayService")
    (init,) = [c for c in pod_templates(rs)["head"]["spec"]["initContainers"] if c["name"] == "ray-tls-cert"]
    ca_dir, out = tmp_path / "ray-ca", tmp_path / "ray-tls"
    ca_dir.mkdir()
    key = certs.new_key()
    subject = certs.name_of("site Ray CA")
    ca = certs.issue(subject, key.public_key(), subject, key, 30, ca=True)
    (ca_dir / "tls.crt").write_bytes(certs.pem(ca))
    (ca_dir / "tls.key").write_bytes(certs.pem_key(key))
    fqdn = "gpt-oss-raycluster-abcde-head-svc.gpt-oss.svc.cluster.local"
    paths = {"/etc/appliance/ray-ca": str(ca_dir), "/var/run/appliance/ray-tls": str(out)}
    kubelet = {"$(POD_IP)": "10.244.1.7", "$(FQ_RAY_IP)": fqdn, **paths}
    argv = [kubelet.get(a, a) for a in init["command"]]
    assert argv[0] == "appliance"
    run_cli(*argv[1:], check=True)
    cert = certs.parse_certs((out / "node.crt").read_bytes(), "node.crt")[0]
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert fqdn in sans.get_values_for_type(x509.DNSName)
    assert {str(a) for a in sans.get_values_for_type(x509.IPAddress)} == {"10.244.1.7", "127.0.0.1"}
    assert stat.S_IMODE(os.stat(out / "node.key").st_mode) == 0o600
    assert (out / "ca.crt").read_bytes() == certs.pem(ca)


@pytest.mark.parametrize(
    "case, named",
    [
        ("another key", "is not the EC key of the CA certificate"),
        ("a leaf, not a CA", "is not a self-signed CA certificate"),
        ("no key", "tls.key"),
    ],
)
def test_pod_cert_refuses_a_wrong_ca_secret_in_one_line(case, named, tmp_path):
    key = certs.new_key()
    subject = certs.name_of("site Ray CA")
    ca = certs.issue(subject, key.public_key(), subject, key, 30, ca=case != "a leaf, not a CA")
    (tmp_path / "tls.crt").write_bytes(certs.pem(ca))
    if case != "no key":
        (tmp_path / "tls.key").write_bytes(certs.pem_key(certs.new_key() if case == "another key" else key))
    proc = run_cli("cluster", "pod-cert", "--ca", str(tmp_path), "--out", str(tmp_path / "o"), "--address", "10.0.0.9")
    assert named in one_line_error(proc), proc.stderr
    assert not (tmp_path / "o").exists()


def test_secret_mode_reaches_the_incremental_upgrades_autoscaler(rayservice_schema):
    rs = one(render("cpu-test", *SECRET, *INCREMENTAL), "RayService")
    rayservice_schema.validate(rs)
    scaler = rs["spec"]["rayClusterConfig"]["autoscalerOptions"]
    assert RAY_TLS_ENV <= set(_env(scaler))
    assert [m["name"] for m in scaler["volumeMounts"]] == ["ray-pod-tls"]


def test_kuberay_mode_asks_the_operator_and_sets_nothing_it_refuses(rayservice_schema):
    """KubeRay's validateTLSOptions refuses RAY_TLS_* variables and its `ray-tls` volume or /etc/ray/tls mount
    beside tlsOptions (ray-operator/controllers/ray/utils/validation.go, v1.7)."""
    rs = one(render("cpu-test", *KUBERAY, *INCREMENTAL), "RayService")
    rayservice_schema.validate(rs)
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["tlsOptions"] == {"enabled": True}
    assert not RAY_TLS_ENV & set(_env(cluster["autoscalerOptions"]))
    for template in pod_templates(rs).values():
        spec = template["spec"]
        assert not {"ray-ca", "ray-pod-tls", "ray-tls"} & {v["name"] for v in spec["volumes"]}
        for c in [*spec["initContainers"], *spec["containers"]]:
            assert not RAY_TLS_ENV & set(_env(c))
            assert all(m["mountPath"] != "/etc/ray/tls" for m in c["volumeMounts"])


def test_off_is_the_default_and_adds_nothing():
    rs = one(render("default"), "RayService")
    assert "tlsOptions" not in rs["spec"]["rayClusterConfig"]
    for template in pod_templates(rs).values():
        assert not {"ray-ca", "ray-pod-tls"} & {v["name"] for v in template["spec"]["volumes"]}
        for c in template["spec"]["containers"]:
            assert not RAY_TLS_ENV & set(_env(c))


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--set", "rayTLS.mode=secret"], "rayTLS.mode=secret needs rayTLS.caSecretName"),
        (["--set", "rayTLS.caSecretName=ray-ca"], "rayTLS.caSecretName is used only by rayTLS.mode=secret"),
        (["--set", "rayTLS.mode=kuberay", "--set", "rayTLS.caSecretName=ray-ca"], "used only by rayTLS.mode=secret"),
        (["--set", "rayTLS.mode=kuberay"], "rayTLS.mode=kuberay needs cert-manager"),
        (["--set", "rayTLS.mode=on"], "/rayTLS/mode"),
        (["--set", "rayTLS.caSecretName=Ray_CA"], "/rayTLS/caSecretName"),
        (["--set", "rayTLS.enabled=true"], "rayTLS"),
    ],
)
def test_wrong_ray_tls_values_fail_naming_them(extra, named):
    proc = helm(*template_args("default", *extra), check=False)
    assert proc.returncode != 0 and named in proc.stderr, proc.stderr
