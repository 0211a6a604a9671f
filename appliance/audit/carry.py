"""Audit records written since a database snapshot, carried into that snapshot when it is restored.

Standard library only (sqlite3): the installer's `--rollback` calls it with the host's Python before any
virtual environment exists, so it may import neither SQLAlchemy nor pydantic (nor anything that does).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def carry_over(current: Path, restored: Path) -> int:
    """Copy the audit records of `current` past the head of `restored` into `restored`: they continue its
    chain, so `audit verify` still passes after a rollback. Returns how many records were copied."""
    if not current.exists():
        return 0
    with sqlite3.connect(restored) as dst:
        cols = [r[1] for r in dst.execute("PRAGMA table_info(audit_records)")]
        if not cols:
            return 0
        head = dst.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_records").fetchone()[0]
        dst.execute("ATTACH DATABASE ? AS cur", (str(current),))
        names = ", ".join(cols)
        n = dst.execute(
            f"INSERT INTO audit_records ({names}) SELECT {names} FROM cur.audit_records WHERE seq > ?", (head,)
        ).rowcount
        # Their checkpoints too: the witness holds them, and verify requires the database to keep them.
        own = {r[1] for r in dst.execute("PRAGMA table_info(audit_checkpoints)")}
        theirs = [r[1] for r in dst.execute("PRAGMA cur.table_info(audit_checkpoints)")]
        shared = ", ".join(c for c in theirs if c in own)
        if shared:
            dst.execute(
                f"INSERT INTO audit_checkpoints ({shared}) SELECT {shared} FROM cur.audit_checkpoints c "
                "WHERE c.seq >= ? AND NOT EXISTS (SELECT 1 FROM main.audit_checkpoints m "
                "WHERE m.kind = c.kind AND m.seq = c.seq)",
                (head,),
            )
        dst.commit()
        dst.execute("DETACH DATABASE cur")
    dst.close()
    return n
