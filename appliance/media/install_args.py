"""`install.sh`'s options: parsed and checked together before the installer looks at anything."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.media import account


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="install.sh", description="Install the appliance from this media.")
    p.add_argument("--prefix", type=Path, default=Path("/opt/appliance"))
    p.add_argument("--data-dir", type=Path, help="default: PREFIX/data")
    p.add_argument("--no-systemd", action="store_true", help="run `appliance serve` detached instead of units")
    p.add_argument("--trust-release-key", type=Path, help="release public key to trust (fingerprint shown)")
    p.add_argument("--yes", action="store_true", help="do not ask before changing anything")
    p.add_argument("--verify-only", action="store_true", help="check the media and stop; writes nothing")
    p.add_argument("--rollback", action="store_true", help="return to the previous version and its data")
    p.add_argument("--allow-downgrade", action="store_true")
    p.add_argument("--no-start", action="store_true", help="install but do not start or call the appliance")
    p.add_argument("--stop", action="store_true", help="stop an appliance started with --no-systemd")
    p.add_argument(
        "--user",
        help="with --no-systemd, run the appliance as this account (made when missing; "
        "default appliance; root only on purpose). Ignored without root: it runs as you",
    )
    p.add_argument("--role", choices=("head", "worker"), default="head", help="worker: join a head's Ray cluster")
    p.add_argument("--join", type=Path, help="with --role worker: the join file `appliance cluster invite` wrote")
    p.add_argument("--join-passphrase-file", type=Path, help="file whose first line opens the join file")
    p.add_argument("--leave", action="store_true", help="with --role worker: leave the cluster (unit, identity)")
    p.add_argument(
        "--allow-older-workers",
        action="store_true",
        help="upgrade a cluster head whose workers still run the old version (docs/cluster-upgrade.md)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--tls-cert", type=Path, help="the site CA's server certificate (PEM; with --tls-key)")
    tls.add_argument(
        "--tls-self-signed",
        action="store_true",
        help="make a self-signed certificate for this host (its fingerprint is printed, to pin)",
    )
    p.add_argument("--tls-key", type=Path, help="the key of --tls-cert (PEM, mode 0600)")
    p.add_argument("--tls-ca", type=Path, help="CA bundle for client certificates (mTLS)")
    args = p.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    if args.user not in (None, account.USER) and not (args.no_systemd or args.stop):
        p.error(f"--user goes with --no-systemd or --stop (the systemd units run as {account.USER})")
    if args.role == "worker" and not args.verify_only and (args.join is None) == (not args.leave):
        p.error("--role worker needs --join FILE (to join) or --leave")
    if args.role == "head" and (args.join or args.leave):
        p.error("--join and --leave go with --role worker")
    if args.role == "worker" and args.allow_older_workers:
        p.error("--allow-older-workers is the head's (its upgrade); a worker runs the head's version")
    if args.role == "worker" and (args.rollback or args.tls_cert or args.tls_self_signed):
        p.error("a worker has no API and no database: --rollback and the TLS options are the head's")
    return args
