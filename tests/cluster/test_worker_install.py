"""`install.sh --role worker`'s pieces that need no namespaces: its options, the version check against the
head's, and the unit it renders (the whole join runs in tests/media/test_cluster_join.py, `make test-cluster`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

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
    files = {"node.crt": cert, "node.key": key, "ca.crt": cluster.ca_pem(), "ray_auth_token": b"t", "join.json": b"{}"}
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
