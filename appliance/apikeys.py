"""API keys and roles: issued once, stored hashed, compared in constant time.

A key reads `ak-<key id>.<secret>`: the id (not secret) finds the row, the secret's SHA-256 is compared with
`hmac.compare_digest`. Secrets are 256 random bits, so a plain SHA-256 is as strong as a slow password hash
here and costs microseconds per request. Expired and revoked keys fail exactly like unknown ones.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import DateTime, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from appliance.db import Base
from appliance.errors import ApplianceError
from appliance.principal import Principal

Role = Literal["user", "auditor", "admin"]
ROLES: tuple[Role, ...] = ("user", "auditor", "admin")
_TOKEN = re.compile(r"^ak-([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")


class ApiKeyError(ApplianceError):
    """An API key request that cannot be honoured (unknown id, bad role or date)."""


class ApiKey(Base):
    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and as_utc(self.expires_at) <= datetime.now(UTC):
            return "expired"
        return "active"


def create_key(session: Session, name: str, role: str, expires_at: datetime | None = None) -> tuple[str, KeyInfo]:
    """A new key: returns the token (shown once, never stored) and its record."""
    if role not in ROLES:
        raise ApiKeyError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if not name.strip() or len(name) > 128:
        raise ApiKeyError("a key needs a name of 1 to 128 characters")
    now = datetime.now(UTC)
    if expires_at is not None and as_utc(expires_at) <= now:
        raise ApiKeyError("expiry date is in the past")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    row = ApiKey(
        key_id=key_id,
        name=name.strip(),
        role=role,
        secret_sha256=_digest(secret),
        created_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    session.commit()
    return f"ak-{key_id}.{secret}", key_info(row)


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal behind `token`, or None (unknown, malformed, wrong secret, expired or revoked)."""
    m = _TOKEN.match(token)
    row = session.get(ApiKey, m.group(1)) if m else None
    expected = row.secret_sha256 if row else _digest("")  # compare even when absent: same work either way
    ok = hmac.compare_digest(expected, _digest(m.group(2) if m else ""))
    if not (ok and row) or key_info(row).status != "active":
        return None
    return Principal(key_id=row.key_id, name=row.name, role=row.role)


def revoke_key(session: Session, key_id: str) -> KeyInfo:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise ApiKeyError(f"no key with id {key_id}")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.commit()
    return key_info(row)


def discard_key(session: Session, key_id: str) -> None:
    """Remove a key that was never recorded as created (admin_actions' undo): as if it had never been."""
    row = session.get(ApiKey, key_id)
    if row is not None:
        session.delete(row)
        session.commit()


def list_keys(session: Session) -> list[KeyInfo]:
    return [key_info(r) for r in session.scalars(select(ApiKey).order_by(ApiKey.created_at))]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def as_utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)  # SQLite drops the zone


def key_info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        row.key_id,
        row.name,
        row.role,
        as_utc(row.created_at),
        as_utc(row.expires_at) if row.expires_at else None,
        as_utc(row.revoked_at) if row.revoked_at else None,
    )
