"""The USB-media path end to end with no network: verify, install into a prefix from read-only media,
an audited answer through the API with the printed admin key; refusals that stop before any change;
SIGKILL resume, upgrade keeping the audit chain, downgrade refused, rollback with its data."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import clean_env, one_line_error, requires_unshare, run_cli
from tests.integration.conftest import free_port
from tests.media.conftest import airgapped, copy_media, detach

pytestmark = [requires_unshare, pytest.mark.slow]


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    """The installer stopped the way an operator should see it: non-zero, progress then one error line."""
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and lines[-1].startswith("error: "), proc.stderr
    assert sum(line.startswith("error:") for line in lines) == 1, proc.stderr
    return lines[-1]


def install_args(prefix: Path, release: tuple[Path, Path]) -> list[str]:
    """As the user running the tests (root on purpose when that is root: the media and prefix live under
    pytest's private 0700 folders, which the appliance's own account could not enter)."""
    return [
        "--prefix",
        str(prefix),
        "--no-systemd",
        "--trust-release-key",
        str(release[1]),
        "--yes",
        "--user",
        pwd.getpwuid(os.geteuid()).pw_name,
    ]


def installed_cli(prefix: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(APPLIANCE_CONFIG=str(prefix / "etc" / "appliance.yaml"), HOME=str(prefix / "data" / "home"))
    return subprocess.run(
        [str(prefix / "current" / "venv" / "bin" / "appliance"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_verify_install_and_audited_answer(tmp_path, media_v1, release):
    listing = sorted((p.relative_to(media_v1), p.stat().st_mtime_ns) for p in media_v1.rglob("*"))
    mnt, prefix, port = tmp_path / "usb", tmp_path / "opt", free_port()
    verify = airgapped(media_v1, mnt, "--verify-only")
    assert verify.returncode == 0, verify.stderr
    assert "release key fingerprint" in verify.stderr
    proc = airgapped(media_v1, mnt, *install_args(prefix, release), "--port", str(port))
    try:
        assert proc.returncode == 0, proc.stderr + proc.stdout
        token = re.search(r"First admin API key \(shown once, store it now\): (\S+)", proc.stdout).group(1)
        assert "answer from gpt-oss-demo: The capital of France is Paris." in proc.stdout
        seq = int(re.search(r"audit record seq (\d+)", proc.stdout).group(1))
        record = installed_cli(prefix, "audit", "show", str(seq))
        assert record.returncode == 0 and "completion" in record.stdout, record.stderr
        assert installed_cli(prefix, "audit", "verify").returncode == 0
        assert token.startswith("ak-")
        assert "- wheels" in proc.stderr and (prefix / "current").is_symlink()
    finally:
        stop = airgapped(media_v1, mnt, "--prefix", str(prefix), "--stop", "--user", pwd.getpwuid(os.geteuid()).pw_name)
    assert stop.returncode == 0 and "stopped" in stop.stderr + stop.stdout, stop.stderr  # nothing left running
    assert sorted((p.relative_to(media_v1), p.stat().st_mtime_ns) for p in media_v1.rglob("*")) == listing


def test_media_verify_cli(media_v1, release, tmp_path):
    ok = run_cli("media", "verify", str(media_v1), "--trust-release-key", str(release[1]), check=True)
    assert "release key fingerprint" in ok.stdout
    bad = copy_media(media_v1, tmp_path / "m")
    detach(bad / "install.sh").write_text("#!/bin/sh\necho evil\n")
    assert "install.sh" in one_line_error(run_cli("media", "verify", str(bad)))


def _flip(path: Path) -> None:
    data = bytearray(detach(path).read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _part(media: Path, folder: str) -> Path:
    return sorted((media / folder).glob("*.part001"))[0]


CASES = {
    "flipped byte in a file": (
        lambda m, v2: _flip(m / "policies" / "access.yaml"),
        "file policies/access.yaml does not match its SHA-256",
    ),
    "flipped byte in a part": (
        lambda m, v2: _flip(_part(m, "bundles/gpt-oss-demo-1.0.0")),
        "model.onnx.data.part001 does not match its SHA-256",
    ),
    "removed part": (
        lambda m, v2: _part(m, "bundles/gpt-oss-demo-1.0.0").unlink(),
        "part bundles/gpt-oss-demo-1.0.0/model.onnx.data.part001 is missing",
    ),
    "part from another build": (
        lambda m, v2: (
            _part(m, "bundles/gpt-oss-demo-1.0.0").unlink(),
            (m / "bundles/gpt-oss-demo-1.0.0/model.onnx.data.part001").write_bytes(
                _part(v2, "bundles/gpt-oss-demo-1.0.0").read_bytes()
            ),
        ),
        "model.onnx.data.part001 is longer than listed",
    ),
    "truncated manifest": (
        lambda m, v2: detach(m / "MANIFEST.json").write_bytes((m / "MANIFEST.json").read_bytes()[:300]),
        "MANIFEST.json",
    ),
    "extra file": (
        lambda m, v2: (m / "wheels" / "extra-1.0-py3-none-any.whl").write_bytes(b"PK"),
        "wheels/extra-1.0-py3-none-any.whl is on the media but not in MANIFEST.json (extra file)",
    ),
    "truncated file": (
        lambda m, v2: detach(m / "policies" / "guardrails.yaml").write_bytes(b"x"),
        "file policies/guardrails.yaml is truncated",
    ),
    "untrusted release key": (None, "not trusted here"),
    "too little free space": (None, "not enough free space on"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refusals_change_nothing(case, tmp_path, media_v1, media_v2, release):
    change, expected = CASES[case]
    media = copy_media(media_v1, tmp_path / "media")
    prefix = tmp_path / "opt"
    trust = ["--trust-release-key", str(release[1])]
    if change is not None:
        change(media, media_v2)
    if case == "untrusted release key":
        other = tmp_path / "other.key"
        run_cli("bundle", "keygen", "--out", str(other), offline=False, check=True)
        trust = ["--trust-release-key", str(other) + ".pub"]
    tmpfs = None
    if case == "too little free space":
        prefix.mkdir()
        tmpfs = prefix
    proc = airgapped(media, tmp_path / "usb", "--prefix", str(prefix), "--no-systemd", *trust, "--yes", tmpfs=tmpfs)
    line = refused(proc)
    assert expected in line, line
    if case == "too little free space":
        assert re.search(r"needs [0-9.]+ [MG]iB there, [0-9.]+ MiB is free", line), line
    assert not prefix.exists() or not any(prefix.iterdir())


def test_resume_upgrade_downgrade_rollback(tmp_path, media_v1, media_v2, release):
    mnt, prefix = tmp_path / "usb", tmp_path / "opt"
    args = [*install_args(prefix, release), "--no-start"]
    killed = airgapped(media_v1, mnt, *args, background=True)
    state = prefix / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and killed.poll() is None:
        if state.exists() and "venv" in json.loads(state.read_text() or "{}").get("done", []):
            break
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.communicate()
    assert "complete" not in json.loads(state.read_text())["done"]
    first = airgapped(media_v1, mnt, *args)
    assert first.returncode == 0, first.stderr
    assert "- venv" not in first.stderr and "First admin API key" in first.stdout  # resumed after the venv

    up = airgapped(media_v2, mnt, *args)
    assert up.returncode == 0, up.stderr
    assert "upgrading 0.1.0 -> 0.2.0" in up.stderr and os.readlink(prefix / "current") == "releases/0.2.0"
    assert "First admin API key" not in up.stdout
    assert installed_cli(prefix, "keys", "create", "--name", "after-upgrade", "--role", "user").returncode == 0
    head = _head(installed_cli(prefix, "audit", "verify"))

    older = airgapped(media_v1, mnt, *args)
    assert "older than the installed 0.2.0" in refused(older)

    back = airgapped(
        media_v1,
        mnt,
        "--prefix",
        str(prefix),
        "--rollback",
        "--no-systemd",
        "--no-start",
        "--user",
        pwd.getpwuid(os.geteuid()).pw_name,
    )
    assert back.returncode == 0, back.stderr
    assert os.readlink(prefix / "current") == "releases/0.1.0"
    # records written since carried over, and the first verification's own record (`audit.verified`)
    assert _head(installed_cli(prefix, "audit", "verify")) == head + 1
    assert "after-upgrade" not in installed_cli(prefix, "keys", "list").stdout  # the data as before the upgrade


def _head(verify: subprocess.CompletedProcess[str]) -> int:
    """The last sequence number of a valid chain, from `appliance audit verify`."""
    assert verify.returncode == 0, verify.stderr + verify.stdout
    return int(re.search(r"head (\d+):", verify.stdout).group(1))


def test_build_is_reproducible(tmp_path, media_v1, release, bundle, demo_pub, oci_image):
    from tests.conftest import REPO
    from tests.media.conftest import build

    wheels = ["--wheelhouse", str(media_v1 / "wheels")]
    again = build(tmp_path / "again", REPO, release[0], bundle, demo_pub, *wheels, "--image", str(oci_image))
    assert (again / "MANIFEST.json").read_bytes() == (media_v1 / "MANIFEST.json").read_bytes()
    assert (again / "sbom.cdx.json").read_bytes() == (media_v1 / "sbom.cdx.json").read_bytes()
