"""The chart rendered by the real helm CLI (pinned, fetched by scripts/helm.sh at setup time, never here).

Every test here is offline: helm renders locally, kubernetes-validate carries its schemas, KubeRay's CRDs
come from ../shared/schemas/kuberay/. Where a tool or the CRDs are absent the tests skip and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

CHART = REPO / "helm" / "appliance"
PROFILES = {
    "default": None,
    "cpu-test": CHART / "values-cpu-test.yaml",
    "20b": CHART / "values-20b.yaml",
    "120b": CHART / "values-120b.yaml",
}
SITE = ["--set", "global.imageRegistry=registry.site.local:5000", "--set", "image.digest=sha256:" + "ab" * 32]


def kuberay_crds() -> Path | None:
    """../shared/schemas/kuberay beside the project (APPLIANCE_SHARED_DIR names another shared/)."""
    for shared in (os.environ.get("APPLIANCE_SHARED_DIR"), REPO.parent / "shared", REPO.parents[1] / "shared"):
        if shared and (Path(shared) / "schemas" / "kuberay" / "ray.io_rayservices.yaml").is_file():
            return Path(shared) / "schemas" / "kuberay"
    return None


KUBERAY_CRDS = kuberay_crds()
KUBE_VERSION = "1.30.0"


def helm_binary() -> str | None:
    """APPLIANCE_HELM, else the pinned copy scripts/helm.sh puts in var/tools, else a helm on PATH."""
    for candidate in (os.environ.get("APPLIANCE_HELM"), REPO / "var" / "tools" / "helm", shutil.which("helm")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


HELM = helm_binary()
requires_helm = pytest.mark.skipif(
    HELM is None,
    reason="no helm binary: run `bash scripts/helm.sh` (CI setup "
    "does) to fetch the pinned, checksum-checked helm into var/tools/",
)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [HELM, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "HELM_CACHE_HOME": "/tmp/appliance-helm-cache",
        },
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr}")
    return proc


def template_args(profile: str, *extra: str) -> list[str]:
    values = PROFILES[profile]
    return [
        "template",
        "appliance",
        str(CHART),
        "--namespace",
        "gpt-oss",
        "--kube-version",
        KUBE_VERSION,
        "--api-versions",
        "ray.io/v1",
        *(["-f", str(values)] if values else []),
        *SITE,
        *extra,
    ]


def render(profile: str, *extra: str) -> list[dict]:
    """The chart's objects for one values profile (plus any extra helm arguments)."""
    out = helm(*template_args(profile, *extra)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="session", params=list(PROFILES))
def profile(request) -> str:
    if HELM is None:
        pytest.skip("no helm binary: run `bash scripts/helm.sh` to fetch the pinned helm into var/tools/")
    return request.param


@pytest.fixture(scope="session")
def rendered(profile) -> list[dict]:
    return render(profile)


def one(objects: list[dict], kind: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def pod_templates(rayservice: dict) -> dict[str, dict]:
    """Every pod template of the RayService: the head and each worker group."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    out = {"head": cluster["headGroupSpec"]["template"]}
    for group in cluster["workerGroupSpecs"]:
        out[f"worker/{group['groupName']}"] = group["template"]
    return out


def serve_config(rayservice: dict) -> dict:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def _closed(schema: dict) -> dict:
    """The CRD's schema with every object that lists its properties closed to others (misspellings fail)."""
    if isinstance(schema, dict):
        schema = {k: _closed(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_closed(v) for v in schema]
    return schema


@pytest.fixture(scope="session")
def rayservice_schema() -> jsonschema.protocols.Validator:
    if KUBERAY_CRDS is None:
        pytest.skip("KubeRay's CRDs are not here (../shared/schemas/kuberay/): RayService not schema-checked")
    crd = yaml.safe_load((KUBERAY_CRDS / "ray.io_rayservices.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _closed(version["schema"]["openAPIV3Schema"])
    # The CRD leaves metadata to the API server (a bare object); the chart's own labels are tested elsewhere.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)  # checked once here, not per validation (the CRD is 1 MB)
