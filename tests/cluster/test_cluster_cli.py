"""`appliance cluster init/invite/list/remove` through the real console script: the CA and its key on the head,
the sealed join file, each change recorded first in the audit log, revocation, the CA key in a sealed backup."""

from __future__ import annotations

import ipaddress
import os
import tarfile
from pathlib import Path

import pytest
from cryptography import x509

from appliance.backup import sealed
from appliance.cluster import invite
from appliance.cluster.ca import Cluster, ClusterError
from tests.conftest import APPLIANCE, run_cli

PASS = "correct horse battery staple\n"


@pytest.fixture
def head(tmp_path: Path):
    data = tmp_path / "var"
    run_cli("db", "upgrade", data_dir=data, check=True)
    (tmp_path / "pass").write_text(PASS)

    def cli(*args: str, check: bool = True):
        return run_cli(*args, data_dir=data, check=check)

    cli("cluster", "init", "--address", "10.77.0.1", "--name", "head")
    cli.data, cli.root = data, tmp_path  # type: ignore[attr-defined]
    return cli


def _events(cli) -> list[str]:
    out = cli("audit", "list", "--limit", "100").stdout
    return [w for w in out.split() if w.startswith("admin.cluster")]


def _sans(cert_pem: bytes) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(a) for a in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))


def test_init_makes_a_ca_whose_key_only_the_appliance_reads_and_records_it(head):
    folder = head.data / "keys" / "cluster"
    assert (folder / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (folder / "node.key").stat().st_mode & 0o777 == 0o600
    assert {"10.77.0.1", "127.0.0.1"} <= _sans((folder / "node.crt").read_bytes())
    assert _events(head) == ["admin.cluster_initialised"]
    env = (folder / "ray.env").read_text()  # the systemd head's Ray unit and serve unit read it
    assert (folder / "ray.env").stat().st_mode & 0o777 == 0o600
    for line in ("RAY_USE_TLS=1", "RAY_AUTH_MODE=token", "APPLIANCE_RAY_NODE_IP=10.77.0.1", "APPLIANCE_RAY_PORT=6379"):
        assert line + "\n" in env
    again = head("cluster", "init", "--address", "10.77.0.1", check=False)
    assert again.returncode != 0 and "already a cluster head" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert _events(head) == ["admin.cluster_initialised"], "a refused init records nothing"


def test_an_invite_is_a_sealed_join_file_with_every_address_in_the_certificate(head):
    out = head.root / "w1.join"
    proc = head(
        "cluster", "invite", "--name", "w1", "--address", "10.77.0.2", "--address", "10.78.0.2",
        "--passphrase-file", str(head.root / "pass"), "--out", str(out),
    )  # fmt: skip
    join, fingerprint = invite.read(out, PASS.strip().encode())
    assert fingerprint in proc.stdout
    assert out.stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" not in out.read_bytes(), "the key travels sealed only"
    assert (join.name, join.head, join.port) == ("w1", "10.77.0.1", 6379)
    assert {"10.77.0.2", "10.78.0.2", "127.0.0.1"} <= _sans(join.files["node.crt"])
    assert join.files["ray_auth_token"] == (head.data / "keys" / "ray_auth_token").read_bytes()
    assert set(join.allow) == {"10.77.0.1", "10.77.0.2", "10.78.0.2"}
    assert Cluster(head.data / "keys" / "cluster").check_node(join.files["node.crt"]).name == "w1"
    with pytest.raises(ClusterError, match="wrong passphrase"):
        invite.read(out, b"not the passphrase")
    assert _events(head) == ["admin.cluster_invited", "admin.cluster_initialised"]


def test_bad_invites_are_refused_in_one_line_and_leave_no_member(head):
    pp = str(head.root / "pass")
    for args, says in (
        (["--name", "w1", "--address", "nope"], "not an IP address"),
        (["--name", "Bad_Name", "--address", "10.77.0.9"], "node name"),
        (["--name", "w1", "--address", "10.77.0.1"], "already belongs to another member"),
    ):
        proc = head(
            "cluster", "invite", *args, "--passphrase-file", pp, "--out", str(head.root / "x.join"), check=False
        )
        assert proc.returncode != 0 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "w1" not in head("cluster", "list").stdout
    assert not (head.root / "x.join").exists()


def test_a_removed_node_is_revoked_and_refused_from_then_on(head, tmp_path):
    out = tmp_path / "w1.join"
    head("cluster", "invite", "--name", "w1", "--address", "10.77.0.2", "--passphrase-file", str(tmp_path / "pass"),
         "--out", str(out))  # fmt: skip
    join, _ = invite.read(out, PASS.strip().encode())
    cluster = Cluster(head.data / "keys" / "cluster")
    firewall = head.data / "keys" / "cluster" / "firewall.conf"
    assert "10.77.0.2" in cluster.allowed_addresses()
    assert "IPAddressAllow=10.77.0.1 10.77.0.2\n" in firewall.read_text()
    rules = firewall.with_suffix(".nft")
    assert "elements = { 10.77.0.1, 10.77.0.2 }" in rules.read_text()
    assert 'system.slice/appliance-ray-head.service" ip saddr != @members4 drop' in rules.read_text()
    removed = head("cluster", "remove", "w1")  # no head running: said, and the removal goes on
    assert "does not answer at 10.77.0.1:6379: nothing drained" in removed.stdout, removed.stdout
    assert "IPAddressAllow=10.77.0.1\n" in firewall.read_text(), "the head's units let the removed node in no more"
    assert "elements = { 10.77.0.1 }" in rules.read_text(), "nor does its nftables ruleset"
    with pytest.raises(ClusterError, match="revoked"):
        cluster.check_node(join.files["node.crt"])
    assert "10.77.0.2" not in cluster.allowed_addresses()
    listing = head("cluster", "list").stdout
    revoked = cluster.state().revoked[0]
    assert "revoked" in listing and revoked.fingerprint[:23] in listing, "shown as it is (no emoji codes)"
    assert _events(head)[0] == "admin.cluster_removed"
    refused = head("cluster", "remove", "head", check=False)
    assert refused.returncode != 0 and "cannot be removed" in refused.stderr


def test_a_certificate_from_another_ca_is_not_a_member(head, tmp_path):
    other = Cluster(tmp_path / "other")
    other.init("rogue", ("10.77.0.66",))
    with pytest.raises(ClusterError, match="not issued by this cluster's CA"):
        Cluster(head.data / "keys" / "cluster").check_node((tmp_path / "other" / "node.crt").read_bytes())


def test_the_ca_key_is_in_a_backup_with_private_keys_sealed_and_never_in_clear(head, tmp_path):
    archive = tmp_path / "b.tar"
    head("backup", "--out", str(archive), "--include-private-keys", "--passphrase-file", str(tmp_path / "pass"))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        blob = tar.extractfile("private/keys.sealed").read()  # type: ignore[union-attr]
    assert "keys/cluster/ca.crt" in names and not any(n.endswith("ca.key") for n in names)
    files = sealed.unseal(blob, PASS.strip().encode())
    assert files["cluster/ca.key"] == (head.data / "keys" / "cluster" / "ca.key").read_bytes()


def test_an_address_that_cannot_be_a_node_is_refused():
    from appliance.cluster.ca import check_addresses

    with pytest.raises(ClusterError):
        check_addresses(["0.0.0.0"])
    assert check_addresses(["10.0.0.1", "10.0.0.1"]) == (str(ipaddress.ip_address("10.0.0.1")),)


def _invite(head, name: str, address: str) -> Path:
    out = head.root / f"{name}.join"
    head("cluster", "invite", "--name", name, "--address", address, "--passphrase-file", str(head.root / "pass"),
         "--out", str(out))  # fmt: skip
    return out


def test_remove_rotates_the_token_and_gives_every_remaining_worker_a_rejoin_file(head):
    from appliance.config import Settings
    from appliance.serving.ray_env import airgap_environment

    gone, _ = invite.read(_invite(head, "w1", "10.77.0.2"), PASS.strip().encode())
    stays, _ = invite.read(_invite(head, "w2", "10.77.0.3"), PASS.strip().encode())
    token_file = head.data / "keys" / "ray_auth_token"
    old_token = token_file.read_bytes()
    refused = head("cluster", "remove", "w1", check=False)
    assert refused.returncode != 0 and "w2 remain" in refused.stderr and "--rejoin-dir" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert _events(head)[0] == "admin.cluster_invited", "a refused remove records nothing"
    assert token_file.read_bytes() == old_token

    rejoin = head.root / "rejoin"
    proc = head("cluster", "remove", "w1", "--rejoin-dir", str(rejoin), "--passphrase-file", str(head.root / "pass"),
                "--drain-timeout", "0")  # fmt: skip
    assert "w1 not drained (--drain-timeout 0)" in proc.stdout
    assert "the Ray token rotated" in proc.stdout and "restart the head's Ray" in proc.stderr
    new_token = token_file.read_bytes()
    assert new_token != old_token and token_file.stat().st_mode & 0o777 == 0o600
    assert _events(head)[:2] == ["admin.cluster_rejoin_issued", "admin.cluster_removed"]

    join, fingerprint = invite.read(rejoin / "w2.join", PASS.strip().encode())
    assert f"rejoin file {rejoin / 'w2.join'} for w2: fingerprint {fingerprint}" in proc.stdout
    assert join.files["ray_auth_token"] == new_token, "the remaining worker gets the new token"
    assert (join.name, join.addresses, set(join.allow)) == ("w2", ("10.77.0.3",), {"10.77.0.1", "10.77.0.3"})
    assert not (rejoin / "w1.join").exists()
    cluster = Cluster(head.data / "keys" / "cluster")
    assert cluster.check_node(join.files["node.crt"]).name == "w2"
    with pytest.raises(ClusterError, match="belongs to no member"):
        cluster.check_node(stays.files["node.crt"])  # replaced by the rejoin file's
    with pytest.raises(ClusterError, match="revoked"):
        cluster.check_node(gone.files["node.crt"])

    # the head's Ray takes the new token at its next start: the units' ray.env and the embedded head both
    # name the token file, which now holds it
    env = dict(line.split("=", 1) for line in (head.data / "keys" / "cluster" / "ray.env").read_text().splitlines())
    assert Path(env["RAY_AUTH_TOKEN_PATH"]).read_bytes() == new_token
    embedded = airgap_environment(Settings(data_dir=head.data), head.root)
    assert Path(embedded["RAY_AUTH_TOKEN_PATH"]).read_bytes() == new_token


def test_rejoin_files_carry_the_current_version_and_token_and_unknown_names_write_nothing(head):
    from appliance.bundles.metadata import APPLIANCE_VERSION

    _invite(head, "w1", "10.77.0.2")
    out = head.root / "again"
    bad = head("cluster", "rejoin", "w1", "nope", "--out-dir", str(out), "--passphrase-file",
               str(head.root / "pass"), check=False)  # fmt: skip
    assert bad.returncode != 0 and "no member named nope" in bad.stderr and not out.exists()
    head("cluster", "rejoin", "w1", "--out-dir", str(out), "--passphrase-file", str(head.root / "pass"))
    join, _ = invite.read(out / "w1.join", PASS.strip().encode())
    assert join.version == APPLIANCE_VERSION
    assert join.files["ray_auth_token"] == (head.data / "keys" / "ray_auth_token").read_bytes()
    member = Cluster(head.data / "keys" / "cluster").member("w1")
    assert member.version == APPLIANCE_VERSION and member.serial == f"{_serial(join.files['node.crt']):x}"
    assert APPLIANCE_VERSION in head("cluster", "list").stdout
    refused = head("cluster", "rejoin", "head", "--out-dir", str(out), "--passphrase-file", str(head.root / "pass"),
                   check=False)  # fmt: skip
    assert refused.returncode != 0 and "needs no join file" in refused.stderr


def _serial(cert_pem: bytes) -> int:
    return x509.load_pem_x509_certificate(cert_pem).serial_number


def test_drain_is_recorded_first_and_says_when_the_head_does_not_answer(head):
    _invite(head, "w1", "10.77.0.2")
    proc = head("cluster", "drain", "w1", "--timeout", "5")
    assert "the head's Ray does not answer at 10.77.0.1:6379: nothing drained" in proc.stdout
    assert _events(head)[0] == "admin.cluster_drained"
    unknown = head("cluster", "drain", "nope", check=False)
    assert unknown.returncode != 0 and "no member named nope" in unknown.stderr
    assert _events(head)[0] == "admin.cluster_drained" and _events(head).count("admin.cluster_drained") == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="a mount namespace with /sys mounted afresh: root")
def test_a_change_is_refused_before_it_is_made_where_rays_firewall_cannot_be_rendered(head, tmp_path):
    bare_sys = 'umount -l /sys && mount -t sysfs sysfs /sys && exec "$0" "$@"'  # no cgroup2 below /sys/fs/cgroup
    proc = run_cli(
        "cluster", "invite", "--name", "w1", "--address", "10.77.0.2", "--passphrase-file", str(tmp_path / "pass"),
        "--out", str(tmp_path / "w1.join"), data_dir=head.data, offline=False,
        program=("unshare", "-m", "-n", "sh", "-c", bare_sys, APPLIANCE),
    )  # fmt: skip
    assert proc.returncode != 0 and "no cgroup2 hierarchy mounted" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "w1" not in head("cluster", "list").stdout and not (tmp_path / "w1.join").exists()
