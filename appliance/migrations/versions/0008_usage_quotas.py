"""Quota counters held in the database, so every gateway replica and every restart sees the same count.

`usage_counters`: one row per (scope, quota id, period): used and reserved input tokens, output tokens and
requests. `usage_reservations`: what each admitted request reserved, with an expiry, so a request whose
replica crashed before settling gives its reservation back. `rate_buckets`: the per-minute token buckets
of each key, shared by every replica.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

AMOUNTS = ("input_tokens", "output_tokens", "requests")


def upgrade() -> None:
    op.create_table(
        "usage_counters",
        sa.Column("scope", sa.String(160), primary_key=True),
        sa.Column("quota_id", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(10), primary_key=True),
        *(sa.Column(f"used_{a}", sa.BigInteger(), nullable=False, server_default="0") for a in AMOUNTS),
        *(sa.Column(f"reserved_{a}", sa.BigInteger(), nullable=False, server_default="0") for a in AMOUNTS),
    )
    op.create_table(
        "usage_reservations",
        sa.Column("reservation", sa.String(32), primary_key=True),
        sa.Column("scope", sa.String(160), primary_key=True),
        sa.Column("quota_id", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(10), primary_key=True),
        *(sa.Column(a, sa.BigInteger(), nullable=False) for a in AMOUNTS),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_usage_reservations_expires_at", "usage_reservations", ["expires_at"])
    op.create_table(
        "rate_buckets",
        sa.Column("key_id", sa.String(160), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("level", sa.Float(), nullable=True),  # NULL: full
        sa.Column("stamp", sa.Float(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_index("ix_usage_reservations_expires_at", "usage_reservations")
    op.drop_table("usage_reservations")
    op.drop_table("usage_counters")
