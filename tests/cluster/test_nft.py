"""The cluster's nftables ruleset (appliance/cluster/nft.py) as text, and loaded by nft in a network namespace of
its own (root only); what it lets through is measured in tests/media/test_cluster_firewall.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from appliance.cluster import nft

HEAD = nft.unit_cgroup("appliance-ray-head.service")
HYBRID = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
UNIFIED = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
ELSEWHERE = "30 23 0:26 / /mnt/cg rw - cgroup2 cgroup2 rw\n31 23 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"


def test_the_cgroup2_mount_is_found_where_nft_looks_or_refused():
    assert nft.cgroup_prefix(HYBRID) == "unified/"
    assert nft.cgroup_prefix(UNIFIED) == ""
    with pytest.raises(nft.FirewallError, match="no cgroup2 hierarchy mounted at or below /sys/fs/cgroup"):
        nft.cgroup_prefix(ELSEWHERE)


def test_members_of_both_families_are_let_in_and_everyone_else_dropped_at_the_units_sockets():
    text = nft.ruleset(["10.0.0.9", "fd00::2", "10.0.0.10", "10.0.0.9"], [HEAD], "unified/")
    assert "type ipv4_addr; elements = { 10.0.0.9, 10.0.0.10 }" in text
    assert "type ipv6_addr; elements = { fd00::2 }" in text
    match = 'socket cgroupv2 level 2 "unified/system.slice/appliance-ray-head.service"'
    assert f"{match} ip saddr != @members4 drop" in text and f"{match} ip6 saddr != @members6 drop" in text
    assert text.index('iifname "lo" accept') < text.index(match), "loopback first: Ray's processes among themselves"
    assert "established" not in text, "a removed member's open connections are cut at the reload"


def test_no_members_leaves_loopback_only_and_the_table_is_replaced_whole():
    text = nft.ruleset([], ["a/b/c"], "")
    assert "type ipv4_addr;\n" in text and "type ipv6_addr;\n" in text and "elements" not in text
    assert 'socket cgroupv2 level 3 "a/b/c"' in text
    lines = text.splitlines()
    assert lines[1:3] == [f"table inet {nft.TABLE}", f"delete table inet {nft.TABLE}"], "reloading is idempotent"


@pytest.mark.parametrize(
    "members, cgroup, says",
    [
        (["10.0.0.1; flush ruleset"], HEAD, "is not an IP address"),
        (["10.0.0.0/24"], HEAD, "is not an IP address"),
        (["host.example"], HEAD, "is not an IP address"),
        (["10.0.0.1"], 'system.slice/x" accept', "letters, digits"),
        (["10.0.0.1"], "system.slice/../x", "letters, digits"),
        (["10.0.0.1"], "", "letters, digits"),
    ],
)
def test_anything_odd_is_refused_before_it_reaches_the_ruleset(members, cgroup, says):
    with pytest.raises(nft.FirewallError, match=says):
        nft.ruleset(members, [cgroup], "")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="nft and a network namespace: root")
def test_nft_loads_the_ruleset_twice_and_with_no_members(tmp_path):
    prefix = nft.cgroup_prefix()
    parent = f"apptest-{uuid.uuid4().hex[:8]}"
    cgroup = nft.NFT_ROOT / prefix / parent / HEAD
    ns = f"nfttest-{parent}"
    cgroup.mkdir(parents=True)  # nft resolves the path when it loads: the cgroup must exist
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for members in (["10.0.0.9", "fd00::2"], ["10.0.0.9", "fd00::2"], []):
            path = tmp_path / "rules.nft"
            path.write_text(nft.ruleset(members, [f"{parent}/{HEAD}"], prefix))
            load = ["nsenter", f"--net=/run/netns/{ns}", "nft", "-f", str(path)]
            loaded = subprocess.run(load, capture_output=True, text=True, timeout=30)
            assert loaded.returncode == 0, loaded.stderr
        listed = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "nft", "list", "ruleset"],
                                capture_output=True, text=True, timeout=30).stdout  # fmt: skip
        assert listed.count(f"table inet {nft.TABLE}") == 1 and "10.0.0.9" not in listed
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        for folder in (cgroup, cgroup.parent, cgroup.parent.parent):
            Path(folder).rmdir()
