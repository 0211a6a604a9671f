"""Starting or joining Ray with the air-gap settings applied by the appliance itself.

Measured here (shared/research/ray.md): even with usage stats off Ray probes cloud metadata and posts a
"usage stats disabled" report; these three settings stop every non-loopback attempt. Token auth is made
explicit (a token file under the keys folder, mode 0600) so a Ray port reachable from the network does
not accept unauthenticated clients. No runtime_env is ever passed: the environment is baked in.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from appliance.cluster.ca import Cluster
from appliance.cluster.ray_tls import ensure_token, node_environment
from appliance.config import Settings

log = structlog.get_logger()

BOOTSTRAP = "provider: {type: local}\n"


def airgap_environment(settings: Settings, home: Path) -> dict[str, str]:
    """The variables Ray (and its workers, which inherit them) must see; writes the files they name."""
    env = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
        "RAY_AUTH_MODE": settings.ray_auth_mode,
        "RAY_DASHBOARD_ENABLED": "0",
    }
    cluster = cluster_of(settings)
    if not settings.ray_address and cluster is None:
        # The embedded head is one node on loopback. Without this, Ray's processes that start before the node
        # is known (the driver, the runtime-env agent) learn "their" address by opening a UDP socket towards
        # 8.8.8.8:53 (network_util.cc): an outbound attempt a site's monitoring would flag. Ray's switch for
        # single-node operation makes them answer 127.0.0.1 instead; a host joining a cluster never sets it.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    bootstrap = home / "ray_bootstrap_config.yaml"
    if not bootstrap.exists():
        bootstrap.write_text(BOOTSTRAP)
    token = settings.keys_dir / "ray_auth_token"
    if cluster is not None:  # a cluster head (or its driver): mutual TLS and the token, always
        env.update(node_environment(cluster.folder, ensure_token(token)))
        if not settings.ray_address:
            env["RAY_GCS_SERVER_PORT"] = str(cluster.state().port)  # the port workers join (`ray start --address`)
    elif settings.ray_auth_mode == "token":
        env["RAY_AUTH_TOKEN_PATH"] = str(ensure_token(token).resolve())
    return env


def cluster_of(settings: Settings) -> Cluster | None:
    """This appliance's cluster when it is a cluster head (`appliance cluster init`), else None. With
    `ray_address` (the systemd units: `ray start --head` in a unit of its own) only the driver's TLS is ours."""
    cluster = Cluster(settings.keys_dir / "cluster")
    return cluster if cluster.initialised else None


def start_ray(settings: Settings, home: Path) -> None:
    """Join `ray_address`, start a cluster head on its site address, or a private local Ray on loopback (the
    environment first: Ray reads it once, when it is imported)."""
    os.environ.update(airgap_environment(settings, home))
    cluster = cluster_of(settings)
    if settings.ray_auth_mode == "disabled" and cluster is None:
        log.warning("Ray token authentication is disabled: any process that reaches a Ray port can run code")
    import ray

    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=False)
    else:  # a cluster head on its site address, else a private one on loopback
        node_ip = cluster.state().head if cluster is not None else "127.0.0.1"
        # address="local": a new head, never one that /tmp/ray/ray_current_cluster names (another `ray start`)
        ray.init(
            address="local",
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address=node_ip,
            num_cpus=os.cpu_count(),
        )
