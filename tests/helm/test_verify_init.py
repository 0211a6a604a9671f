"""The init container's command, run as the pod would run it: a tampered active bundle keeps Ray from starting."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import one_line_error, run_cli
from tests.helm.conftest import one, pod_templates, render, requires_helm

pytestmark = requires_helm


@pytest.fixture(scope="module")
def init_container() -> dict:
    return pod_templates(one(render("cpu-test"), "RayService"))["worker/cpu"]["spec"]["initContainers"][0]


@pytest.fixture
def pod(tmp_path, init_container, signed_tiny_bundle, publisher):
    """The pod's paths under tmp_path: trust keys where the Secret is mounted, a bundle imported and active."""
    env = {
        e["name"]: tmp_path.as_posix() + e["value"]
        for e in init_container["env"]
        if e["name"] in ("APPLIANCE_DATA_DIR", "APPLIANCE_TRUST_DIR")
    }
    trust = tmp_path / "etc/appliance/trust"
    trust.mkdir(parents=True)
    shutil.copy(publisher[1], trust / "publisher.pub")
    run_cli("bundle", "import", str(signed_tiny_bundle), "--activate", env=env, check=True)
    return env


def test_verified_bundles_let_the_pod_start(init_container, pod):
    proc = run_cli(*init_container["command"][1:], env=pod, check=True)
    assert "OK tiny 1.0.0" in proc.stdout


def test_a_tampered_bundle_stops_the_pod_with_one_line(init_container, pod, tmp_path):
    stored = tmp_path / "var/lib/appliance/models/tiny/1.0.0"
    victim = max(
        (p for p in stored.rglob("*") if p.is_file() and p.name != "model.sig"), key=lambda p: p.stat().st_size
    )
    with open(victim, "r+b") as f:
        f.write(b"\x00" * 16)
    line = one_line_error(run_cli(*init_container["command"][1:], env=pod))
    assert victim.name in line or "does not match" in line


def test_an_empty_store_has_nothing_to_verify(init_container, tmp_path):
    env = {"APPLIANCE_DATA_DIR": str(tmp_path / "data"), "APPLIANCE_TRUST_DIR": str(tmp_path / "trust")}
    proc = run_cli(*init_container["command"][1:], env=env, check=True)
    assert "nothing to verify" in proc.stdout


def test_folder_or_active_not_both(tmp_path):
    assert "--help" in one_line_error(run_cli("bundle", "verify", str(tmp_path), "--active", data_dir=tmp_path))
