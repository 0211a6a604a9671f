"""`appliance cluster ...`: the cluster's identity on the head (docs/architecture.md, "Ray across hosts").

Every change is recorded in the audit log first (appliance.admin_actions); the CA key never leaves the keys
folder, a worker's key leaves the head only sealed in its join file."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from appliance.cluster.ca import Cluster, Member

app = typer.Typer(no_args_is_help=True)

Addresses = Annotated[list[str], typer.Option("--address", help="An IP address Ray uses for the node (repeat).")]


def _cluster(changes: bool = False) -> Cluster:
    """The head's cluster; for a change, refused first where the units' nftables firewall cannot be rendered
    (`_units_follow` would fail after the change)."""
    from appliance.cluster import nft
    from appliance.cluster.ca import Cluster
    from appliance.config import get_settings

    if changes:
        nft.cgroup_prefix()
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
    cluster = _cluster(changes=True)
    ensure_token(get_settings().keys_dir / "ray_auth_token")
    head = admin_actions.init_cluster(console_actor(), cluster, node, check_addresses(address), port)
    _units_follow(cluster)
    typer.echo(f"cluster initialised: head {head.name} at {head.addresses[0]}:{port}, certificate {head.fingerprint}")
    typer.echo("restart the appliance for its Ray to take the cluster's mutual TLS", err=True)  # --no-systemd


Passphrase = Annotated[Path, typer.Option(help="File whose first line seals the join files.")]


def _deliver(
    cluster: Cluster, dest: Path, passphrase: bytes, also: tuple[str, ...] = ()
) -> Callable[[Member, bytes, bytes], str]:
    """Writing one member's sealed join file (`install.sh --role worker --join`): its certificate and key, the
    CA, the head, the current Ray token and version, the members' addresses (plus `also`, a member-to-be)."""
    from appliance.cluster import invite as joinfile
    from appliance.config import get_settings

    state = cluster.state()

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
            token=(get_settings().keys_dir / "ray_auth_token").read_bytes(),
            version=member.version,
            allow=sorted({*cluster.allowed_addresses(), *also}),
        )

    return deliver


@app.command()
def invite(
    name: Annotated[str, typer.Option(help="The new node's name.")],
    address: Addresses,
    passphrase_file: Passphrase,
    out: Annotated[Path | None, typer.Option(help="The join file to write; default NAME.join.")] = None,
) -> None:
    """Write a join file for one host (`install.sh --role worker --join FILE`) and print its fingerprint."""
    from appliance import admin_actions
    from appliance.backup.sealed import read_passphrase
    from appliance.bundles.metadata import APPLIANCE_VERSION
    from appliance.cli.actions import console_actor
    from appliance.cluster.ca import check_addresses, check_name

    cluster = _cluster(changes=True)
    passphrase = read_passphrase(passphrase_file)
    addresses = check_addresses(address)
    dest = out or Path(f"{check_name(name)}.join")
    deliver = _deliver(cluster, dest, passphrase, addresses)
    member, fingerprint = admin_actions.invite_node(
        console_actor(), cluster, check_name(name), addresses, APPLIANCE_VERSION, deliver
    )
    _units_follow(cluster)
    typer.echo(f"join file {dest} for {member.name} ({' '.join(member.addresses)}): fingerprint {fingerprint}")


def _rejoin_files(cluster: Cluster, names: list[str], out_dir: Path, passphrase: bytes) -> None:
    from appliance import admin_actions
    from appliance.bundles.metadata import APPLIANCE_VERSION
    from appliance.cli.actions import console_actor

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        dest = out_dir / f"{name}.join"
        deliver = _deliver(cluster, dest, passphrase)
        member, fingerprint = admin_actions.rejoin_node(console_actor(), cluster, name, APPLIANCE_VERSION, deliver)
        typer.echo(f"rejoin file {dest} for {member.name}: fingerprint {fingerprint}")
    if names:
        typer.echo(
            "on each: install.sh --role worker --join FILE (from the head's media) replaces its token and certificate "
            "and restarts its Ray",
            err=True,
        )


@app.command()
def rejoin(
    names: Annotated[list[str], typer.Argument(help="The members to give a fresh join file.")],
    out_dir: Annotated[Path, typer.Option(help="Where to write NAME.join for each.")],
    passphrase_file: Passphrase,
) -> None:
    """Fresh join files for members (a new certificate, the current Ray token and version): after the head's
    upgrade, or to finish a `remove` whose rejoin files were not all written."""
    from appliance.backup.sealed import read_passphrase

    cluster = _cluster(changes=True)
    passphrase = read_passphrase(passphrase_file)
    for name in names:
        cluster.member(name)  # every name checked before any file is written
    _rejoin_files(cluster, list(dict.fromkeys(names)), out_dir, passphrase)
    _units_follow(cluster)


@app.command("list")
def list_nodes(
    live: Annotated[
        bool,
        typer.Option("--live", help="Also ask the running cluster (as a Ray client): health, CPUs, GPUs, replicas."),
    ] = False,
) -> None:
    """The head and its workers, and the revoked certificates; with --live what Ray says of each (Serve replicas
    on it included), and any node Ray lists that is no member (it would need a cluster certificate and the token)."""
    from rich.table import Table
    from rich.text import Text

    from appliance.cli.tables import print_table

    state = _cluster().state()
    nodes, replicas = _live(state.head, state.port) if live else ({}, Counter())
    columns = ("name", "role", "addresses", "version", "serial", "certificate", "issued", "state")
    table = Table(*columns, *(_LIVE if live else ()))
    for members, status in ((state.members, "member"), (state.revoked, "revoked")):
        for m in members:
            cells = [m.name, m.role, " ".join(m.addresses), m.version or "-", m.serial, m.fingerprint[:23], m.issued]
            cells.append(status)
            if live:
                cells += _live_cells(next((nodes.pop(a) for a in m.addresses if a in nodes), None), replicas)
            table.add_row(*(Text(c) for c in cells))  # Text: ":AB:" in a fingerprint is no emoji code
    for address, node in nodes.items():
        cells = ["?", "-", address, "-", "-", "-", "-", "NOT A MEMBER", *_live_cells(node, replicas)]
        table.add_row(*(Text(c) for c in cells))
    print_table(table)


_LIVE = ("health", "CPUs", "GPUs", "replicas")


def _live(head: str, port: int) -> tuple[dict[str, dict], Counter[str]]:
    from appliance.serving import live_cluster

    with live_cluster.connected(head, port):
        return live_cluster.nodes(), live_cluster.replicas()


def _live_cells(node: dict | None, replicas: Counter[str]) -> list[str]:
    if node is None:
        return ["absent", "-", "-", "-"]
    res = node.get("Resources", {})
    health = "alive" if node["Alive"] else "dead"
    return [health, f"{res.get('CPU', 0):g}", f"{res.get('GPU', 0):g}", str(replicas[node["NodeID"]])]


DrainTimeout = Annotated[
    int, typer.Option(min=0, help="Seconds to wait for its Serve replicas to move off it; 0: do not drain.")
]


def _drainer(cluster: Cluster, timeout: int) -> Callable[[Member], str]:
    """Draining a member through the running head, or saying why nothing was drained."""
    from appliance.serving import live_cluster

    state = cluster.state()

    def drain(member: Member) -> str:
        if timeout == 0:
            return f"{member.name} not drained (--drain-timeout 0)"
        if not live_cluster.reachable(state.head, state.port):
            return f"the head's Ray does not answer at {state.head}:{state.port}: nothing drained"
        try:
            with live_cluster.connected(state.head, state.port):
                return live_cluster.drain(member, timeout)
        except Exception as exc:  # noqa: BLE001 - draining is best effort: a removal goes on, and says so
            return f"could not drain {member.name} ({type(exc).__name__}: {str(exc)[:200]})"

    return drain


@app.command()
def drain(name: Annotated[str, typer.Argument(help="The node to drain.")], timeout: DrainTimeout = 60) -> None:
    """Ask the running cluster to move a node's work off it (its Serve replicas start elsewhere) and take no
    more: before stopping it for an upgrade (docs/cluster-upgrade.md). Rejoining ends it."""
    from appliance import admin_actions
    from appliance.cli.actions import console_actor

    cluster = _cluster()
    typer.echo(admin_actions.drain_node(console_actor(), cluster, name, _drainer(cluster, timeout)))


@app.command()
def remove(
    name: Annotated[str, typer.Argument(help="The node to remove.")],
    rejoin_dir: Annotated[
        Path | None, typer.Option(help="Where to write the remaining workers' rejoin files (NAME.join).")
    ] = None,
    passphrase_file: Annotated[Path | None, typer.Option(help="File whose first line seals the rejoin files.")] = None,
    drain_timeout: DrainTimeout = 60,
) -> None:
    """Drain a node, revoke its certificate (the revocation list, the members' firewall) and rotate the Ray token,
    so Ray itself refuses the node once the head restarts; every remaining worker gets a rejoin file."""
    from appliance import admin_actions
    from appliance.backup.sealed import read_passphrase
    from appliance.cli.actions import console_actor
    from appliance.cluster.ca import ClusterError
    from appliance.config import get_settings

    cluster = _cluster(changes=True)
    cluster.removable(name)
    remaining = [m.name for m in cluster.workers() if m.name != name]
    if remaining and (rejoin_dir is None or passphrase_file is None):
        raise ClusterError(
            f"{', '.join(remaining)} remain and the Ray token is rotated: give --rejoin-dir DIR and "
            "--passphrase-file FILE for their rejoin files"
        )
    passphrase = read_passphrase(passphrase_file) if remaining and passphrase_file else b""
    token = get_settings().keys_dir / "ray_auth_token"
    member, drained = admin_actions.remove_node(console_actor(), cluster, name, token, _drainer(cluster, drain_timeout))
    typer.echo(drained)
    typer.echo(f"removed {member.name}: certificate {member.serial} revoked, the Ray token rotated")
    if rejoin_dir is not None:
        _rejoin_files(cluster, remaining, rejoin_dir, passphrase)
    _units_follow(cluster)
    typer.echo(
        "restart the head's Ray now (the units, or `appliance serve`): until it restarts it accepts the old token",
        err=True,
    )


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


@app.command("node-import")
def node_import(
    folder: Annotated[Path, typer.Argument(help="A signed bundle folder (the media's bundles/NAME-VERSION).")],
    data_dir: Annotated[Path, typer.Option(help="The worker's data folder (its cluster/ identity, models/, trust/).")],
) -> None:
    """On a joined worker host only (install.sh --role worker runs it): verify a bundle into the worker's own
    model store and mark it active; the head decides what its replicas serve (serving/pins.py)."""
    from appliance.serving.pins import import_on_worker

    vb = import_on_worker(data_dir, folder)
    typer.echo(f"imported {vb.metadata.name} {vb.metadata.version} into {data_dir / 'models'}")
