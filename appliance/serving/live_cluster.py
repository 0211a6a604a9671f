"""Asking the running cluster head's Ray, as a driver with the head's own TLS and token: its nodes, the Serve
replicas on each, and draining one (`appliance cluster list --live|drain|remove`).

Draining is Ray's GCS `DrainNode` (what `ray drain-node` and the autoscaler call) with the reason
PREEMPTION, which no raylet may reject, and a deadline: the node takes no new work, and Serve's controller
starts replacements of the replicas on it elsewhere, then stops them there (replica state PENDING_MIGRATION).
Ray does not stop the node at the deadline: revoking it (remove) and restarting the head does. Replicas are
counted from the GCS actor table (`ray._private.state`): the dashboard, whose state API is the public way, is
off on the appliance.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.cluster.ca import Member

REPLICA = "ServeReplica:"  # Serve's replica actor class names: ServeReplica:APP:DEPLOYMENT


def reachable(head: str, port: int) -> bool:
    """Whether the head's GCS port answers at all: a stopped head is said so at once (ray.init would retry)."""
    try:
        socket.create_connection((head, port), timeout=2).close()
    except OSError:
        return False
    return True


@contextmanager
def connected(head: str, port: int) -> Iterator[None]:
    from appliance.config import get_settings
    from appliance.serving.ray_env import airgap_environment

    address = f"{head}:{port}"
    settings = get_settings().model_copy(update={"ray_address": address})
    os.environ.update(airgap_environment(settings, Path.home()))
    import ray

    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()


def nodes() -> dict[str, dict]:
    """Ray's nodes by address (a live one before a dead one at the same address)."""
    import ray

    found: dict[str, dict] = {}
    for node in ray.nodes():
        if node["Alive"] or node["NodeManagerAddress"] not in found:
            found[node["NodeManagerAddress"]] = node
    return found


def replicas() -> Counter[str]:
    """Live Serve replicas per node id."""
    from ray._private import state

    return Counter(
        a["Address"]["NodeID"]
        for a in state.actors().values()
        if a["State"] == "ALIVE" and a["ActorClassName"].startswith(REPLICA)
    )


def node_of(member: Member, found: dict[str, dict]) -> dict | None:
    return next((found[a] for a in member.addresses if a in found and found[a]["Alive"]), None)


def drain(member: Member, timeout: float) -> str:
    """Drain the member's node and wait up to `timeout` s for its Serve replicas to move; says what happened."""
    import ray
    from ray.core.generated import autoscaler_pb2

    node = node_of(member, nodes())
    if node is None:
        return f"{member.name} is not running in the cluster: nothing to drain"
    node_id, before, began = node["NodeID"], replicas()[node["NodeID"]], time.monotonic()
    gcs = ray._private.worker.global_worker.gcs_client  # type: ignore[attr-defined]  # set by ray.init
    accepted, why = gcs.drain_node(
        node_id,
        autoscaler_pb2.DrainNodeReason.DRAIN_NODE_REASON_PREEMPTION,  # type: ignore[attr-defined]  # generated
        f"appliance cluster: {member.name} leaves",
        int(time.time() * 1000 + timeout * 1000),
        timeout=30,
    )
    if not accepted:
        return f"Ray did not accept draining {member.name}: {why}"
    left = before
    while left and time.monotonic() - began < timeout:
        time.sleep(1)
        left = replicas()[node_id]
    took = time.monotonic() - began
    if left:
        return (
            f"drained {member.name} for {took:.0f} s: {left} of {before} Serve replica(s) still on it (they end when "
            "it leaves Ray: revoked, the head restarted)"
        )
    return (
        f"drained {member.name}: its {before} Serve replica(s) left it in {took:.0f} s (Serve starts them where "
        "there is room)"
    )
