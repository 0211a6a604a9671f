"""Staging a restore beside the live data: each item next to its target, so the switch is one rename.

Nothing here changes live data: staged copies are named `.NAME.restore-ID` beside their targets and only the
journal's replay (journal.py, replay.py) renames them into place.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from appliance.audit import checkpoints, store
from appliance.audit.witness import FILE as WITNESS_FILE
from appliance.backup import archive, journal, snapshot
from appliance.backup import manifest as mf
from appliance.backup.errors import BackupError
from appliance.bundles.metadata import semver_key
from appliance.config import Settings
from appliance.db import make_engine, sqlite_path
from appliance.policy.floor import read_floor
from appliance.policy.pack import floor_file
from appliance.signing import keys


def stage_database(
    settings: Settings, manifest: mf.Manifest, root: Path, key: keys.PrivateKey, restore_id: str
) -> list[dict[str, Any]]:
    head = manifest.audit_head
    target = sqlite_path(settings.database_url)
    if manifest.database == "sqlite":
        if target is None:
            raise BackupError("the archive holds a SQLite database but this appliance uses PostgreSQL")
        staged = root / snapshot.SQLITE_MEMBER
        sign_restore(f"sqlite:///{staged}", key, head)
        dest = target.with_name(f".{target.name}.restore-{restore_id}")
        archive.check_space(target.parent, staged.stat().st_size, "the restore")
        shutil.move(staged, dest)
        if target.exists():  # fold the old WAL into its file: only the main file is then set aside
            conn = sqlite3.connect(target)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
        return [journal.replace_step(dest, target, restore_id, sqlite=True)]
    if target is not None:
        raise BackupError("the archive holds a PostgreSQL dump but this appliance uses SQLite")
    return [
        {
            "op": "postgres",
            "dump": str(root / snapshot.PG_MEMBER),
            "seq": head.seq,
            "hash": head.hash,
            "after": store.now_ts(),
        }
    ]


def sign_restore(url: str, key: keys.PrivateKey, head: mf.Head) -> None:
    """The `restore` checkpoint over the archived head, chained onto the archived checkpoints."""
    engine = make_engine(url)
    try:
        with store.write_transaction(engine) as conn:
            checkpoints.sign_head(conn, key, None, "restore", head.seq, head.hash, store.now_ts())
    finally:
        engine.dispose()


def stage_witness(settings: Settings, archived: Path, restore_id: str, *, replace_it: bool) -> list[dict]:
    """Keep the current witness when it continues the archived one; else the archived one takes its place."""
    live = settings.audit_witness_dir / WITNESS_FILE
    old = archived.read_bytes() if archived.exists() else b""
    if (live.exists() and not replace_it and live.read_bytes().startswith(old)) or (not live.exists() and not old):
        return []
    dest = live.with_name(f".{live.name}.restore-{restore_id}")
    live.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(old)
    dest.chmod(0o640)  # as the witness makes it
    return [journal.replace_step(dest, live, restore_id)]


def stage_files(
    settings: Settings,
    manifest: mf.Manifest,
    root: Path,
    private: dict[str, bytes],
    restore_id: str,
    missing: list[str],
) -> list[dict[str, Any]]:
    """Trust folders, policy pack and floor, model-store state, restored keys: each beside its target."""
    steps = []
    trees = [("trust", settings.trust_dir), ("policy", settings.policy_dir.resolve())]
    if (root / "policy-trust").is_dir():
        trees.append(("policy-trust", settings.policy_trust_dir))
    for member, target in trees:
        if (root / member).is_dir():
            steps.append(_beside(root / member, target, restore_id))
    state = _merged_state(settings, root / "models" / "state.json", manifest, missing)
    if state is not None:
        staged = root / "models" / "state.merged.json"
        staged.write_text(json.dumps(state, indent=2, sort_keys=True))
        steps.append(_beside(staged, settings.model_store / "state.json", restore_id))
    floor = root / "policy-version-floor"
    if floor.exists():  # the higher floor wins: a restore must not reopen an older signed pack
        merged = max(read_floor(floor), read_floor(floor_file(settings)))
        floor.write_text(f"{merged}\n")
        steps.append(_beside(floor, floor_file(settings), restore_id))
    for name, data in private.items():
        staged = root / "private" / name
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(data)
        staged.chmod(0o600)
        steps.append(_beside(staged, settings.keys_dir / name, restore_id))
    if private:  # the public halves and certificates belong with them (a TLS certificate with its key)
        for pub in sorted(p for p in (root / "keys").rglob("*") if p.is_file()):
            steps.append(_beside(pub, settings.keys_dir / pub.relative_to(root / "keys"), restore_id))
    return steps


def _beside(staged: Path, target: Path, restore_id: str) -> dict[str, Any]:
    """Move a staged member next to its target (same file system: the switch is then one rename)."""
    dest = target.with_name(f".{target.name}.restore-{restore_id}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(staged, dest)
    return journal.replace_step(dest, target, restore_id)


def _merged_state(settings: Settings, archived: Path, manifest: mf.Manifest, missing: list[str]) -> dict | None:
    """The archive's active bundles where the store has them; the higher high-water mark per name."""
    if not archived.exists():
        return None
    old = json.loads(archived.read_text())
    live_path = settings.model_store / "state.json"
    live = json.loads(live_path.read_text()) if live_path.exists() else {}
    active = dict(live.get("active", {}))
    for name, ver in old.get("active", {}).items():
        if (settings.model_store / name / ver).is_dir():
            active[name] = ver
        else:
            ref = next((b for b in manifest.bundles if b.name == name and b.version == ver), None)
            missing.append(f"{name} {ver}" + (f" (model.sig sha256 {ref.model_sig_sha256[:16]})" if ref else ""))
    highest = dict(live.get("highest", {}))
    for name, ver in old.get("highest", {}).items():
        highest[name] = max(ver, highest.get(name, ver), key=semver_key)
    return {**live, **old, "active": active, "highest": highest}


def remove_debris(settings: Settings, restore_id: str) -> None:
    """Debris of a failed or killed preparation (`.restore-ID` in the data folder, `.NAME.restore-ID` beside
    each target); `restore_id` may be `*`."""
    for folder in {
        settings.data_dir,
        settings.model_store,
        settings.keys_dir,
        settings.audit_witness_dir,
        settings.trust_dir.parent,
        settings.policy_dir.resolve().parent,
        settings.policy_trust_dir.parent,
        *([p.parent] if (p := sqlite_path(settings.database_url)) else []),
    }:
        for debris in folder.glob(f".*restore-{restore_id}") if folder.is_dir() else []:
            shutil.rmtree(debris) if debris.is_dir() else debris.unlink()
