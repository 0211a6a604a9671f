"""`appliance restore`: verify an archive completely, stage it beside the live data, then switch.

Order, and why:
1. a restore left half-done by a kill is finished first (replay.py), so two never interleave;
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
7. stage every item beside its target (staging.py), commit, replay the plan (journal.py, replay.py), which
   ends by recording `admin.restored` in the restored log.
The witness is append-only: the current one is kept and the marker appended, unless it does not continue
the archived one (a new host, another history): then it is set aside and the archived one takes its place.
Rollback counters never go down: the model store's high-water marks and the policy floor are merged (the
higher wins); everything else is the archive's.
"""

from __future__ import annotations

import secrets
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives import serialization

from appliance.audit import AuditEvent, AuditFilter, AuditLog, parallel, signer, store
from appliance.audit.chain import verify_chain
from appliance.audit.console import console_principal
from appliance.audit.errors import AuditUnavailable
from appliance.audit.log import raw_rows
from appliance.audit.witness import FILE as WITNESS_FILE
from appliance.audit.witness import Witness
from appliance.backup import archive, journal, replay, sealed, snapshot, staging
from appliance.backup import manifest as mf
from appliance.backup.create import SEALED_KEYS
from appliance.backup.errors import BackupError
from appliance.config import Settings
from appliance.db import make_engine, sqlite_path
from appliance.signing import keys

Phases = Callable[[str, int], Callable[[int], None]]  # start(description, total) -> advance(n)


@dataclass
class Outcome:
    restore_id: str
    manifest: mf.Manifest
    removed: tuple[int, int] | None = None  # seq range the restore removed from the log
    removed_file: Path | None = None
    kept: list[Path] = field(default_factory=list)  # what the restore replaced, kept beside it
    missing_bundles: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def restore(
    settings: Settings,
    archive_path: Path,
    *,
    force: bool,
    passphrase: bytes | None,
    trust: list[keys.PublicKey],
    progress: Phases,
) -> Outcome:
    """Restore `archive_path` over this appliance's data; `progress(description, total)` starts a bar."""
    replay.finish(settings)
    staging.remove_debris(settings, "*")  # left by a restore killed before its commit point
    data = settings.data_dir.resolve()
    restore_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    work = data / f".restore-{restore_id}"
    try:
        outcome = _prepare(
            settings, archive_path, work, restore_id, force=force, passphrase=passphrase, trust=trust, progress=progress
        )
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        staging.remove_debris(settings, restore_id)
        raise
    replay.finish(settings)
    return outcome


def _prepare(
    settings: Settings,
    archive_path: Path,
    work: Path,
    restore_id: str,
    *,
    force: bool,
    passphrase: bytes | None,
    trust: list[keys.PublicKey],
    progress: Phases,
) -> Outcome:
    own_pub = signer.public_key_path(settings.audit_key_path)
    trusted = [*([keys.load_public_key(own_pub)] if own_pub.exists() else []), *trust]
    if not trusted:
        raise BackupError(f"no trusted audit key: pass --trust AUDIT.pub (no {own_pub} here)")
    root = work / "archive"
    size = archive_path.stat().st_size if archive_path.is_file() else 0
    manifest = archive.read(archive_path, root, trusted, progress("verifying archive", size))
    outcome = Outcome(restore_id, manifest)
    journal.crash_point("staged")

    private = _private_keys(manifest, root, passphrase, outcome)
    key = _signing_key(settings, manifest, private)
    head = manifest.audit_head
    current = _current(settings, head.seq)
    cur_seq, diverged = current[0] if current else 0, False
    if current is not None:
        if cur_seq > head.seq and not force:
            raise BackupError(
                f"the archive is older than the data it would replace (its audit head is seq "
                f"{head.seq}, the log's is {cur_seq}); --force restores it and removes records "
                f"{head.seq + 1}..{cur_seq}"
            )
        at = min(cur_seq, head.seq)
        diverged = _archived_hash(manifest, root, at) not in (None, current[1])
        if diverged and not force:
            raise BackupError(
                f"the archive holds another audit history than this appliance (record {at} "
                f"differs); --force replaces it"
            )

    archived_witness = root / "witness" / WITNESS_FILE
    verify_staged_chain(manifest, root, key, archived_witness, progress, settings.hash_workers)
    if cur_seq > head.seq or diverged:  # records will be removed: say so in the log first, and keep them
        outcome.removed, outcome.removed_file = _record_and_export(
            settings, manifest, restore_id, archive_path, after=0 if diverged else head.seq
        )
    journal.crash_point("recorded")

    steps: list[dict[str, Any]] = []
    steps += staging.stage_database(settings, manifest, root, key, restore_id)
    steps += staging.stage_witness(settings, archived_witness, restore_id, replace_it=diverged or current is None)
    steps += staging.stage_files(settings, manifest, root, private, restore_id, outcome.missing_bundles)
    steps.append({"op": "witness", "seq": head.seq})
    steps.append(
        {
            "op": "record",
            "restore_id": restore_id,
            "detail": {
                "restore_id": restore_id,
                "archive": str(archive_path),
                "archive_created": manifest.created,
                "restored_head": f"{head.seq}:{head.hash}",
                "removed": f"{outcome.removed[0]}..{outcome.removed[1]}" if outcome.removed else "none",
            },
        }
    )
    outcome.kept = [Path(s["previous"]) for s in steps if s["op"] == "replace" and Path(s["target"]).exists()]
    journal.crash_point("prepared")
    journal.commit(settings.data_dir, {"id": restore_id, "staging": str(work), "steps": steps})
    journal.crash_point("committed")
    return outcome


def _private_keys(manifest: mf.Manifest, root: Path, passphrase: bytes | None, outcome: Outcome) -> dict[str, bytes]:
    if not manifest.private_keys:
        if passphrase is not None:
            outcome.notes.append("the archive holds no private keys; the passphrase was not needed")
        return {}
    if passphrase is None:
        outcome.notes.append(
            "the archive's private keys were not restored (no --passphrase-file): this appliance keeps its own"
        )
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
        raise BackupError(
            "this appliance has no audit key: restore an archive made with --include-private-keys "
            "and give --passphrase-file"
        )
    if keys.key_hint(key.public_key()) != manifest.audit_key_id:
        raise BackupError(
            "the archive was signed by another audit key than the one this appliance would sign "
            "with after the restore: give --passphrase-file to restore the archive's keys"
        )
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


def verify_staged_chain(
    manifest: mf.Manifest, root: Path, key: keys.PrivateKey, witness: Path, progress: Phases, workers: int
) -> None:
    """The archived chain must verify before it replaces anything (SQLite; a dump is verified once loaded), in
    `workers` processes (no writer touches the staged copy meanwhile)."""
    if manifest.database != "sqlite":
        return
    engine = make_engine(f"sqlite:///{root / snapshot.SQLITE_MEMBER}")
    head = manifest.audit_head.seq
    witnessed = Witness(witness.parent, use_syslog=False).read()
    claims = [cp for cp in witnessed.in_force if cp.seq <= head]
    try:
        with engine.connect() as conn, conn.begin():
            if store.read_head(conn)[0] != head:
                raise BackupError("the archived database's audit head is not the one its manifest names")
            report = verify_chain(
                parallel.rows_for(engine, conn, raw_rows, workers),
                store.load_checkpoints(conn),
                signer.trust_map([key.public_key()]),
                witness=claims,
                witness_problems=witnessed.problems,
                progress=progress("verifying audit chain", head),
            )
    finally:
        engine.dispose()
    if not report.ok:
        raise BackupError(f"the archived audit log fails verification at seq {report.bad_seq}: {report.reason}")


def _record_and_export(
    settings: Settings, manifest: mf.Manifest, restore_id: str, archive_path: Path, after: int
) -> tuple[tuple[int, int], Path]:
    """Record the restore first in the log it replaces, then export the records after `after`, which it
    removes (the export verifies alone, against the witness lines that name them)."""
    head = manifest.audit_head.seq
    with AuditLog.from_settings(settings) as log:
        marker = log.append(
            AuditEvent(
                event="admin.restore",
                principal=console_principal(),
                route="cli",
                detail={"restore_id": restore_id, "archive": str(archive_path), "archive_head": str(head)},
            )
        )
    # a fresh handle: the closing checkpoint above now covers the restore record, so the export verifies
    out = settings.data_dir / "restores" / restore_id / "removed-records.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with AuditLog.from_settings(settings) as log:
        log.export("jsonl", out, filters=AuditFilter(after_seq=after))
    return (after + 1, marker.seq), out
