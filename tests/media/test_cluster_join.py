"""A Ray cluster across hosts on one machine (issue 26): three network namespaces on a bridge (head, worker,
outsider). The head is made a cluster head (`appliance cluster init`) and invites the worker; the worker is
installed from the read-only media with `install.sh --role worker --join FILE` and started with the unit's
own command line; a task and a Serve replica run on it. The outsider reaches no Ray port without the
cluster's certificate and token; a certificate from another CA is refused, and so is a cluster certificate
with the wrong token. `cluster remove` rotates the token: the restarted head refuses the removed node's
certificate with the old token, and the remaining worker rejoins with its rejoin file and serves again.

Root only (namespaces, a bridge); marked `cluster` and run by `make test-cluster` (.ci/run calls it): it
starts two Ray nodes, too heavy for the default run on two cores.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.cluster.ca import Cluster
from tests.cluster.netns import Net
from tests.conftest import APPLIANCE, REPO, clean_env, run_cli
from tests.media.conftest import AIRGAP

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and a bridge need root"),
]
PASS = "cluster test passphrase\n"


def _install(net: Net, media: Path, mnt: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """install.sh in the worker's namespace, the media mounted read-only (a mount namespace of its own)."""
    mnt.mkdir(parents=True, exist_ok=True)
    argv = ["unshare", "-m", "bash", "-c", AIRGAP, "airgap", str(media), str(mnt), str(mnt / "install.sh"), *args]
    return subprocess.run(net.argv("worker", argv), env=clean_env(), capture_output=True, text=True, timeout=900)


def _unit_command(unit: Path) -> tuple[list[str], dict[str, str]]:
    """ExecStart and the Environment= of the rendered unit: the worker runs exactly what systemd would."""
    text = unit.read_text()
    argv = shlex.split(re.search(r"^ExecStart=(.*)$", text, re.M).group(1))
    env: dict[str, str] = {}
    for line in re.findall(r"^Environment=(.*)$", text, re.M):
        env.update(item.split("=", 1) for item in shlex.split(line))
    return argv, env


def _listening(net: Net, host: str) -> list[int]:
    out = net.run(host, ["ss", "-tlnH"], clean_env()).stdout
    return sorted({int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if "127.0.0.1" not in line})


def _probe(net: Net, address: str, ports: list[int], *cert: str, source: str = "out") -> dict[str, dict[str, str]]:
    """What each port answers a client in the `source` namespace (tests/cluster/probe.py)."""
    argv = [sys.executable, "-m", "tests.cluster.probe", address, *map(str, ports), *cert]
    proc = subprocess.run(
        net.argv(source, argv),
        env=clean_env(PYTHONPATH=str(REPO)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _gcs(net: Net, address: str, folder: Path, token: Path) -> str:
    """What the head's GCS answers a Ray client in the outsider's namespace (tests/cluster/gcs_probe.py)."""
    argv = ["timeout", "120", sys.executable, "-m", "tests.cluster.gcs_probe", address, str(folder), str(token)]
    proc = net.run("out", argv, clean_env(PYTHONPATH=str(REPO)), timeout=180)
    return proc.stdout.strip() or f"refused: exit {proc.returncode}: {proc.stderr.strip()[-300:]}"


def _start_head(net: Net, data: Path, home: Path, worker_ip: str, log: Path) -> subprocess.Popen[str]:
    """The head's Ray and Serve by the appliance's own code (tests/cluster/head_driver.py), up when it says READY."""
    env = clean_env(APPLIANCE_DATA_DIR=str(data), PYTHONPATH=str(REPO))
    with open(log, "a") as err:
        head = subprocess.Popen(
            net.argv("head", [sys.executable, "-m", "tests.cluster.head_driver", str(home), worker_ip]),
            env=env, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    assert head.stdout.readline().strip() == "READY", log.read_text()[-3000:]
    return head


def _stop_head(head: subprocess.Popen[str]) -> None:
    head.stdin.close()
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()


def _start_worker(net: Net, unit: Path, home: Path) -> None:
    """The worker's Ray by the rendered unit's own command line and environment."""
    argv, unit_env = _unit_command(unit)
    for _ in range(3):  # as the unit's Restart=on-failure: Ray gives a node 30 s to register, a loaded
        started = net.run(  # machine can miss that
            "worker",
            ["timeout", "300", *[a for a in argv if a != "--block"], "--num-cpus=1"],
            {**clean_env(), **unit_env, "HOME": str(home)},
            timeout=320,
        )
        if started.returncode == 0 or "timed out during startup" not in started.stderr:
            break
        net.kill_all("worker")
    assert started.returncode == 0, started.stderr[-2000:]


def _placed(head: subprocess.Popen[str], log: Path) -> dict[str, str]:
    line = head.stdout.readline()
    assert line, log.read_text()[-3000:]
    return json.loads(line)


def test_a_worker_joins_from_the_media_and_outsiders_are_refused(net, tmp_path, media_v1, release):
    head_ip, worker_ip, out_ip = net.add("head"), net.add("worker"), net.add("out")
    data, home = tmp_path / "head", tmp_path / "home"
    home.mkdir()
    (tmp_path / "pass").write_text(PASS)
    run_cli("db", "upgrade", data_dir=data, check=True)
    run_cli("cluster", "init", "--address", head_ip, "--name", "head", data_dir=data, check=True)
    fingerprints = {}
    for name, address in (("w1", worker_ip), ("gone", out_ip)):
        invite = run_cli(
            "cluster", "invite", "--name", name, "--address", address, "--passphrase-file", str(tmp_path / "pass"),
            "--out", str(tmp_path / f"{name}.join"), data_dir=data, check=True,
        )  # fmt: skip
        fingerprints[name] = invite.stdout.split()[-1]

    prefix, mnt = tmp_path / "worker", tmp_path / "usb"
    join = ["--role", "worker", "--join", str(tmp_path / "w1.join"), "--join-passphrase-file", str(tmp_path / "pass")]
    common = ["--prefix", str(prefix), "--no-systemd", "--trust-release-key", str(release[1]), "--yes"]
    user = ["--user", pwd.getpwuid(os.geteuid()).pw_name]
    began = time.monotonic()
    installed = _install(net, media_v1, mnt, *join, *common, *user)
    installed_s = time.monotonic() - began
    assert installed.returncode == 0, installed.stderr
    assert f"fingerprint {fingerprints['w1']}" in installed.stderr, "the operator compares it with the head's"
    identity = prefix / "data" / "cluster"
    assert (identity / "node.key").stat().st_mode & 0o777 == 0o600
    assert not (prefix / "data" / "appliance.db").exists() and not (prefix / "data" / "keys").exists()
    assert not (prefix / "etc" / "appliance.yaml").exists(), "no API on a worker"
    worker_store = json.loads((prefix / "data" / "models" / "state.json").read_text())["active"]
    assert worker_store and list((prefix / "data" / "trust").glob("*.pub")), "the media's bundles, verified"
    assert not list((prefix / "data" / "trust").glob("*.key")), "public keys only"
    again = _install(net, media_v1, mnt, *join, *common, *user)
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr

    argv, unit_env = _unit_command(prefix / "etc" / "appliance-ray-worker.service")
    assert f"--address={head_ip}:6379" in argv and unit_env["RAY_USE_TLS"] == "1"
    unit = (prefix / "etc" / "appliance-ray-worker.service").read_text()
    assert re.search(rf"^IPAddressAllow=localhost .*{re.escape(head_ip)}", unit, re.M)

    log, unit_file = tmp_path / "head.log", prefix / "etc" / "appliance-ray-worker.service"
    head = _start_head(net, data, home, worker_ip, log)
    try:
        _start_worker(net, unit_file, tmp_path / "whome")
        assert _placed(head, log) == {"task": worker_ip, "replica": worker_ip, "data": str(prefix / "data")}
        print(f"install.sh --role worker {installed_s:.1f} s; its Ray started, a task and a Serve replica run on "
              f"it {time.monotonic() - began - installed_s:.1f} s later (head up meanwhile)")  # fmt: skip

        listed = net.run("head", [APPLIANCE, "cluster", "list", "--live"], clean_env(APPLIANCE_DATA_DIR=str(data)))
        assert listed.returncode == 0, listed.stderr[-2000:]
        cells = [[c.strip() for c in line.split("│")[1:-1]] for line in listed.stdout.splitlines()]
        rows = {row[0]: row for row in cells if row}
        assert rows["w1"][2] == worker_ip and rows["w1"][-4:] == ["alive", "1", "0", "1"], listed.stdout
        assert rows["head"][-4] == "alive" and "NOT A MEMBER" not in listed.stdout, listed.stdout

        cluster = Cluster(data / "keys" / "cluster")
        other = Cluster(tmp_path / "other")
        other.init("rogue", (out_ip,))
        ours = ["--cert", str(identity / "node.crt"), "--key", str(identity / "node.key")]
        theirs = ["--cert", str(tmp_path / "other" / "node.crt"), "--key", str(tmp_path / "other" / "node.key")]
        for host, address in (("head", head_ip), ("worker", worker_ip)):
            ports = _listening(net, host)
            bare, rogue, member = (_probe(net, address, ports, *c) for c in ([], theirs, ours))
            for port in map(str, ports):
                if member[port]["tls"] == "handshake":  # a Ray gRPC port: it took the cluster's certificate
                    assert bare[port]["tls"].startswith("refused"), (host, port, bare[port])
                    assert rogue[port]["tls"].startswith("refused"), (host, port, rogue[port])
                else:  # an HTTP port of Ray's agents: nothing without the token, or read-only metrics
                    status = bare[port]["http"].split()[1:]
                    assert status in (["401", "Unauthorized"], ["200", "OK", "metrics"]), (host, port, bare[port])
            metrics = [p for p in map(str, ports) if bare[p]["http"].endswith(" metrics")]
            print(f"{host}: {len(ports)} ports, open read-only metrics without the token: {metrics}")

        # a node with a cluster certificate: let in with the token, refused with another; another CA's refused
        from appliance.cluster import invite as joinfile

        gone, _ = joinfile.read(tmp_path / "gone.join", PASS.strip().encode())
        joinfile.install(gone, tmp_path / "gone")
        old_token, wrong = tmp_path / "gone" / "ray_auth_token", tmp_path / "wrong_token"
        wrong.write_text("0" * 64)
        head_gcs = f"{head_ip}:6379"
        assert _gcs(net, head_gcs, tmp_path / "gone", old_token) == "accepted"
        without_token = _gcs(net, head_gcs, tmp_path / "gone", wrong)
        assert without_token.startswith("refused"), "a certificate without the token"
        other_ca = _gcs(net, head_gcs, tmp_path / "other", old_token)
        assert other_ca.startswith("refused"), "another CA's certificate"
        print(f"GCS, cluster certificate + wrong token: {without_token}\nGCS, another CA + the token: {other_ca}")

        def cli(*args: str) -> subprocess.CompletedProcess[str]:  # on the head's network: it reaches its Ray
            proc = net.run("head", [APPLIANCE, *args], clean_env(APPLIANCE_DATA_DIR=str(data)), timeout=300)
            assert proc.returncode == 0, proc.stderr[-2000:]
            return proc

        drained = cli("cluster", "drain", "w1", "--timeout", "10").stdout  # its replica is pinned: it stays
        assert "drained w1" in drained and "1 Serve replica" in drained, drained
        removing = time.monotonic()
        removed = cli("cluster", "remove", "gone", "--rejoin-dir", str(tmp_path / "rejoin"), "--passphrase-file",
                      str(tmp_path / "pass"))  # fmt: skip
        assert "gone is not running in the cluster: nothing to drain" in removed.stdout, removed.stdout
        print(drained.strip())
        fingerprint = re.search(r"rejoin file \S+w1\.join for w1: fingerprint (\w+)", removed.stdout).group(1)
        with pytest.raises(Exception, match="revoked"):
            cluster.check_node(gone.files["node.crt"])
        removed_s = time.monotonic() - removing

        _stop_head(head)  # the head's Ray takes the new token at its restart; the worker's with it (systemd:
        net.kill_all("worker")  # the rejoin restarts its unit)
        head = _start_head(net, data, home, worker_ip, log)
        refused = _gcs(net, head_gcs, tmp_path / "gone", old_token)
        assert refused.startswith("refused"), "the removed node's certificate with the old token"
        print(f"restarted head, the removed node's certificate + the old token: {refused}")
        # the control: Ray has no CRL, so that certificate with the new token would be let in; the removed node
        # never receives the new token (only the remaining workers' sealed rejoin files carry it)
        assert _gcs(net, head_gcs, tmp_path / "gone", data / "keys" / "ray_auth_token") == "accepted"
        rejoin = ["--role", "worker", "--join", str(tmp_path / "rejoin" / "w1.join"), "--join-passphrase-file",
                  str(tmp_path / "pass")]  # fmt: skip
        rejoined = _install(net, media_v1, mnt, *rejoin, *common, *user)
        assert rejoined.returncode == 0, rejoined.stderr
        assert "rejoining as w1" in rejoined.stderr and f"fingerprint {fingerprint}" in rejoined.stderr
        assert (identity / "ray_auth_token").read_bytes() == (data / "keys" / "ray_auth_token").read_bytes()
        _start_worker(net, unit_file, tmp_path / "whome")
        assert _placed(head, log)["replica"] == worker_ip, "the rejoined worker serves again"
        print(f"cluster remove (rotate, rejoin file) {removed_s:.1f} s; head restarted, worker rejoined and serving "
              f"{time.monotonic() - removing:.1f} s after the remove began")  # fmt: skip
    finally:
        _stop_head(head)
    left = _install(net, media_v1, mnt, "--role", "worker", "--leave", *common)
    assert left.returncode == 0 and "left the cluster" in left.stderr, left.stderr
    assert not identity.exists() and not (prefix / "etc" / "appliance-ray-worker.service").exists()
