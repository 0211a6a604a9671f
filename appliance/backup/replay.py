"""The steps of a committed restore (journal.py), each safe to repeat after a kill at any point.

`finish` runs them in order and forgets the plan; it is what `appliance restore` runs after its commit and
what any later `appliance` command runs first when it finds a plan left behind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from appliance.audit import AuditEvent, AuditLog, signer, store
from appliance.audit.console import console_principal
from appliance.audit.models import AuditCheckpointRow
from appliance.audit.witness import Witness
from appliance.backup import journal, snapshot
from appliance.backup import manifest as mf
from appliance.backup.errors import BackupError
from appliance.backup.staging import sign_restore
from appliance.config import Settings
from appliance.db import make_engine


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


def _load_postgres(settings: Settings, step: dict[str, Any]) -> None:
    """Load the dump (one transaction) and sign its head; done already if a restore checkpoint over that head
    was signed after this plan was made."""
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            done = conn.execute(
                select(AuditCheckpointRow.seq).where(
                    AuditCheckpointRow.kind == "restore",
                    AuditCheckpointRow.seq == step["seq"],
                    AuditCheckpointRow.head_hash == step["hash"],
                    AuditCheckpointRow.ts >= step["after"],
                )
            ).first()
    finally:
        engine.dispose()
    if done is not None:
        return
    snapshot.load_postgres(settings.database_url, Path(step["dump"]))
    key = signer.load_or_create(settings.audit_key_path)
    sign_restore(settings.database_url, key, mf.Head(seq=step["seq"], hash=step["hash"], ts=None))


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
        log.append(
            AuditEvent(event="admin.restored", principal=console_principal(), route="cli", detail=step["detail"])
        )


_STEPS: dict[str, Callable[[Settings, dict[str, Any]], None]] = {
    "replace": lambda _settings, step: journal.replace(step),
    "postgres": _load_postgres,
    "witness": _witness_marker,
    "record": _record_restored,
}
