"""The audit tables. Column order of `AuditRecordRow` below `seq` is the canonical order (see chain.py)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db import Base


class AuditRecordRow(Base):
    """One committed record. Decision lists and maps are stored as their canonical JSON text."""

    __tablename__ = "audit_records"
    __table_args__ = tuple(
        Index(f"ix_audit_records_{c}_seq", c, "seq")
        for c in ("event", "principal_key_id", "model", "action", "principal_name", "policy_revision", "status")
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(27), index=True)
    event: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128), index=True)
    principal_key_id: Mapped[str | None] = mapped_column(String(128))
    principal_name: Mapped[str | None] = mapped_column(String(256))
    principal_role: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(256))
    route: Mapped[str | None] = mapped_column(String(256))
    model: Mapped[str | None] = mapped_column(String(256))
    bundle_version: Mapped[str | None] = mapped_column(String(128))
    policy_revision: Mapped[str | None] = mapped_column(String(128))
    action: Mapped[str | None] = mapped_column(String(32))
    rule_ids: Mapped[str] = mapped_column(Text)
    findings: Mapped[str] = mapped_column(Text)
    content_mode: Mapped[str | None] = mapped_column(String(16))
    content: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    reasoning_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[str] = mapped_column(Text)
    # added in migration 0005, after format 1's columns: hashed only when set (chain.OPTIONAL_TAIL)
    principal_cert_subject: Mapped[str | None] = mapped_column(String(1024))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


# The declared length of each bounded text column: what chain.bounded cuts a value to before it is hashed.
COLUMN_LIMITS = {
    c.name: c.type.length for c in AuditRecordRow.__table__.columns if isinstance(c.type, String) and c.type.length
}


class AuditCheckpointRow(Base):
    """A signed statement "record `seq` has hash `head_hash`", made at `ts`.

    `kind` is `periodic` (every N records or T seconds) or `anchor` (left by prune so the first remaining
    record still links to something signed). The kind is part of the signed message, so a periodic
    checkpoint cannot pass for a prune anchor. `prev_checkpoint` chains each checkpoint to the one before it
    (signed too), so deleting one from the middle shows.
    """

    __tablename__ = "audit_checkpoints"
    __table_args__ = (Index("ix_audit_checkpoints_seq", "seq"),)

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    head_hash: Mapped[str] = mapped_column(String(64))
    ts: Mapped[str] = mapped_column(String(27))
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    prev_checkpoint: Mapped[str | None] = mapped_column(String(64))  # the previous checkpoint's digest


class AuditForwardCursorRow(Base):
    """How far one SIEM collector has been fed: the last record (`seq`) and the last checkpoint (by its
    signing time, kind and seq) it was sent and kept, and the last failure (migration 0007)."""

    __tablename__ = "audit_forward_cursors"

    collector: Mapped[str] = mapped_column(String(128), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    checkpoint_ts: Mapped[str] = mapped_column(String(27))
    checkpoint_kind: Mapped[str] = mapped_column(String(16))
    checkpoint_seq: Mapped[int] = mapped_column(BigInteger)
    delivered_at: Mapped[str | None] = mapped_column(String(27))
    attempted_at: Mapped[str | None] = mapped_column(String(27))
    error: Mapped[str | None] = mapped_column(String(512))
