"""Transactions on the audit tables: the cross-process write lock, the head, checkpoints.

Every writer, in any process on any host, appends inside `write_transaction`: SQLite's `BEGIN IMMEDIATE`
or a PostgreSQL transaction-scoped advisory lock. Inside it the head is read from the table itself, so the
chain stays one line however many processes write, and a failed transaction leaves nothing to undo.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text

from appliance.audit.chain import GENESIS, TS_FORMAT, Checkpoint
from appliance.audit.models import AuditCheckpointRow, AuditRecordRow

_PG_LOCK_ID = 0x6170706C61756469  # "applaudi": the audit chain's advisory lock


def now_ts() -> str:
    """UTC now, fixed width with microseconds, so text order is time order."""
    return format_ts(datetime.now(UTC))


def format_ts(moment: datetime) -> str:
    """`moment` as stored; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(TS_FORMAT)


def parse_ts(ts: str) -> datetime:
    return datetime.strptime(ts, TS_FORMAT).replace(tzinfo=UTC)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction holding the chain's write lock on a new connection; commits on exit."""
    with engine.connect() as conn, locked(conn) as locked_conn:
        yield locked_conn


@contextmanager
def locked(conn: Connection) -> Iterator[Connection]:
    """A transaction on `conn` holding the chain's write lock; commits on exit, rolls back on error."""
    conn.execution_options(immediate=True)
    with conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(_PG_LOCK, {"id": _PG_LOCK_ID})
        yield conn


_PG_LOCK = text("SELECT pg_advisory_xact_lock(:id)")
_HEAD = select(AuditRecordRow.seq, AuditRecordRow.hash).order_by(AuditRecordRow.seq.desc()).limit(1)
_CHECKPOINT_COLUMNS = (
    AuditCheckpointRow.kind,
    AuditCheckpointRow.seq,
    AuditCheckpointRow.head_hash,
    AuditCheckpointRow.ts,
    AuditCheckpointRow.key_id,
    AuditCheckpointRow.signature,
    AuditCheckpointRow.prev_checkpoint,
)
_LAST_CHECKPOINT = (
    select(*_CHECKPOINT_COLUMNS).order_by(AuditCheckpointRow.seq.desc(), AuditCheckpointRow.kind.desc()).limit(1)
)


def read_head(conn: Connection) -> tuple[int, str]:
    """(seq, hash) of the newest record, or (0, genesis) for an empty log."""
    row = conn.execute(_HEAD).first()
    return (row[0], row[1]) if row else (0, GENESIS)


def last_checkpoint(conn: Connection) -> Checkpoint | None:
    """The newest checkpoint (highest seq; a periodic one before an anchor at the same seq)."""
    row = conn.execute(_LAST_CHECKPOINT).first()
    return Checkpoint(*row) if row else None


def checkpoint_due(conn: Connection, head_seq: int, every: int, seconds: float) -> bool:
    """True when the head is past the last checkpoint by N records, or by any record T seconds after it."""
    last = last_checkpoint(conn)
    if last is None:
        return head_seq > 0
    if head_seq <= last.seq:
        return False
    return head_seq - last.seq >= every or (datetime.now(UTC) - parse_ts(last.ts)).total_seconds() >= seconds


def rows_after(conn: Connection, seq: int) -> list[tuple[Any, ...]]:
    """Records after `seq` as `verify_chain` rows (the stretch a new checkpoint would cover)."""
    from appliance.audit.chain import ROW_COLUMNS

    columns = [getattr(AuditRecordRow, c) for c in ROW_COLUMNS]
    return [
        tuple(r) for r in conn.execute(select(*columns).where(AuditRecordRow.seq > seq).order_by(AuditRecordRow.seq))
    ]


def insert_checkpoint(conn: Connection, cp: Checkpoint) -> None:
    conn.execute(
        insert(AuditCheckpointRow).values(
            kind=cp.kind,
            seq=cp.seq,
            head_hash=cp.head_hash,
            ts=cp.ts,
            key_id=cp.key_id,
            signature=cp.signature,
            prev_checkpoint=cp.prev,
        )
    )


_CHECKPOINT = select(*_CHECKPOINT_COLUMNS)


def load_checkpoints(conn: Connection) -> list[Checkpoint]:
    return [Checkpoint(*row) for row in conn.execute(_CHECKPOINT.order_by(AuditCheckpointRow.seq))]


def covering_checkpoint(conn: Connection, seq: int) -> Checkpoint | None:
    """The first checkpoint at or after `seq`."""
    row = conn.execute(
        _CHECKPOINT.where(AuditCheckpointRow.seq >= seq).order_by(AuditCheckpointRow.seq).limit(1)
    ).first()
    return Checkpoint(*row) if row else None


def newest_checkpoint(conn: Connection) -> Checkpoint | None:
    row = conn.execute(_CHECKPOINT.order_by(AuditCheckpointRow.seq.desc()).limit(1)).first()
    return Checkpoint(*row) if row else None
