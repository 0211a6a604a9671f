"""Which node served what, in the names the operator knows: a cluster member's name (`appliance cluster list`),
else the node's address. Used by the gateway for the completion records, /metrics and the admin page.

Labels stay bounded: a name is a member (the admin's own list) or one of `MAX_OTHERS` addresses not in it;
past those, "other".
"""

from __future__ import annotations

import time
from pathlib import Path

from appliance.cluster.ca import Cluster

MAX_OTHERS = 8
_REREAD_S = 5.0  # an address not in the members list rereads cluster.json at most this often (an invite since)


class NodeNames:
    """Node address -> member name, from the head's cluster.json (absent on a single host: the address)."""

    def __init__(self, cluster_folder: Path) -> None:
        self._cluster = Cluster(cluster_folder)
        self._names: dict[str, str] = {}
        self._others: set[str] = set()
        self._read_at = -_REREAD_S

    def __call__(self, address: str) -> str:
        if address not in self._names and time.monotonic() - self._read_at >= _REREAD_S:
            self._read_at = time.monotonic()
            if self._cluster.initialised:
                state = self._cluster.state()
                self._names = {a: m.name for m in state.members for a in m.addresses}
        name = self._names.get(address)
        if name is not None:
            return name
        if address in self._others or len(self._others) < MAX_OTHERS:
            self._others.add(address)
            return address
        return "other"


def replicas_per_node(details: dict, names: NodeNames, app: str = "appliance", deployment: str = "llm") -> dict:
    """Running LLM replicas per node name, from Serve's instance details (`get_serve_details`)."""
    counts: dict[str, int] = {}
    found = details.get("applications", {}).get(app, {}).get("deployments", {}).get(deployment, {})
    for replica in found.get("replicas", []):
        if replica.get("state") == "RUNNING" and replica.get("node_ip"):
            node = names(replica["node_ip"])
            counts[node] = counts.get(node, 0) + 1
    return counts
