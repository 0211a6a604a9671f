"""Every pod of every profile, read from the rendered RayService, against each hardening promise.

The KubeRay operator copies the ray container's securityContext into the init container it adds
(wait-gcs-ready) and adds /dev/shm as a memory emptyDir; nothing it adds loosens what is asserted here.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.helm.conftest import one, pod_templates, render, requires_helm

pytestmark = requires_helm

WRITABLE = {"data", "tmp", "home", "keys", "policy-dir"}  # the data volume and emptyDirs, nothing else
IMAGE = re.compile(r"^registry\.site\.local:5000/gpt-oss-appliance@sha256:[a-f0-9]{64}$")


def _pods(rendered):
    return pod_templates(one(rendered, "RayService")).items()


def _containers(spec):
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_pod_security_context(rendered):
    for name, template in _pods(rendered):
        spec = template["spec"]
        ctx = spec["securityContext"]
        assert ctx["runAsNonRoot"] is True, name
        assert ctx["runAsUser"] == 10001 and ctx["runAsGroup"] == 10001 and ctx["fsGroup"] == 10001, name
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), (name, host)


def test_container_security_context(rendered):
    for name, template in _pods(rendered):
        for c in _containers(template["spec"]):
            ctx = c["securityContext"]
            where = f"{name}/{c['name']}"
            assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 10001, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False and ctx["privileged"] is False, where
            assert ctx["capabilities"] == {"drop": ["ALL"]}, where
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert IMAGE.match(c["image"]), (where, c["image"])


def test_only_emptydirs_and_the_data_volume_are_writable(rendered):
    for name, template in _pods(rendered):
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert not any("hostPath" in v for v in volumes.values()), name
        for v in WRITABLE - {"data"}:
            assert "emptyDir" in volumes[v], (name, v)
        assert "persistentVolumeClaim" in volumes["data"]
        for c in _containers(spec):
            for m in c["volumeMounts"]:
                writable = m["name"] in WRITABLE or "emptyDir" in volumes[m["name"]]  # rayTLS's pod certificate
                assert m.get("readOnly") or writable, (name, c["name"], m)
            assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp", "/home/appliance"}


def test_verify_before_ray_starts(rendered):
    for name, template in _pods(rendered):
        spec = template["spec"]
        first = spec["initContainers"][0]
        assert first["name"] == "verify-bundles", name
        assert first["command"] == ["appliance", "bundle", "verify", "--active"]
        assert first["terminationMessagePolicy"] == "FallbackToLogsOnError"  # the reason shows in the status
        mounts = {m["mountPath"]: m for m in first["volumeMounts"]}
        assert mounts["/etc/appliance/trust"]["readOnly"] is True
        env = {e["name"]: e.get("value") for e in first["env"]}
        assert env["APPLIANCE_TRUST_DIR"] == "/etc/appliance/trust"
        assert env["APPLIANCE_DATA_DIR"] == "/var/lib/appliance"


def test_usage_stats_off_and_token_auth_on(rendered):
    rs = one(rendered, "RayService")
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": "appliance-ray-token"}
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for g in groups:
        assert g["rayStartParams"]["disable-usage-stats"] == "true"
    for name, template in _pods(rendered):
        for c in _containers(template["spec"]):
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env["RAY_USAGE_STATS_ENABLED"] == "0", (name, c["name"])
            assert env["RAY_USAGE_STATS_REPORT_URL"] == "http://127.0.0.1:9/"


# What every pod keeps whatever the values (tls.termination, rayTLS): their modules run these on their renders.
POD_CHECKS = [
    test_pod_security_context,
    test_container_security_context,
    test_only_emptydirs_and_the_data_volume_are_writable,
    test_verify_before_ray_starts,
    test_usage_stats_off_and_token_auth_on,
]


def test_secrets_are_referenced_never_rendered(rendered):
    assert not [o for o in rendered if o["kind"] == "Secret"]
    for _, template in _pods(rendered):
        secrets = {v["secret"]["secretName"] for v in template["spec"]["volumes"] if "secret" in v}
        assert secrets == {"appliance-trust", "appliance-audit-key"}
    text = yaml.safe_dump_all(rendered)
    assert "BEGIN" not in text and "PRIVATE KEY" not in text


def _policies(objects):
    return {
        o["metadata"]["name"].removeprefix("appliance-"): o["spec"] for o in objects if o["kind"] == "NetworkPolicy"
    }


def test_network_policies_default_deny(rendered):
    pols = _policies(rendered)
    deny = pols["default-deny"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    own = {"app.kubernetes.io/name": "appliance", "app.kubernetes.io/instance": "appliance"}
    assert deny["podSelector"] == {"matchLabels": own}
    assert "api" not in pols, "with no networkPolicy.apiFrom nobody may reach the API"
    egress = pols["ray"]["egress"]
    assert len(egress) == 2  # own pods, DNS (no database named)
    assert egress[0]["to"] == [{"podSelector": {"matchLabels": own}}]
    assert egress[1]["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert {p["port"] for p in egress[1]["ports"]} == {53}
    ray_ports = {p["port"] for p in egress[0]["ports"]}
    assert 8265 not in ray_ports and 8000 not in ray_ports  # dashboard and API are not Ray-internal
    dash = pols["dashboard"]
    assert dash["podSelector"]["matchLabels"]["appliance/role"] == "head"
    (rule,) = dash["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8265}]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}},
        }
    ]


@pytest.mark.parametrize("profile_name", ["default"])
def test_network_policies_api_and_database_from_values(profile_name):
    objects = render(
        profile_name,
        "--set",
        "database.urlSecret=appliance-db",
        "--set-json",
        'database.networkPeers=[{"ipBlock":{"cidr":"10.20.0.5/32"}}]',
        "--set-json",
        'networkPolicy.apiFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"apps"}}}]',
    )
    pols = _policies(objects)
    (rule,) = pols["api"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    db = pols["ray"]["egress"][2]
    assert db == {"to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}], "ports": [{"protocol": "TCP", "port": 5432}]}
    for template in pod_templates(one(objects, "RayService")).values():
        for c in _containers(template["spec"]):
            (url,) = [e for e in c["env"] if e["name"] == "APPLIANCE_DATABASE_URL"]
            assert url["valueFrom"] == {"secretKeyRef": {"name": "appliance-db", "key": "url"}}


def test_gpu_profiles_ask_for_gpus(profile, rendered):
    (group,) = one(rendered, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) == (profile != "cpu-test")
    if profile != "cpu-test":
        assert limits["nvidia.com/gpu"] == "1" and group["groupName"] == "gpu"
