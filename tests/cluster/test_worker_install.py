"""`install.sh --role worker`'s pieces that need no namespaces: its options, the version check against the
head's, and the unit it renders (the whole join runs in tests/media/test_cluster_join.py, `make test-cluster`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from appliance.cluster import invite, nft
from appliance.cluster.ca import Cluster
from appliance.cluster.invite import Join
from appliance.media import install_args, worker
from appliance.media.manifest import MediaError
from appliance.media.target import Target
from tests.conftest import REPO


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--role", "worker"], "--join FILE"),
        (["--role", "worker", "--join", "j", "--leave"], "--join FILE"),
        (["--join", "j"], "go with --role worker"),
        (["--role", "worker", "--join", "j", "--rollback"], "no API and no database"),
        (["--role", "worker", "--join", "j", "--allow-older-workers"], "is the head's"),
    ],
)
def test_worker_options_are_checked_together(argv, says, capsys):
    with pytest.raises(SystemExit):
        install_args.parse(argv)
    assert says in capsys.readouterr().err


def _join(tmp_path: Path, version: str = "0.1.0") -> Join:
    cluster = Cluster(tmp_path / "c")
    cluster.init("head", ("10.5.0.1",))
    member, cert, key = cluster.sign("w1", ("10.5.0.2",))
    files = {
        "node.crt": cert,
        "node.key": key,
        "ca.crt": cluster.ca_pem(),
        "ray_auth_token": b"t",
        "join.json": b'{"name": "w1"}',
    }
    return Join("w1", ("10.5.0.2",), "10.5.0.1", 6379, version, ("10.5.0.1", "10.5.0.2"), files)


def test_a_worker_of_another_version_than_the_head_is_refused(tmp_path):
    manifest = argparse.Namespace(version="0.2.0")
    with pytest.raises(MediaError, match="this media is 0.2.0 but the head runs 0.1.0"):
        worker.check_version(_join(tmp_path), manifest)  # type: ignore[arg-type]


def test_the_worker_unit_joins_with_tls_and_the_token_and_lets_in_members_only(tmp_path):
    args = install_args.parse(["--role", "worker", "--join", "j", "--prefix", str(tmp_path / "opt")])
    t = Target(REPO, args)
    text = worker.render_unit(t, _join(tmp_path))
    assert "ray start --address=10.5.0.1:6379 --node-ip-address=10.5.0.2 --block" in text
    assert "IPAddressDeny=any\nIPAddressAllow=localhost 10.5.0.1 10.5.0.2\n" in text
    folder = tmp_path / "opt" / "data" / "cluster"
    for line in (
        "RAY_USE_TLS=1",
        f"RAY_TLS_SERVER_CERT={folder / 'node.crt'}",
        f"RAY_TLS_SERVER_KEY={folder / 'node.key'}",
        f"RAY_TLS_CA_CERT={folder / 'ca.crt'}",
        "RAY_AUTH_MODE=token",
        f"RAY_AUTH_TOKEN_PATH={folder / 'ray_auth_token'}",
    ):
        assert line in text
    assert "appliance serve" not in text and "@" not in text.split("SystemCallFilter")[0]


def test_a_cluster_head_gives_ray_mutual_tls_and_the_token_whatever_ray_auth_mode_says(tmp_path):
    from appliance.config import Settings
    from appliance.serving.ray_env import airgap_environment

    alone = airgap_environment(Settings(data_dir=tmp_path / "a", ray_auth_mode="disabled"), tmp_path)
    assert "RAY_USE_TLS" not in alone and alone["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    settings = Settings(data_dir=tmp_path / "h", ray_auth_mode="disabled")
    Cluster(settings.keys_dir / "cluster").init("head", ("10.5.0.1",))
    env = airgap_environment(settings, tmp_path)
    folder = (settings.keys_dir / "cluster").resolve()
    assert env["RAY_USE_TLS"] == "1" and env["RAY_TLS_CA_CERT"] == str(folder / "ca.crt")
    assert env["RAY_TLS_SERVER_CERT"] == str(folder / "node.crt") and env["RAY_AUTH_MODE"] == "token"
    assert Path(env["RAY_AUTH_TOKEN_PATH"]).stat().st_mode & 0o777 == 0o600
    assert env["RAY_GCS_SERVER_PORT"] == "6379" and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in env
    driver = airgap_environment(Settings(data_dir=tmp_path / "h", ray_address="127.0.0.1:6379"), tmp_path)
    assert driver["RAY_USE_TLS"] == "1" and "RAY_GCS_SERVER_PORT" not in driver  # the unit's head has its own


def _worker(tmp_path: Path, *more: str) -> Target:
    return Target(
        REPO, install_args.parse(["--role", "worker", "--join", "j", "--prefix", str(tmp_path / "opt"), *more])
    )


def test_a_rejoin_replaces_the_identity_of_the_same_cluster_and_refuses_another(tmp_path):
    t, first = _worker(tmp_path), _join(tmp_path)
    assert worker.check_rejoin(t, first) is False, "a first join"
    invite.install(first, worker.identity(t))
    cluster = Cluster(tmp_path / "c")
    _, cert, key = cluster.sign("w1", ("10.5.0.2",), "0.1.0")  # a new certificate of the same CA
    again = Join("w1", ("10.5.0.2",), "10.5.0.1", 6379, "0.1.0", ("10.5.0.1", "10.5.0.2"),
                 {**first.files, "node.crt": cert, "node.key": key, "ray_auth_token": b"new"})  # fmt: skip
    assert worker.check_rejoin(t, again) is True
    invite.install(again, worker.identity(t))
    assert (worker.identity(t) / "ray_auth_token").read_bytes() == b"new"
    assert (worker.identity(t) / "ray_auth_token").stat().st_mode & 0o777 == 0o600
    other = _join(tmp_path / "elsewhere")  # another cluster's CA, the same node name
    with pytest.raises(MediaError, match="of another cluster: run install.sh --role worker --leave first"):
        worker.check_rejoin(t, other)
    renamed = Join("w9", *list(vars(again).values())[1:])
    with pytest.raises(MediaError, match="already node w1 .* for w9"):
        worker.check_rejoin(t, renamed)


def test_the_worker_unit_is_restarted_so_a_rejoin_takes_the_new_token(tmp_path, monkeypatch):
    bin_dir, log = tmp_path / "bin", tmp_path / "systemctl.log"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    worker.start(Target(REPO, install_args.parse(["--role", "worker", "--join", "j"])))
    assert log.read_text().splitlines() == [f"enable {worker.UNIT}", f"restart {worker.UNIT}"]


def _head_with_workers(tmp_path: Path, version: str) -> Target:
    t = Target(REPO, install_args.parse(["--prefix", str(tmp_path / "opt")]))
    cluster = Cluster(t.data / "keys" / "cluster")
    cluster.init("head", ("10.5.0.1",))
    for name, address in (("w1", "10.5.0.2"), ("w2", "10.5.0.3")):
        cluster.admit(cluster.sign(name, (address,), version)[0])
    return t


def test_a_head_upgrade_refuses_to_leave_its_workers_on_another_version_unless_told(tmp_path, capsys):
    t = _head_with_workers(tmp_path, "0.1.0")
    with pytest.raises(MediaError) as refused:
        worker.check_workers_follow(t, "0.2.0")
    line = str(refused.value)
    assert "cluster workers w1, w2 run another version than 0.2.0" in line and "\n" not in line
    assert "docs/cluster-upgrade.md" in line and "--allow-older-workers" in line
    assert (REPO / "docs" / "cluster-upgrade.md").exists()
    t.args.allow_older_workers = True
    worker.check_workers_follow(t, "0.2.0")
    assert "warning: cluster workers w1, w2" in capsys.readouterr().err
    worker.check_workers_follow(_head_with_workers(tmp_path / "same", "0.2.0"), "0.2.0")  # nothing to say
    alone = Target(REPO, install_args.parse(["--prefix", str(tmp_path / "alone")]))
    worker.check_workers_follow(alone, "0.2.0")  # not a cluster head


def test_the_worker_unit_loads_an_nftables_ruleset_on_its_cgroup_with_the_members_of_its_join_file(tmp_path):
    args = install_args.parse(["--role", "worker", "--join", "j", "--prefix", str(tmp_path / "opt")])
    join = _join(tmp_path)
    unit = worker.render_unit(Target(REPO, args), join)
    assert f"\nExecStartPre=+/usr/sbin/nft -f {tmp_path / 'opt' / 'etc' / worker.NFT}\n" in unit
    rules = worker.render_firewall(join)
    assert "elements = { 10.5.0.1, 10.5.0.2 }" in rules
    cgroup = f'"{nft.cgroup_prefix()}system.slice/appliance-ray-worker.service"'
    assert f"socket cgroupv2 level 2 {cgroup} ip saddr != @members4 drop" in rules


def test_a_systemd_host_without_nft_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """The unit loads its firewall with nft at each start: without it the unit would only fail there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text("#!/bin/sh\n")
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(worker, "NFT_BIN", tmp_path / "no-nft")
    prefix = tmp_path / "opt"
    t = Target(REPO, install_args.parse(["--role", "worker", "--join", "j", "--prefix", str(prefix)]))
    with pytest.raises(MediaError, match="no-nft not found: .*the nftables package") as refused:
        worker.check_host(t, _join(tmp_path))
    assert "\n" not in str(refused.value) and not prefix.exists()
    quiet = Target(
        REPO, install_args.parse(["--role", "worker", "--join", "j", "--no-systemd", "--prefix", str(prefix)])
    )
    worker.check_host(quiet, _join(tmp_path / "again"))  # --no-systemd: the operator loads it
