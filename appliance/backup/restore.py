"""`appliance restore`: verify an archive completely, stage it beside the live data, then switch.

Order, and why:
1. a restore left half-done by a kill is finished first (journal.py), so two never interleave;
2. the archive is read once into a staging folder in the data folder while every member is checked
   (archive.py): manifest signature against this appliance's audit key (or `--trust`), hashes, sizes, paths;
3. it is refused when older than the data it replaces (its audit head seq below the current one) or of
   another history (the record at the shorter head differs), unless `--force`; and when the audit key that
   will sign after the restore is not the one that signed the archive (the restored chain would not verify);
4. the staged database's chain is verified against its own checkpoints and the witness;
5. the restore is recorded first in the current log (`admin.restore`), and the records it will remove
   (those after the archive's head, this one included) are exported to `restores/ID/removed-records.jsonl`,
   which verifies alone (`appliance audit verify --file`);
6. a `restore` checkpoint is signed over the archive's head inside the staged database: it chains onto the
   archived checkpoints, covers a tail the snapshot caught unsigned, and, appended to the witness, tells
   `verify` that the witnessed checkpoints beyond that head were removed by this restore (witness.py);
7. commit, then replay the plan (journal.py) and record `admin.restored` in the restored log.
The witness is append-only: the current one is kept and the marker appended, unless it does not continue
the archived one (a new host, another history): then it is set aside and the archived one takes its place.
Rollback counters never go down: the model store's high-water marks and the policy floor are merged (the
higher wins); everything else is the archive's.
"""

from __future__ import annotations

import getpass
import json
import secrets
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from appliance.audit import AuditEvent, AuditFilter, AuditLog, Principal, checkpoints, signer, store
from appliance.audit.chain import verify_chain
from appliance.audit.errors import AuditUnavailable
from appliance.audit.log import raw_rows
from appliance.audit.models import AuditCheckpointRow
from appliance.audit.witness import FILE as WITNESS_FILE
from appliance.audit.witness import Witness
from appliance.backup import archive, journal, sealed, snapshot
from appliance.backup import manifest as mf
from appliance.backup.create import SEALED_KEYS
from appliance.backup.errors import BackupError
from appliance.bundles.metadata import semver_key
from appliance.config import Settings
from appliance.db import make_engine, sqlite_path
from appliance.policy.floor import read_floor
from appliance.policy.pack import floor_file
from appliance.signing import keys

ACTOR = Principal(name=f"cli:{getpass.getuser()}", role="admin")


@dataclass
class Outcome:
    restore_id: str
    manifest: mf.Manifest
    removed: tuple[int, int] | None = None  # seq range the restore removed from the log
    removed_file: Path | None = None
    kept: list[Path] = field(default_factory=list)  # what the restore replaced, kept beside it
    missing_bundles: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def restore(settings: Settings, archive_path: Path, *, force: bool, passphrase: bytes | None,
            trust: list[keys.PublicKey], advance: Callable[[int], None]) -> Outcome:
    finish(settings)
    _remove_staged_siblings(settings, "*")  # left by a restore killed before its commit point
    data = settings.data_dir.resolve()
    restore_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    staging = data / f".restore-{restore_id}"
    try:
        outcome = _prepare(settings, archive_path, staging, restore_id, force=force, passphrase=passphrase,
                           trust=trust, advance=advance)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_staged_siblings(settings, restore_id)
        raise
    finish(settings)
    return outcome


def finish(settings: Settings) -> dict[str, Any] | None:
    """Replay a committed restore to its end (a no-op when none is pending); returns its plan."""
    plan = journal.pending(settings.data_dir)
    if plan is None:
        return None
    for n, step in enumerate(plan["steps"]):
        _STEPS[step["op"]](settings, step)
        journal.crash_point(f"step-{n}")
    journal.done(settings.data_dir, plan)
    return plan


# -- preparing (nothing live changes before the commit) ---------------------------------------------------
def _prepare(settings: Settings, archive_path: Path, staging: Path, restore_id: str, *, force: bool,
             passphrase: bytes | None, trust: list[keys.PublicKey], advance: Callable[[int], None]) -> Outcome:
    own_pub = signer.public_key_path(settings.audit_key_path)
    trusted = [*([keys.load_public_key(own_pub)] if own_pub.exists() else []), *trust]
    if not trusted:
        raise BackupError(f"no trusted audit key: pass --trust AUDIT.pub (no {own_pub} here)")
    root = staging / "archive"
    manifest = archive.read(archive_path, root, trusted, advance)
    outcome = Outcome(restore_id, manifest)
    journal.crash_point("staged")

    private = _private_keys(manifest, root, passphrase, outcome)
    key = _signing_key(settings, manifest, private)
    head = manifest.audit_head
    current = _current(settings, head.seq)
    cur_seq, diverged = current[0] if current else 0, False
    if current is not None:
        if cur_seq > head.seq and not force:
            raise BackupError(f"the archive is older than the data it would replace (its audit head is seq "
                              f"{head.seq}, the log's is {cur_seq}); --force restores it and removes records "
                              f"{head.seq + 1}..{cur_seq}")
        at = min(cur_seq, head.seq)
        diverged = _archived_hash(manifest, root, at) not in (None, current[1])
        if diverged and not force:
            raise BackupError(f"the archive holds another audit history than this appliance (record {at} "
                              f"differs); --force replaces it")

    archived_witness = root / "witness" / WITNESS_FILE
    _check_staged_chain(manifest, root, key, archived_witness)
    if cur_seq > head.seq or diverged:  # records will be removed: say so in the log first, and keep them
        outcome.removed, outcome.removed_file = _record_and_export(settings, manifest, restore_id, archive_path,
                                                                   after=0 if diverged else head.seq)
    journal.crash_point("recorded")

    steps: list[dict[str, Any]] = []
    steps += _stage_database(settings, manifest, root, key, restore_id)
    steps += _stage_witness(settings, archived_witness, restore_id, replace_it=diverged or current is None)
    steps += _stage_files(settings, manifest, root, private, restore_id, outcome)
    steps.append({"op": "witness", "seq": head.seq})
    steps.append({"op": "record", "restore_id": restore_id, "detail": {
        "restore_id": restore_id, "archive": str(archive_path), "archive_created": manifest.created,
        "restored_head": f"{head.seq}:{head.hash}",
        "removed": f"{outcome.removed[0]}..{outcome.removed[1]}" if outcome.removed else "none"}})
    outcome.kept = [Path(s["previous"]) for s in steps if s["op"] == "replace" and Path(s["target"]).exists()]
    journal.crash_point("prepared")
    journal.commit(settings.data_dir, {"id": restore_id, "staging": str(staging), "steps": steps})
    journal.crash_point("committed")
    return outcome


def _private_keys(manifest: mf.Manifest, root: Path, passphrase: bytes | None,
                  outcome: Outcome) -> dict[str, bytes]:
    if not manifest.private_keys:
        if passphrase is not None:
            outcome.notes.append("the archive holds no private keys; the passphrase was not needed")
        return {}
    if passphrase is None:
        outcome.notes.append("the archive's private keys were not restored (no --passphrase-file): this "
                             "appliance keeps its own")
        return {}
    return sealed.unseal((root / SEALED_KEYS).read_bytes(), passphrase)


def _signing_key(settings: Settings, manifest: mf.Manifest, private: dict[str, bytes]) -> keys.PrivateKey:
    """The audit key after the restore (the archive's, when restored, else this host's): it must be the
    one that signed the archive, or the restored checkpoints would not verify under it."""
    name = settings.audit_key_path.name
    if name in private:
        try:
            key = cast(keys.PrivateKey, serialization.load_pem_private_key(private[name], None))
        except ValueError as exc:
            raise BackupError(f"the archive's {name} is not a private key") from exc
    elif settings.audit_key_path.exists():
        key = keys.load_private_key(settings.audit_key_path)
    else:
        raise BackupError("this appliance has no audit key: restore an archive made with --include-private-keys "
                          "and give --passphrase-file")
    if keys.key_hint(key.public_key()) != manifest.audit_key_id:
        raise BackupError("the archive was signed by another audit key than the one this appliance would sign "
                          "with after the restore: give --passphrase-file to restore the archive's keys")
    return key


def _current(settings: Settings, upto: int) -> tuple[int, str | None] | None:
    """(head seq, hash of record `min(head, upto)`) of the live log; None when there is no log yet."""
    path = sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        return None
    try:
        log = AuditLog.from_settings(settings)
    except AuditUnavailable:
        return None
    with log:
        seq, _ = log.head()
        if seq == 0:
            return None
        record = log.get(min(seq, upto)) if upto else None
    return seq, record.hash if record else None


def _archived_hash(manifest: mf.Manifest, root: Path, seq: int) -> str | None:
    if seq == manifest.audit_head.seq:
        return manifest.audit_head.hash
    if manifest.database != "sqlite" or seq <= 0:
        return None  # a PostgreSQL dump is SQL text: only its head is known before it is loaded
    conn = sqlite3.connect(f"file:{root / snapshot.SQLITE_MEMBER}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT hash FROM audit_records WHERE seq = ?", (seq,)).fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def _check_staged_chain(manifest: mf.Manifest, root: Path, key: keys.PrivateKey, witness: Path) -> None:
    """The archived chain must verify before it replaces anything (SQLite; a dump is verified once loaded)."""
    if manifest.database != "sqlite":
        return
    engine = make_engine(f"sqlite:///{root / snapshot.SQLITE_MEMBER}")
    head = manifest.audit_head.seq
    claims = [cp for cp in Witness(witness.parent, use_syslog=False).entries() if cp.seq <= head]
    try:
        with engine.connect() as conn, conn.begin():
            if store.read_head(conn)[0] != head:
                raise BackupError("the archived database's audit head is not the one its manifest names")
            report = verify_chain(raw_rows(conn), store.load_checkpoints(conn),
                                  signer.trust_map([key.public_key()]), witness=claims)
    finally:
        engine.dispose()
    if not report.ok:
        raise BackupError(f"the archived audit log fails verification at seq {report.bad_seq}: {report.reason}")


def _record_and_export(settings: Settings, manifest: mf.Manifest, restore_id: str, archive_path: Path,
                       after: int) -> tuple[tuple[int, int], Path]:
    """Record the restore first in the log it replaces, then export the records after `after`, which it
    removes (the export verifies alone, against the witness lines that name them)."""
    head = manifest.audit_head.seq
    with AuditLog.from_settings(settings) as log:
        marker = log.append(AuditEvent(event="admin.restore", principal=ACTOR, route="cli", detail={
            "restore_id": restore_id, "archive": str(archive_path), "archive_head": str(head)}))
    # a fresh handle: the closing checkpoint above now covers the restore record, so the export verifies
    out = settings.data_dir / "restores" / restore_id / "removed-records.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with AuditLog.from_settings(settings) as log:
        log.export("jsonl", out, filters=AuditFilter(after_seq=after))
    return (after + 1, marker.seq), out


def _stage_database(settings: Settings, manifest: mf.Manifest, root: Path, key: keys.PrivateKey,
                    restore_id: str) -> list[dict[str, Any]]:
    head = manifest.audit_head
    target = sqlite_path(settings.database_url)
    if manifest.database == "sqlite":
        if target is None:
            raise BackupError("the archive holds a SQLite database but this appliance uses PostgreSQL")
        staged = root / snapshot.SQLITE_MEMBER
        _sign_restore(f"sqlite:///{staged}", key, head)
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
    return [{"op": "postgres", "dump": str(root / snapshot.PG_MEMBER), "seq": head.seq, "hash": head.hash,
             "after": store.now_ts()}]


def _sign_restore(url: str, key: keys.PrivateKey, head: mf.Head) -> None:
    """The `restore` checkpoint over the archived head, chained onto the archived checkpoints."""
    engine = make_engine(url)
    try:
        with store.write_transaction(engine) as conn:
            checkpoints.sign_head(conn, key, None, "restore", head.seq, head.hash, store.now_ts())
    finally:
        engine.dispose()


def _stage_witness(settings: Settings, archived: Path, restore_id: str, *, replace_it: bool) -> list[dict]:
    """Keep the current witness when it continues the archived one; else the archived one takes its place."""
    live = settings.audit_witness_dir / WITNESS_FILE
    old = archived.read_bytes() if archived.exists() else b""
    if not replace_it and (not live.exists() or live.read_bytes().startswith(old)):
        return []
    if not live.exists() and not old:
        return []
    dest = live.with_name(f".{live.name}.restore-{restore_id}")
    live.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(old)
    return [journal.replace_step(dest, live, restore_id)]


def _stage_files(settings: Settings, manifest: mf.Manifest, root: Path, private: dict[str, bytes],
                 restore_id: str, outcome: Outcome) -> list[dict[str, Any]]:
    steps = []
    trees = [("trust", settings.trust_dir), ("policy", settings.policy_dir.resolve())]
    if (root / "policy-trust").is_dir():
        trees.append(("policy-trust", settings.policy_trust_dir))
    for member, target in trees:
        if (root / member).is_dir():
            steps.append(_beside(root / member, target, restore_id))
    state = _merged_state(settings, root / "models" / "state.json", manifest, outcome)
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
    if private:
        for pub in sorted((root / "keys").glob("*.pub")):
            steps.append(_beside(pub, settings.keys_dir / pub.name, restore_id))
    return steps


def _beside(staged: Path, target: Path, restore_id: str) -> dict[str, Any]:
    """Move a staged member next to its target (same file system: the switch is then one rename)."""
    dest = target.with_name(f".{target.name}.restore-{restore_id}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(staged, dest)
    return journal.replace_step(dest, target, restore_id)


def _merged_state(settings: Settings, archived: Path, manifest: mf.Manifest,
                  outcome: Outcome) -> dict | None:
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
            outcome.missing_bundles.append(f"{name} {ver}" + (f" (model.sig sha256 {ref.model_sig_sha256[:16]})"
                                                              if ref else ""))
    highest = dict(live.get("highest", {}))
    for name, ver in old.get("highest", {}).items():
        highest[name] = max(ver, highest.get(name, ver), key=semver_key)
    return {**live, **old, "active": active, "highest": highest}


def _remove_staged_siblings(settings: Settings, restore_id: str) -> None:
    """Debris of a failed or killed preparation (`.restore-ID` in the data folder, `.NAME.restore-ID` beside
    each target); `restore_id` may be `*`."""
    for folder in {settings.data_dir, settings.model_store, settings.keys_dir, settings.audit_witness_dir,
                   settings.trust_dir.parent, settings.policy_dir.resolve().parent,
                   settings.policy_trust_dir.parent, *([p.parent] if (p := sqlite_path(settings.database_url))
                                                       else [])}:
        for debris in folder.glob(f".*restore-{restore_id}") if folder.is_dir() else []:
            shutil.rmtree(debris) if debris.is_dir() else debris.unlink()


# -- plan steps after the commit (each safe to repeat) ---------------------------------------------------
def _load_postgres(settings: Settings, step: dict[str, Any]) -> None:
    """Load the dump (one transaction) and sign its head; done already if a restore checkpoint over that head
    was signed after this plan was made."""
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            done = conn.execute(select(AuditCheckpointRow.seq).where(
                AuditCheckpointRow.kind == "restore", AuditCheckpointRow.seq == step["seq"],
                AuditCheckpointRow.head_hash == step["hash"], AuditCheckpointRow.ts >= step["after"])).first()
    finally:
        engine.dispose()
    if done is not None:
        return
    snapshot.load_postgres(settings.database_url, Path(step["dump"]))
    key = signer.load_or_create(settings.audit_key_path)
    _sign_restore(settings.database_url, key, mf.Head(seq=step["seq"], hash=step["hash"], ts=None))


def _witness_marker(settings: Settings, step: dict[str, Any]) -> None:
    """Append the restored database's newest `restore` checkpoint to the witness, once."""
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            cps = [cp for cp in store.load_checkpoints(conn) if cp.kind == "restore" and cp.seq == step["seq"]]
    finally:
        engine.dispose()
    if not cps:
        raise BackupError("the restored database lacks its restore checkpoint")
    marker = max(cps, key=lambda cp: cp.ts)
    witness = Witness(settings.audit_witness_dir)
    if marker not in witness.lines():
        witness.append(marker)


def _record_restored(settings: Settings, step: dict[str, Any]) -> None:
    with AuditLog.from_settings(settings) as log:
        if log.latest("admin.restored", restore_id=step["restore_id"]) is not None:
            return
        log.append(AuditEvent(event="admin.restored", principal=ACTOR, route="cli", detail=step["detail"]))


_STEPS: dict[str, Callable[[Settings, dict[str, Any]], None]] = {
    "replace": lambda _settings, step: journal.replace(step), "postgres": _load_postgres,
    "witness": _witness_marker, "record": _record_restored}
