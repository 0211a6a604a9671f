"""`appliance cluster ...`: the cluster's identity on the head (docs/architecture.md, "Ray across hosts").

Every change is recorded in the audit log first (appliance.admin_actions); the CA key never leaves the keys
folder, a worker's key leaves the head only sealed in its join file."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from appliance import admin_actions
from appliance.backup.sealed import read_passphrase
from appliance.bundles.metadata import APPLIANCE_VERSION
from appliance.cli.actions import console_actor
from appliance.cli.tables import print_table
from appliance.cluster import head_units
from appliance.cluster import invite as joinfile
from appliance.cluster.ca import RAY_PORT, Cluster, Member, check_addresses, check_name
from appliance.cluster.ray_tls import ensure_token
from appliance.config import get_settings

app = typer.Typer(no_args_is_help=True)

Addresses = Annotated[list[str], typer.Option("--address", help="An IP address Ray uses for the node (repeat).")]


def _cluster() -> Cluster:
    return Cluster(get_settings().keys_dir / "cluster")


def _units_follow(cluster: Cluster) -> None:
    """The head's units' environment and firewall files, after a change (cluster/head_units.py)."""
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
    port: Annotated[int, typer.Option(min=1, max=65535, help="The port workers join (Ray's GCS).")] = RAY_PORT,
) -> None:
    """Make the cluster CA and the head's node certificate: from its next start the head's Ray listens on
    the first --address with mutual TLS and the token."""
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
def list_nodes() -> None:
    """The head and its workers, and the revoked certificates."""
    state = _cluster().state()
    table = Table("name", "role", "addresses", "serial", "certificate", "issued", "state")
    for members, status in ((state.members, "member"), (state.revoked, "revoked")):
        for m in members:
            cells = (m.name, m.role, " ".join(m.addresses), m.serial, m.fingerprint[:23], m.issued, status)
            table.add_row(*(Text(c) for c in cells))  # Text: ":AB:" in a fingerprint is no emoji code
    print_table(table)


@app.command()
def remove(name: Annotated[str, typer.Argument(help="The node to remove.")]) -> None:
    """Revoke a node's certificate: it goes on the revocation list and out of the members' firewall."""
    cluster = _cluster()
    member = admin_actions.remove_node(console_actor(), cluster, name)
    _units_follow(cluster)
    typer.echo(f"removed {member.name}: certificate {member.serial} revoked")
