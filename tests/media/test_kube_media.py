"""Kubernetes sites install from the stick too: the media carry the chart package (`helm package`, its values
schema inside) and the OCI image archives, each listed with its SHA-256 in the signed manifest and checked by
`install.sh --verify-only`; a changed chart or image archive is refused in one line. The image here is a small
OCI archive made by the test: the test is about listing and verifying, `make image` builds real ones."""

from __future__ import annotations

import hashlib
import json
import tarfile

import pytest

from tests.conftest import one_line_error, run_cli
from tests.helm.conftest import helm
from tests.media.conftest import airgapped, copy_media, oci_archive
from tests.media.test_install import _flip, refused


def _listed(media) -> dict[str, dict]:
    return {f["path"]: f for f in json.loads((media / "MANIFEST.json").read_text())["files"]}


def test_the_manifest_lists_the_chart_and_the_images_with_their_digests(media_v1, tmp_path):
    manifest = json.loads((media_v1 / "MANIFEST.json").read_text())
    kube = manifest["extra"]["kubernetes"]
    assert kube == {"chart": "kubernetes/appliance-0.1.0.tgz", "images": ["kubernetes/images/appliance-0.1.0.oci.tar"]}
    listed = _listed(media_v1)
    for path in [kube["chart"], *kube["images"], "kubernetes/images/appliance-0.1.0.sbom.cdx.json"]:
        assert listed[path]["sha256"] == hashlib.sha256((media_v1 / path).read_bytes()).hexdigest(), path
    with tarfile.open(media_v1 / kube["chart"]) as tar:
        assert {"appliance/values.schema.json", "appliance/policies/access.yaml"} <= set(tar.getnames())
    # The stick's package is the chart: it renders, and its schema refuses a misspelt value.
    site = ["--set", "global.imageRegistry=registry.site.local", "--set", "image.digest=sha256:" + "ab" * 32]
    chart = str(media_v1 / kube["chart"])
    assert "kind: RayService" in helm("template", "gpt-oss", chart, "--api-versions", "ray.io/v1", *site).stdout
    bad = helm("template", "gpt-oss", chart, *site, "--set", "rayTLS.mod=secret", check=False)
    assert bad.returncode != 0 and "rayTLS" in bad.stderr


def test_verify_only_passes_the_media_as_built(media_v1, tmp_path):
    ok = airgapped(media_v1, tmp_path / "usb", "--verify-only")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    "path", ["kubernetes/appliance-0.1.0.tgz", "kubernetes/images/appliance-0.1.0.oci.tar"], ids=["chart", "image"]
)
def test_verify_only_refuses_a_changed_chart_or_image_in_one_line(path, media_v1, tmp_path):
    media = copy_media(media_v1, tmp_path / "media")
    _flip(media / path)
    line = refused(airgapped(media, tmp_path / "usb", "--verify-only"))
    assert f"file {path} does not match its SHA-256" in line, line


def _nested(tmp_path):
    fake = tmp_path / "appliance-0.1.0.oci.tar"
    with tarfile.open(fake, "w") as tar:
        tar.add(oci_archive(tmp_path / "x.oci.tar"), arcname="image.tar")  # a tar, but no OCI layout at its top
    return ["--image", str(fake)]


@pytest.mark.parametrize(
    "args, named",
    [
        (_nested, "not an OCI image layout"),
        (lambda d: ["--image", str(oci_archive(d / "x.oci.tar").with_suffix(""))], "not an OCI archive file"),
        (lambda d: ["--helm", str(d / "no-helm")], "--helm"),
    ],
    ids=["nested tar", "not .oci.tar", "missing helm"],
)
def test_wrong_kubernetes_inputs_are_refused_in_one_line_before_anything_is_built(args, named, tmp_path, release):
    out = tmp_path / "m"
    proc = run_cli("media", "build", "--out", str(out), "--release-key", str(release[0]), *args(tmp_path))
    assert named in one_line_error(proc)
    assert not out.exists() and not out.with_name("m.partial").exists()
