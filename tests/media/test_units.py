"""The systemd units' hardening, measured by systemd itself where systemd-analyze exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.media.units import render
from tests.conftest import REPO

UNITS = sorted((REPO / "installer" / "systemd").glob("*.service"))


def rendered(tmp_path: Path, template: Path) -> Path:
    out = tmp_path / template.name
    out.write_text(
        render(
            template.read_text(),
            prefix=Path("/opt/appliance"),
            data=Path("/var/lib/appliance"),
            allow="10.1.0.0/24",
            head="10.1.0.1:6379",
        )
    )
    return out


@pytest.mark.parametrize("template", UNITS, ids=lambda p: p.stem)
def test_unit_is_hardened(template, tmp_path):
    text = rendered(tmp_path, template).read_text()
    assert "@" not in re.sub(
        r"@system-service|@privileged|@resources|@mount|@swap|@reboot|@raw-io|@module|"
        r"@obsolete|@clock|@debug|@cpu-emulation",
        "",
        text,
    )
    assert re.findall(r"^ReadWritePaths=(.*)$", text, re.M) == ["/var/lib/appliance"]
    assert "IPAddressDeny=any" in text and "IPAddressAllow=localhost 10.1.0.0/24" in text
    # the GPU's device nodes only, or (the audit forwarder) no devices at all
    assert ("DeviceAllow=/dev/nvidiactl rw" in text) != ("PrivateDevices=yes" in text)
    assert "User=appliance" in text and "CapabilityBoundingSet=\n" in text
    assert re.findall(r"^LimitNOFILE=(\d+)$", text, re.M) == ["65536"]  # the front's connection caps fit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("template", UNITS, ids=lambda p: p.stem)
def test_exposure_at_most_2(template, tmp_path):
    unit = rendered(tmp_path, template)
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", unit.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 2.0, proc.stdout


def test_the_head_units_take_a_clusters_tls_and_address_from_its_file():
    for name in ("appliance-ray-head.service", "appliance-serve.service"):
        text = rendered_text(name)
        assert "EnvironmentFile=-/var/lib/appliance/keys/cluster/ray.env\n" in text
    head = rendered_text("appliance-ray-head.service")
    assert "--node-ip-address=${APPLIANCE_RAY_NODE_IP} --port=${APPLIANCE_RAY_PORT}" in head
    assert "Environment=APPLIANCE_RAY_NODE_IP=127.0.0.1 APPLIANCE_RAY_PORT=6379\n" in head  # no cluster: as before


def rendered_text(name: str) -> str:
    template = REPO / "installer" / "systemd" / name
    return render(template.read_text(), prefix=Path("/opt/appliance"), data=Path("/var/lib/appliance"))
