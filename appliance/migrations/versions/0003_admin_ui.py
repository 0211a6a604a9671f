"""Admin page: server-side sessions, stored verification results, and (column, seq) indexes so every
filter of the audit list reads its page newest first straight off an index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Replaces the single-column indexes of 0001 on the same columns: (column, seq) serves both lookups.
REPLACED = ("event", "principal_key_id", "model", "action")
FILTERED = (*REPLACED, "principal_name", "policy_revision", "status")


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id_sha256", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "audit_verifications",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger()),
        sa.Column("head_hash", sa.String(64)),
        sa.Column("bad_seq", sa.BigInteger()),
        sa.Column("reason", sa.Text()),
        sa.Column("by_key_id", sa.String(16)),
    )
    for column in REPLACED:
        op.drop_index(f"ix_audit_records_{column}", "audit_records")
    for column in FILTERED:
        op.create_index(f"ix_audit_records_{column}_seq", "audit_records", [column, "seq"])


def downgrade() -> None:
    for column in FILTERED:
        op.drop_index(f"ix_audit_records_{column}_seq", "audit_records")
    for column in REPLACED:
        op.create_index(f"ix_audit_records_{column}", "audit_records", [column])
    op.drop_table("audit_verifications")
    op.drop_table("ui_sessions")
