"""Where each SIEM collector's forwarding stands: the last record and checkpoint it was sent (and kept).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_forward_cursors",
        sa.Column("collector", sa.String(128), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("checkpoint_ts", sa.String(27), nullable=False),
        sa.Column("checkpoint_kind", sa.String(16), nullable=False),
        sa.Column("checkpoint_seq", sa.BigInteger, nullable=False),
        sa.Column("delivered_at", sa.String(27), nullable=True),
        sa.Column("attempted_at", sa.String(27), nullable=True),
        sa.Column("error", sa.String(512), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("audit_forward_cursors")
