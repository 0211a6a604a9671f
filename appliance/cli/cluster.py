"""`appliance cluster ...`: the cluster's identity on the head (docs/architecture.md, "Ray across hosts").

Every change is recorded in the audit log first (appliance.admin_actions); the CA key never leaves the keys
folder, a worker's key leaves the head only sealed in its join file."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from appliance.cluster.ca import Cluster, Member

app = typer.Typer(no_args_is_help=True)

Addresses = Annotated[list[str], typer.Option("--address", help="An IP address Ray uses for the node (repeat).")]


def _cluster() -> Cluster:
    from appliance.cluster.ca import Cluster
    from appliance.config import get_settings

    return Cluster(get_settings().keys_dir / "cluster")


def _units_follow(cluster: Cluster) -> None:
    """The head's units' environment and firewall files, after a change (cluster/head_units.py)."""
    from appliance.cluster import head_units
    from appliance.config import get_settings

    head_units.write(cluster, get_settings().keys_dir / "ray_auth_token")
    typer.echo(
        "as root: systemctl daemon-reload && systemctl restart appliance-ray-head appliance-serve (systemd "
        "installs: the units read the cluster's firewall and TLS files at start)",
        err=True,
    )


@app.command()
def init(
    address: Addresses,
    name: Annotated[str | None, typer.Option(help="The head's node name; default: this host's name.")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="The port workers join (Ray's GCS); default 6379.")
    ] = None,
) -> None:
    """Make the cluster CA and the head's node certificate: from its next start the head's Ray listens on
    the first --address with mutual TLS and the token."""
    from appliance import admin_actions
    from appliance.cli.actions import console_actor
    from appliance.cluster.ca import RAY_PORT, check_addresses, check_name
    from appliance.cluster.ray_tls import ensure_token
    from appliance.config import get_settings

    port = RAY_PORT if port is None else port
    node = check_name(name or socket.gethostname().split(".")[0].lower())
    ensure_token(get_settings().keys_dir / "ray_auth_token")
    cluster = _cluster()
    head = admin_actions.init_cluster(console_actor(), cluster, node, check_addresses(address), port)
    _units_follow(cluster)
    typer.echo(f"cluster initialised: head {head.name} at {head.addresses[0]}:{port}, certificate {head.fingerprint}")
    typer.echo("restart the appliance for its Ray to take the cluster's mutual TLS", err=True)  # --no-systemd


@app.command()
def invite(
    name: Annotated[str, typer.Option(help="The new node's name.")],
    address: Addresses,
    passphrase_file: Annotated[Path, typer.Option(help="File whose first line seals the join file.")],
    out: Annotated[Path | None, typer.Option(help="The join file to write; default NAME.join.")] = None,
) -> None:
    """Write a join file for one host (`install.sh --role worker --join FILE`) and print its fingerprint."""
    from appliance import admin_actions
    from appliance.backup.sealed import read_passphrase
    from appliance.bundles.metadata import APPLIANCE_VERSION
    from appliance.cli.actions import console_actor
    from appliance.cluster import invite as joinfile
    from appliance.cluster.ca import check_addresses, check_name
    from appliance.config import get_settings

    cluster, settings = _cluster(), get_settings()
    passphrase = read_passphrase(passphrase_file)
    addresses = check_addresses(address)
    state = cluster.state()
    dest = out or Path(f"{check_name(name)}.join")

    def deliver(member: Member, cert_pem: bytes, key_pem: bytes) -> str:
        return joinfile.write(
            dest,
            passphrase,
            member=member,
            cert_pem=cert_pem,
            key_pem=key_pem,
            ca_pem=cluster.ca_pem(),
            head=state.head,
            port=state.port,
            token=(settings.keys_dir / "ray_auth_token").read_bytes(),
            version=APPLIANCE_VERSION,
            allow=sorted({*cluster.allowed_addresses(), *addresses}),
        )

    member, fingerprint = admin_actions.invite_node(console_actor(), cluster, check_name(name), addresses, deliver)
    _units_follow(cluster)
    typer.echo(f"join file {dest} for {member.name} ({' '.join(member.addresses)}): fingerprint {fingerprint}")


@app.command("list")
def list_nodes(
    live: Annotated[
        bool, typer.Option("--live", help="Also ask the running cluster (as a Ray client): health, CPUs, GPUs.")
    ] = False,
) -> None:
    """The head and its workers, and the revoked certificates; with --live what Ray says of each, and any node
    Ray lists that is no member (it would have to hold a cluster certificate and the token)."""
    from rich.table import Table
    from rich.text import Text

    from appliance.cli.tables import print_table

    state = _cluster().state()
    nodes = _live_nodes(state.head, state.port) if live else {}
    table = Table("name", "role", "addresses", "serial", "certificate", "issued", "state", *(_LIVE if live else ()))
    for members, status in ((state.members, "member"), (state.revoked, "revoked")):
        for m in members:
            cells = [m.name, m.role, " ".join(m.addresses), m.serial, m.fingerprint[:23], m.issued, status]
            if live:
                cells += _live_cells(next((nodes.pop(a) for a in m.addresses if a in nodes), None))
            table.add_row(*(Text(c) for c in cells))  # Text: ":AB:" in a fingerprint is no emoji code
    for address, node in nodes.items():
        table.add_row(*(Text(c) for c in ["?", "-", address, "-", "-", "-", "NOT A MEMBER", *_live_cells(node)]))
    print_table(table)


_LIVE = ("health", "CPUs", "GPUs")


def _live_nodes(head: str, port: int) -> dict[str, dict]:
    """Ray's nodes by address, asked of the head's GCS with this appliance's own TLS and token (a driver)."""
    from appliance.config import get_settings
    from appliance.serving.ray_env import airgap_environment

    settings = get_settings()
    os.environ.update(airgap_environment(settings.model_copy(update={"ray_address": f"{head}:{port}"}), Path.home()))
    import ray

    ray.init(address=f"{head}:{port}", log_to_driver=False, logging_level=logging.ERROR)
    try:
        found: dict[str, dict] = {}
        for node in ray.nodes():
            if node["Alive"] or node["NodeManagerAddress"] not in found:
                found[node["NodeManagerAddress"]] = node
        return found
    finally:
        ray.shutdown()


def _live_cells(node: dict | None) -> list[str]:
    if node is None:
        return ["absent", "-", "-"]
    res = node.get("Resources", {})
    return ["alive" if node["Alive"] else "dead", f"{res.get('CPU', 0):g}", f"{res.get('GPU', 0):g}"]


@app.command()
def remove(name: Annotated[str, typer.Argument(help="The node to remove.")]) -> None:
    """Revoke a node's certificate: it goes on the revocation list and out of the members' firewall."""
    from appliance import admin_actions
    from appliance.cli.actions import console_actor

    cluster = _cluster()
    member = admin_actions.remove_node(console_actor(), cluster, name)
    _units_follow(cluster)
    typer.echo(f"removed {member.name}: certificate {member.serial} revoked")


@app.command("pod-cert")
def pod_cert(
    ca: Annotated[Path, typer.Option(help="Folder of the CA Secret (tls.crt: the CA certificate, tls.key: its key).")],
    out: Annotated[Path, typer.Option(help="Folder for node.crt, node.key and ca.crt (a memory volume).")],
    address: Addresses,
    name: Annotated[list[str] | None, typer.Option("--name", help="A DNS name Ray uses for the pod (repeat).")] = None,
) -> None:
    """Kubernetes (the chart's rayTLS.mode=secret): issue this Ray pod's certificate from the site's CA, in
    the pod's init container; its own pod IP is known only once the pod exists."""
    from appliance.cluster.pod_cert import issue_pod_cert

    names = [n for n in name or [] if n]  # an empty $(FQ_RAY_IP) names nothing
    fingerprint = issue_pod_cert(ca, out, address, names)
    typer.echo(f"pod certificate {fingerprint} for {', '.join([*names, *address])} in {out}")
