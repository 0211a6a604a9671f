"""helm lint, helm template per profile, and every rendered object against its schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.helm.conftest import CHART, KUBE_VERSION, PROFILES, SITE, helm, one, render, requires_helm

pytestmark = requires_helm


@pytest.mark.parametrize("profile", list(PROFILES))
def test_lint_strict(profile):
    values = PROFILES[profile]
    proc = helm("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []), *SITE)
    assert "0 chart(s) failed" in proc.stdout


def test_objects(rendered):
    kinds = sorted(o["kind"] for o in rendered)
    assert kinds.count("RayService") == 1 and kinds.count("PersistentVolumeClaim") == 1
    assert {"ConfigMap", "NetworkPolicy"} <= set(kinds)
    assert "Secret" not in kinds, "Secrets are created by the site, never rendered from values"


def _kubernetes_validate() -> str:
    exe = Path(sys.executable).with_name("kubernetes-validate")
    if not exe.exists():
        pytest.skip("kubernetes-validate is not installed (dev extra)")
    return str(exe)


def test_kubernetes_schemas_strict(rendered, tmp_path):
    """Every built-in object validates against Kubernetes' own schema, unknown fields refused."""
    builtin = [o for o in rendered if o["apiVersion"] != "ray.io/v1"]
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(builtin))
    proc = subprocess.run(
        [_kubernetes_validate(), "--strict", "-k", KUBE_VERSION, str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kubernetes_validate_refuses_a_wrong_field(rendered, tmp_path):
    """The check above can fail: a misspelt field in the PVC is caught."""
    pvc = one(rendered, "PersistentVolumeClaim")
    pvc["spec"]["acessModes"] = pvc["spec"].pop("accessModes")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(pvc))
    proc = subprocess.run(
        [_kubernetes_validate(), "--strict", "-k", KUBE_VERSION, str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "acessModes" in proc.stdout + proc.stderr


def test_rayservice_against_kuberay_crd(rendered, rayservice_schema):
    rayservice_schema.validate(one(rendered, "RayService"))


def test_crd_check_refuses_a_misspelt_field(rayservice_schema):
    rs = one(render("default"), "RayService")
    rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["securityContex"] = {}
    with pytest.raises(jsonschema.ValidationError, match="securityContex"):
        rayservice_schema.validate(rs)


def test_nothing_reaches_out(rendered):
    """No URL but Ray's blackholed usage-report address; no runtime_env, working_dir, pip, or tag."""
    text = yaml.safe_dump_all(rendered)
    urls = {w for w in text.replace('"', " ").split() if "://" in w}
    assert urls == {"http://127.0.0.1:9/"}, urls
    for word in ("runtime_env", "working_dir", "pip:", ":latest"):
        assert word not in text


def test_package(tmp_path):
    """The chart packages (what the media carries), with the default policy pack inside it."""
    helm("package", str(CHART), "-d", str(tmp_path))
    (archive,) = tmp_path.glob("appliance-*.tgz")
    listing = subprocess.run(["tar", "tzf", str(archive)], capture_output=True, text=True, check=True).stdout
    assert "appliance/policies/access.yaml" in listing and "appliance/values.schema.json" in listing
    assert "policies/tests/" not in listing
    shutil.rmtree(tmp_path)
