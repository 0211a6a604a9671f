"""`install.sh --role worker --join FILE`: a host that lends its CPUs and GPUs to the head's Ray, nothing else.

No API, no database, no audit key on a worker: the release's venv, the node's identity from the join file
(`DATA/cluster/`: certificate, key, CA, token; private files 0600), the media's bundles verified into its own
model store with the media's publisher keys (public keys only: `DATA/models`, `DATA/trust`) for the replicas
the head places there, and one hardened unit that runs `ray start --address HEAD` with mutual TLS and the
token, its firewall letting in the cluster's members only (and telling its replicas this host's data folder):
systemd's `IPAddressAllow=` and an nftables ruleset on the unit's cgroup (`PREFIX/etc/appliance-ray-worker.nft`,
cluster/nft.py) that the unit loads at each start. The unit is rendered to `PREFIX/etc/` always and
installed into systemd unless `--no-systemd`. `--leave` stops it and removes the unit and the node's identity
(its key and the token). Standard library and `cryptography` only, like the rest of the installer.
"""

from __future__ import annotations

import argparse
import getpass
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from appliance.backup.sealed import read_passphrase
from appliance.cluster import invite, nft
from appliance.cluster.ca import Cluster
from appliance.cluster.invite import Join
from appliance.cluster.ray_tls import node_environment
from appliance.media import steps, units, venv
from appliance.media.account import run
from appliance.media.manifest import Manifest, MediaError
from appliance.media.target import Target, say
from appliance.media.verify import VerifiedMedia

UNIT = "appliance-ray-worker.service"
NFT = "appliance-ray-worker.nft"
NFT_BIN = Path("/usr/sbin/nft")  # what the unit's ExecStartPre runs (installer/systemd/appliance-ray-worker.service)


def read_join(args: argparse.Namespace) -> tuple[Join, str]:
    """The join file, opened with the passphrase from --join-passphrase-file (or asked at a terminal)."""
    if args.join_passphrase_file is not None:
        passphrase = read_passphrase(args.join_passphrase_file)
    elif sys.stdin.isatty():
        passphrase = getpass.getpass(f"passphrase of {args.join}: ").encode()
    else:
        raise MediaError("--join needs --join-passphrase-file FILE (or a terminal to ask for the passphrase)")
    join, fingerprint = invite.read(args.join, passphrase)
    say(f"join file {args.join}: node {join.name} ({' '.join(join.addresses)}), head {join.head_address}, "
        f"fingerprint {fingerprint}")  # fmt: skip
    return join, fingerprint


def check_rejoin(t: Target, join: Join) -> bool:
    """Whether this host already holds an identity the join file replaces (a rejoin: a rotated token, a new
    certificate, an upgrade). Another cluster's (another CA) or another node name's is refused: leave first."""
    folder = identity(t)
    if not (folder / "join.json").exists():
        return False
    held = json.loads((folder / "join.json").read_text()).get("name")
    if held != join.name or (folder / "ca.crt").read_bytes() != join.files["ca.crt"]:
        raise MediaError(
            f"this host is already node {held} of a cluster and the join file is for {join.name}"
            f"{'' if held != join.name else ' of another cluster'}: run install.sh --role worker --leave first"
        )
    say(f"rejoining as {join.name}: its token and certificate are replaced and its Ray restarted")
    return True


def check_workers_follow(t: Target, version: str) -> None:
    """A head's upgrade refuses to leave its workers on another version silently: a worker runs the head's
    version (its join file demands it), so each is drained, the head upgraded, each rejoined with a fresh join
    file from the new media (docs/cluster-upgrade.md); --allow-older-workers says the operator does exactly that."""
    cluster = Cluster(t.data / "keys" / "cluster")
    behind = [m.name for m in cluster.workers() if m.version != version] if cluster.initialised else []
    if not behind:
        return
    line = (
        f"cluster workers {', '.join(behind)} run another version than {version}: drain, upgrade the head, "
        "rejoin each (docs/cluster-upgrade.md)"
    )
    if not t.args.allow_older_workers:
        raise MediaError(f"{line}; pass --allow-older-workers to upgrade the head first")
    say(f"warning: {line}; a worker still running runs the old release until it is rejoined from the new media")


def check_version(join: Join, manifest: Manifest) -> None:
    if join.version != manifest.version:
        raise MediaError(
            f"this media is {manifest.version} but the head runs {join.version}: install the worker from the "
            "head's media (a cluster runs one version)"
        )


def order(t: Target, verified: VerifiedMedia, join: Join) -> list[tuple[str, Callable[[], object]]]:
    """The worker's install steps (names shared with the head's where the work is the same)."""
    m = verified.manifest
    release = t.prefix / "releases" / m.version
    return [
        ("trust", lambda: steps.trust_release_key(t, verified)),
        ("wheels", lambda: venv.join_wheels(t.media, m.files, release)),
        ("venv", lambda: venv.make_venv(t.media, m.gpu, release)),
        ("account", lambda: steps.own_data(t)),
        ("identity", lambda: t.as_account(lambda: invite.install(join, identity(t)))),
        ("bundles", lambda: t.as_account(lambda: steps.import_bundles(t, m.bundles, m.files, release, worker=True))),
        ("switch", lambda: steps.switch(t, m.version, None)),
        ("systemd", lambda: install_unit(t, join)),
    ]


def identity(t: Target) -> Path:
    return t.data / "cluster"


def render_unit(t: Target, join: Join) -> str:
    folder = identity(t)
    env = node_environment(folder, folder / "ray_auth_token")
    template = (t.media / "installer" / "systemd" / UNIT).read_text()
    return units.render(
        template,
        prefix=t.prefix,
        data=t.data,
        allow=" ".join(join.allow),  # its own addresses too: Ray's processes reach the node at its address
        head=join.head_address,
        node_ip=join.addresses[0],
        ray_env=" ".join(f"{k}={v}" for k, v in env.items()),
    )


def render_firewall(join: Join) -> str:
    """The members' nftables ruleset on the worker unit's cgroup (its members: the join file's, as the unit's
    `IPAddressAllow=`)."""
    return nft.ruleset(list(join.allow), [nft.unit_cgroup(UNIT)], nft.cgroup_prefix())


def check_host(t: Target, join: Join) -> None:
    """Refused before anything is written: a host whose Ray the unit could not firewall, or (with systemd) one
    without systemd or nft, where the unit would fail at its first start."""
    render_firewall(join)
    if t.args.no_systemd:
        return
    if shutil.which("systemctl") is None:
        raise MediaError("systemctl not found: this host has no systemd (use --no-systemd)")
    if not NFT_BIN.exists():
        raise MediaError(
            f"{NFT_BIN} not found: the worker's unit loads its firewall with it (install the nftables package)"
        )


def install_unit(t: Target, join: Join) -> None:
    etc = t.prefix / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    text = render_unit(t, join)
    (etc / UNIT).write_text(text)
    (etc / NFT).write_text(render_firewall(join))
    if t.args.no_systemd:
        return
    (units.UNIT_DIR / UNIT).write_text(text)
    run(["systemctl", "daemon-reload"])


def start(t: Target) -> None:
    """Started, or restarted when it runs (a rejoin: Ray reads the token and certificate only at its start)."""
    if not t.args.no_systemd:
        run(["systemctl", "enable", UNIT])
        run(["systemctl", "restart", UNIT])
        say(f"(re)started {UNIT}: `appliance cluster list --live` on the head shows the node")
    else:
        say(f"the worker's unit is {t.prefix / 'etc' / UNIT} (not started: --no-systemd)")


def leave(t: Target) -> None:
    """Undo the join: the unit stopped and gone, the node's key and the token deleted."""
    if not t.args.no_systemd and shutil.which("systemctl") is not None and (units.UNIT_DIR / UNIT).exists():
        run(["systemctl", "disable", "--now", UNIT])
        (units.UNIT_DIR / UNIT).unlink()
        run(["systemctl", "daemon-reload"])
    meta = identity(t) / "join.json"
    name = json.loads(meta.read_text())["name"] if meta.exists() else None
    (t.prefix / "etc" / UNIT).unlink(missing_ok=True)
    (t.prefix / "etc" / NFT).unlink(missing_ok=True)
    shutil.rmtree(identity(t), ignore_errors=True)
    if name is None:
        say("this host holds no cluster identity: nothing to leave")
    else:
        say(f"left the cluster: on the head, `appliance cluster remove {name}` revokes it and rotates the Ray token")
