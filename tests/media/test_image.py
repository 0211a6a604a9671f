"""The image build's pure helpers (appliance/media/image.py); the image itself is `make image` (minutes)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from appliance.media.image import installed_wheels, main
from appliance.media.manifest import MediaError


def _report(path: Path, names: list[str]) -> Path:
    items = [{"download_info": {"url": f"file:///tmp/wheels/{n}"}} for n in names]
    path.write_text(json.dumps({"version": "1", "install": items}))
    return path


def test_sbom_names_exactly_the_installed_wheels(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for n in (
        "ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl",
        "numpy-2.0.0-cp311-cp311-x.whl",
        "extra-1-py3-none-any.whl",
    ):
        (wheels / n).write_bytes(n.encode())
    report = _report(
        tmp_path / "r.json", ["ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl", "numpy-2.0.0-cp311-cp311-x.whl"]
    )
    out = tmp_path / "out" / "image.cdx.json"
    assert (
        main(["sbom", "--report", str(report), "--wheels", str(wheels), "--out", str(out), "--version", "0.1.0"]) == 0
    )
    bom = json.loads(out.read_text())
    assert bom["metadata"]["component"]["name"] == "appliance-image"
    got = {c["name"]: c["hashes"][0]["content"] for c in bom["components"]}
    assert got == {
        "ray": hashlib.sha256(b"ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl").hexdigest(),
        "numpy": hashlib.sha256(b"numpy-2.0.0-cp311-cp311-x.whl").hexdigest(),
    }


def test_torch_in_the_install_is_refused(tmp_path):
    (tmp_path / "torch-2.13.0-cp311-cp311-x.whl").write_bytes(b"x")
    with pytest.raises(MediaError, match="torch"):
        installed_wheels(_report(tmp_path / "r.json", ["torch-2.13.0-cp311-cp311-x.whl"]), tmp_path)


def test_bad_report_is_one_error_line(tmp_path, capsys):
    (tmp_path / "r.json").write_text("{}")
    assert (
        main(
            [
                "sbom",
                "--report",
                str(tmp_path / "r.json"),
                "--wheels",
                str(tmp_path),
                "--out",
                str(tmp_path / "o.json"),
                "--version",
                "0.1.0",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
