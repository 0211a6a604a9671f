"""What the head's systemd units read of the cluster, rewritten after every cluster change.

`ray.env` (an `EnvironmentFile=` of the head's Ray unit and of the serve unit): Ray's mutual TLS and token
variables, the node address and the port. `firewall.conf` (a drop-in the installer links into both units'
`.d` folders): `IPAddressAllow=` the members' addresses, so a removed worker's address is let in no more.
`firewall.nft` (cluster/nft.py): the same members as an nftables ruleset scoped to the head's Ray unit's cgroup,
which that unit loads at each start (`ExecStartPre=+nft -f`): a firewall that does not depend on systemd's.
Only the Ray unit's cgroup: the serve unit also holds the public API's socket, and its Ray driver's ports
take the cluster's mutual TLS. systemd reads all three at a (re)start: `systemctl daemon-reload && systemctl
restart appliance-ray-head` as root after `appliance cluster invite|remove` (the appliance's account cannot
restart its own units).
"""

from __future__ import annotations

from pathlib import Path

from appliance.cluster import nft
from appliance.cluster.ca import Cluster
from appliance.cluster.ray_tls import node_environment
from appliance.files import atomic_write

ENV_FILE, FIREWALL_FILE, NFT_FILE = "ray.env", "firewall.conf", "firewall.nft"
HEAD_UNIT = "appliance-ray-head.service"


def write(cluster: Cluster, token: Path) -> None:
    state = cluster.state()
    members = cluster.allowed_addresses()
    rules = nft.ruleset(members, [nft.unit_cgroup(HEAD_UNIT)], nft.cgroup_prefix())  # refused before any write
    env = {
        **node_environment(cluster.folder, token),
        "APPLIANCE_RAY_NODE_IP": state.head,
        "APPLIANCE_RAY_PORT": str(state.port),
        "APPLIANCE_RAY_ADDRESS": f"127.0.0.1:{state.port}",  # the serve unit's driver, on the head itself
    }
    with atomic_write(cluster.folder / ENV_FILE, mode=0o600) as f:
        f.write("".join(f"{k}={v}\n" for k, v in env.items()))
    with atomic_write(cluster.folder / FIREWALL_FILE, mode=0o644) as f:
        f.write(f"# the cluster's members (appliance cluster list)\n[Service]\nIPAddressAllow={' '.join(members)}\n")
    with atomic_write(cluster.folder / NFT_FILE, mode=0o644) as f:
        f.write(rules)
