"""The bodies of the install steps; their order, and the record of which are done, are `installer.py`'s.

Each is idempotent: run again after a kill, it finishes or finds its work done. Standard library only (the
installer runs before any venv exists).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from appliance.files import atomic_write
from appliance.media.join import join_parts
from appliance.media.manifest import MediaError, MediaFile
from appliance.media.target import Target, say, symlink
from appliance.media.verify import VerifiedMedia, media_key
from appliance.signing import keys
from appliance.sqlitecopy import sqlite_backup

ADMIN_KEY = "installer-admin"


def trust_release_key(t: Target, verified: VerifiedMedia) -> None:
    key = media_key(t.media)
    if keys.key_hint(key) != verified.key_hint:
        raise MediaError("release.pub on the media is not the key that signed MANIFEST.json")
    keys.write_public_key(key, t.prefix / "trust" / "release" / f"{verified.key_hint[:16]}.pub")


def write_config(t: Target) -> None:
    config = {"data_dir": str(t.data), "policy_dir": str(t.data / "policies"), "host": t.args.host, "port": t.args.port}
    with atomic_write(t.prefix / "etc" / "appliance.yaml", mode=0o644) as f:
        f.write("".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))


def own_data(t: Target) -> None:
    if t.service() is None:
        (t.data / "home").mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            say("warning: the appliance will run as root, unsandboxed (--user root)")


def snapshot(t: Target, from_version: str | None) -> None:
    """The database before this upgrade's migrations, for `--rollback` (SQLite's online backup)."""
    db = t.data / "appliance.db"
    if from_version is None or not db.exists():
        return
    dest = t.data / "snapshots" / f"{from_version}.db"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    sqlite_backup(db, tmp)
    os.replace(tmp, dest)


def install_tls(t: Target, release: Path) -> None:
    """The site's certificate (replacing one installed before: rotation), or a self-signed one made
    once (an upgrade keeps it, so clients' pins stay valid). Nothing when neither was asked for. The
    operator's files are handed over as private copies the appliance's account can read."""
    a = t.args
    if a.tls_cert is not None:
        with tempfile.TemporaryDirectory(prefix="appliance-tls-") as tmp:
            names = {"--cert": a.tls_cert, "--key": a.tls_key, **({"--ca": a.tls_ca} if a.tls_ca else {})}
            argv = []
            for flag, src in names.items():
                copy = Path(tmp) / flag.strip("-")
                shutil.copyfile(src, copy)
                copy.chmod(0o600)
                argv += [flag, str(copy)]
            Path(tmp).chmod(0o711)  # root's folder: the account reads its copies, changes nothing else
            t.give(*Path(tmp).iterdir())
            out = t.appliance(release, "tls", "install", *argv)
    elif a.tls_self_signed and not t.server_cert().exists():
        out = t.appliance(release, "tls", "self-signed")
    else:
        return
    say(f"  {out.strip()}")


def import_bundles(
    t: Target, folders: tuple[str, ...], files: tuple[MediaFile, ...], release: Path, worker: bool = False
) -> None:
    """The media's bundles, each verified into the store and activated. On the head through `appliance bundle
    trust|import` (each recorded in the audit log); on a worker, which has no audit log, the media's publisher
    keys (covered by the media's signature) are copied as they are and `appliance cluster node-import` verifies
    each bundle into the worker's own store (the head decides which one its replicas serve)."""
    for pub in sorted((t.media / "trust" / "bundles").glob("*.pub")):
        if not (t.data / "trust" / pub.name).exists():
            if worker:
                keys.write_public_key(keys.load_public_key(pub), t.data / "trust" / pub.name)
            else:
                t.appliance(release, "bundle", "trust", str(pub))
    for folder in folders:
        name_version = folder.split("/", 1)[1]
        name, version = name_version.rsplit("-", 1)
        if (t.data / "models" / name / version).exists():
            continue
        src = t.media / folder
        split = [f for f in files if f.parts and f.path.startswith(folder + "/")]
        if split:  # a folder of its own: the whole files linked beside the joined ones
            staging = t.data / ".staging" / name_version
            for f in files:
                if f.path.startswith(folder + "/"):
                    target = staging / f.path[len(folder) + 1 :]
                    if f.parts:
                        join_parts(t.media, f, target)
                    elif not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(t.media / f.path, target)
            src = staging
        if worker:
            t.appliance(release, "cluster", "node-import", str(src), "--data-dir", str(t.data))
        else:
            t.appliance(release, "bundle", "import", str(src), "--activate")
        shutil.rmtree(t.data / ".staging", ignore_errors=True)


def install_policy(t: Target, state: dict) -> None:
    """The media's pack replaces the installed one only when it differs from what earlier media brought:
    a pack edited on site is kept through upgrades that ship the same pack."""
    digest = _tree_digest(t.media / "policies")
    if state.get("policy_digest") != digest:
        t.as_account(lambda: _replace_policy(t))
    state["policy_digest"] = digest


def _replace_policy(t: Target) -> None:
    dest = t.data / "policies"
    tmp = t.data / ".policies.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(t.media / "policies", tmp)
    old = t.data / "policies.previous"
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dest, old)
    os.rename(tmp, dest)


def switch(t: Target, version: str, from_version: str | None) -> None:
    if from_version and from_version != version:
        symlink(t.prefix / "previous", Path("releases") / from_version)
    symlink(t.prefix / "current", Path("releases") / version)


def install_units(t: Target) -> None:
    if t.args.no_systemd:
        return
    from appliance.media.units import install_units

    install_units(t.media / "installer" / "systemd", t.prefix, t.data)


def first_admin_key(t: Target) -> None:
    marker = t.data / "installer" / "admin-key-issued"
    if marker.exists():
        return
    t.token = t.appliance(t.prefix / "current", "keys", "create", "--name", ADMIN_KEY, "--role", "admin").strip()

    def mark() -> None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("the first admin key was printed once by install.sh\n")

    t.as_account(mark)
    print(f"First admin API key (shown once, store it now): {t.token}", flush=True)


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()
