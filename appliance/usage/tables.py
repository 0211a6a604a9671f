"""The quota tables (migration 0008), as SQLAlchemy Core tables: the ledger updates counters in place."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, String, Table

from appliance.db import Base

AMOUNTS = ("input_tokens", "output_tokens", "requests")

counters = Table(
    "usage_counters",
    Base.metadata,
    Column("scope", String(160), primary_key=True),  # key:<key id> or group:<name>
    Column("quota_id", String(64), primary_key=True),
    Column("period", String(10), primary_key=True),  # 2026-12-04 (day) or 2026-12 (month), site time
    *(Column(f"used_{a}", BigInteger, nullable=False, server_default="0") for a in AMOUNTS),
    *(Column(f"reserved_{a}", BigInteger, nullable=False, server_default="0") for a in AMOUNTS),
)

reservations = Table(
    "usage_reservations",
    Base.metadata,
    Column("reservation", String(32), primary_key=True),
    Column("scope", String(160), primary_key=True),
    Column("quota_id", String(64), primary_key=True),
    Column("period", String(10), primary_key=True),
    *(Column(a, BigInteger, nullable=False) for a in AMOUNTS),
    Column("expires_at", Float, nullable=False, index=True),  # unix time
)

buckets = Table(
    "rate_buckets",
    Base.metadata,
    Column("key_id", String(160), primary_key=True),
    Column("kind", String(16), primary_key=True),  # rate.requests or rate.tokens
    Column("level", Float),  # NULL: full
    Column("stamp", Float),  # unix time of `level`
)
