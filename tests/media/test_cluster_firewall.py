"""The cluster's nftables firewall (appliance/cluster/nft.py) measured in network namespaces: head, worker, a
member that is then removed ("gone", the outsider's address) and a stranger that never was one. The head's and
the worker's Ray run in cgroups named like their units (under a test-only parent of the cgroup2 hierarchy),
and the rulesets that `appliance cluster` and `install.sh --role worker` render are loaded in their namespaces
as the units' `ExecStartPre=+nft -f` would (the cgroup moved under the test's parent). The stranger finds every
listening port of both filtered, Ray's unauthenticated metrics ports included, while a listener of another
process beside them stays open; the member joins and runs a task and a replica; after `cluster remove` and a
reload the removed address is filtered too.
Root only; marked `cluster` (`make test-cluster`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.cluster import nft
from appliance.cluster.head_units import HEAD_UNIT, NFT_FILE
from appliance.media.worker import NFT, UNIT
from tests.cluster.netns import Net
from tests.conftest import APPLIANCE, clean_env, run_cli
from tests.media.test_cluster_join import (
    PASS,
    _install,
    _listening,
    _placed,
    _probe,
    _start_head,
    _start_worker,
    _stop_head,
)

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces, cgroups and nftables need root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="no nft (the nftables package)"),
]
FILTERED = {"tls": "unreachable: TimeoutError", "http": "error: TimeoutError"}  # the SYN dropped: no answer at all


def _filtered(net: Net, host: str, address: str, ports: list[int], source: str) -> None:
    """Every port answers `source` nothing, and each still listening after the probe (a Ray worker may have
    exited meanwhile: then its port refuses) dropped the connection unanswered."""
    seen = _probe(net, address, ports, source=source)
    assert all(v["tls"].startswith("unreachable") and v["http"].startswith("error") for v in seen.values()), seen
    still = set(_listening(net, host)) & set(ports)
    assert still and {p: seen[str(p)] for p in still} == dict.fromkeys(still, FILTERED), (host, source, seen)


@dataclass
class CgroupNet(Net):
    """Hosts whose processes start in a cgroup of their own (`cgroups`: host -> folder)."""

    cgroups: dict[str, Path] = field(default_factory=dict)

    def argv(self, name: str, argv: list[str]) -> list[str]:
        enter = super().argv(name, argv)
        if name not in self.cgroups:
            return enter
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.cgroups[name]), *enter]


@pytest.fixture
def cnet() -> Iterator[CgroupNet]:
    prefix = nft.cgroup_prefix()
    parent = f"appliance-test-{os.getpid()}"
    root = nft.NFT_ROOT / prefix / parent
    net = CgroupNet(cgroups={"head": root / nft.unit_cgroup(HEAD_UNIT), "worker": root / nft.unit_cgroup(UNIT)})
    for folder in net.cgroups.values():
        folder.mkdir(parents=True)
    net.up()
    try:
        yield net
    finally:
        net.down()
        for folder in net.cgroups.values():  # only ours were in them: anything left is killed before rmdir
            for pid in (folder / "cgroup.procs").read_text().split():
                subprocess.run(["kill", "-9", pid], check=False)
            for _ in range(50):
                if not (folder / "cgroup.procs").read_text().strip():
                    break
                time.sleep(0.2)
            folder.rmdir()
        for folder in (root / "system.slice", root):
            folder.rmdir()


def _load(net: CgroupNet, host: str, rules: Path, copy: Path) -> None:
    """`rules` as the unit would load it, its unit's cgroup moved under the test's parent folder."""
    prefix, unit = nft.cgroup_prefix(), net.cgroups[host]
    text = rules.read_text()
    ours = text.replace(
        f'level 2 "{prefix}{nft.unit_cgroup(unit.name)}"', f'level 3 "{unit.relative_to(nft.NFT_ROOT).as_posix()}"'
    )
    assert ours != text, text
    copy.write_text(ours)
    loaded = subprocess.run(Net.argv(net, host, ["nft", "-f", str(copy)]), capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr


def test_the_members_reach_rays_ports_and_everyone_else_finds_them_filtered(cnet, tmp_path, media_v1, release):
    net = cnet
    head_ip, worker_ip, out_ip, stranger_ip = (net.add(h) for h in ("head", "worker", "out", "stranger"))
    data, home = tmp_path / "head", tmp_path / "home"
    home.mkdir()
    (tmp_path / "pass").write_text(PASS)
    run_cli("db", "upgrade", data_dir=data, check=True)
    run_cli("cluster", "init", "--address", head_ip, "--name", "head", data_dir=data, check=True)
    for name, address in (("gone", out_ip), ("w1", worker_ip)):  # a join file lists the members made before it
        run_cli(
            "cluster", "invite", "--name", name, "--address", address, "--passphrase-file", str(tmp_path / "pass"),
            "--out", str(tmp_path / f"{name}.join"), data_dir=data, check=True,
        )  # fmt: skip

    prefix, mnt = tmp_path / "worker", tmp_path / "usb"
    join = ["--role", "worker", "--join", str(tmp_path / "w1.join"), "--join-passphrase-file", str(tmp_path / "pass")]
    common = ["--prefix", str(prefix), "--no-systemd", "--trust-release-key", str(release[1]), "--yes"]
    user = ["--user", pwd.getpwuid(os.geteuid()).pw_name]
    installed = _install(net, media_v1, mnt, *join, *common, *user)
    assert installed.returncode == 0, installed.stderr
    head_rules, worker_rules = data / "keys" / "cluster" / NFT_FILE, prefix / "etc" / NFT
    for rules in (head_rules, worker_rules):
        assert all(a in rules.read_text() for a in (head_ip, worker_ip, out_ip)), rules.read_text()
        assert stranger_ip not in rules.read_text()
    _load(net, "head", head_rules, tmp_path / "head.nft")
    _load(net, "worker", worker_rules, tmp_path / "worker.nft")

    # the control: a listener on every interface of the head, not in Ray's cgroup (as the API front is not)
    beside = subprocess.Popen(
        Net.argv(net, "head", [sys.executable, "-m", "http.server", "18999"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    log = tmp_path / "head.log"
    head = _start_head(net, data, home, worker_ip, log)
    try:
        _start_worker(net, prefix / "etc" / UNIT, tmp_path / "whome")
        assert _placed(head, log) == {"task": worker_ip, "replica": worker_ip, "data": str(prefix / "data")}

        ports = {"head": _listening(net, "head"), "worker": _listening(net, "worker")}
        assert 18999 in ports["head"]
        ports["head"].remove(18999)
        addresses = {"head": head_ip, "worker": worker_ip}
        for host, address in addresses.items():
            member = _probe(net, address, ports[host], source="out")
            metrics = [p for p in map(str, ports[host]) if member[p]["http"].endswith(" metrics")]
            assert metrics, (host, member)  # Ray's agents answer a member without the token: the firewall's job
            assert all(member[p] != FILTERED for p in map(str, ports[host])), (host, member)
            _filtered(net, host, address, ports[host], "stranger")
            beside_port = _probe(net, head_ip, [18999], source="stranger")["18999"]
            assert beside_port["http"].startswith("HTTP/1.0 "), "another process's listener stays open"
            print(f"{host}: {len(ports[host])} Ray ports (metrics {metrics}): all reached by the member, "
                  "all filtered for the stranger")  # fmt: skip

        removed = net.run(
            "head",
            [APPLIANCE, "cluster", "remove", "gone", "--rejoin-dir", str(tmp_path / "rejoin"),
             "--passphrase-file", str(tmp_path / "pass")],
            clean_env(APPLIANCE_DATA_DIR=str(data)),
            timeout=300,
        )  # fmt: skip
        assert removed.returncode == 0, removed.stderr[-2000:]
        assert out_ip not in head_rules.read_text()
        _load(net, "head", head_rules, tmp_path / "head.nft")
        rejoin = ["--role", "worker", "--join", str(tmp_path / "rejoin" / "w1.join"), "--join-passphrase-file",
                  str(tmp_path / "pass")]  # fmt: skip
        rejoined = _install(net, media_v1, mnt, *rejoin, *common, *user)
        assert rejoined.returncode == 0, rejoined.stderr
        assert out_ip not in worker_rules.read_text()
        _load(net, "worker", worker_rules, tmp_path / "worker.nft")
        for host, address in addresses.items():
            _filtered(net, host, address, ports[host], "out")
        print("after `cluster remove gone` and the reload: every Ray port of both filtered for its address")
    finally:
        _stop_head(head)
        beside.kill()
