"""Audit log: hash-chained records and signed checkpoints.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, primary_key=True),
        sa.Column("ts", sa.String(27), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128)),
        sa.Column("principal_key_id", sa.String(128)),
        sa.Column("principal_name", sa.String(256)),
        sa.Column("principal_role", sa.String(64)),
        sa.Column("source", sa.String(256)),
        sa.Column("route", sa.String(256)),
        sa.Column("model", sa.String(256)),
        sa.Column("bundle_version", sa.String(128)),
        sa.Column("policy_revision", sa.String(128)),
        sa.Column("action", sa.String(32)),
        sa.Column("rule_ids", sa.Text(), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("content_mode", sa.String(16)),
        sa.Column("content", sa.Text()),
        sa.Column("prompt_tokens", sa.Integer()),
        sa.Column("completion_tokens", sa.Integer()),
        sa.Column("reasoning_tokens", sa.Integer()),
        sa.Column("latency_ms", sa.BigInteger()),
        sa.Column("status", sa.Integer()),
        sa.Column("error_code", sa.String(128)),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    )
    for column in ("ts", "event", "request_id", "principal_key_id", "model", "action"):
        op.create_index(f"ix_audit_records_{column}", "audit_records", [column])
    op.create_table(
        "audit_checkpoints",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, primary_key=True),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("ts", sa.String(27), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_audit_checkpoints_seq", "audit_checkpoints", ["seq"])


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_records")
