"""The head's upgrade from media with cluster workers behind it (docs/cluster-upgrade.md): refused with one line
naming them and nothing changed; with --allow-older-workers upgraded, and their rejoin files carry the new
version (a worker installed from the old media is refused by them: tests/cluster/test_worker_install.py)."""

from __future__ import annotations

import os

import pytest

from appliance.cluster import invite
from tests.conftest import requires_unshare
from tests.media.conftest import airgapped
from tests.media.test_install import install_args, installed_cli, refused

pytestmark = [requires_unshare, pytest.mark.slow]
PASS = "upgrade test passphrase\n"


def test_a_head_upgrade_does_not_leave_its_workers_behind_silently(tmp_path, media_v1, media_v2, release):
    mnt, prefix = tmp_path / "usb", tmp_path / "opt"
    args = [*install_args(prefix, release), "--no-start"]
    first = airgapped(media_v1, mnt, *args)
    assert first.returncode == 0, first.stderr
    (tmp_path / "pass").write_text(PASS)
    for argv in (
        ["cluster", "init", "--address", "10.9.0.1", "--name", "head"],
        ["cluster", "invite", "--name", "gpu2", "--address", "10.9.0.2", "--passphrase-file", str(tmp_path / "pass"),
         "--out", str(tmp_path / "gpu2.join")],
    ):  # fmt: skip
        proc = installed_cli(prefix, *argv)
        assert proc.returncode == 0, proc.stderr

    line = refused(airgapped(media_v2, mnt, *args))
    assert "cluster workers gpu2 run another version than 0.2.0" in line and "docs/cluster-upgrade.md" in line, line
    assert "--allow-older-workers" in line
    assert os.readlink(prefix / "current") == "releases/0.1.0", "refused before any change"

    up = airgapped(media_v2, mnt, *args, "--allow-older-workers")
    assert up.returncode == 0, up.stderr
    assert "warning: cluster workers gpu2" in up.stderr and os.readlink(prefix / "current") == "releases/0.2.0"
    rejoin = installed_cli(
        prefix, "cluster", "rejoin", "gpu2", "--out-dir", str(tmp_path / "rejoin"), "--passphrase-file",
        str(tmp_path / "pass"),
    )  # fmt: skip
    assert rejoin.returncode == 0, rejoin.stderr
    join, _ = invite.read(tmp_path / "rejoin" / "gpu2.join", PASS.strip().encode())
    assert join.version == "0.2.0"
    again = airgapped(media_v2, mnt, *args)  # the workers now follow: nothing to refuse
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr
