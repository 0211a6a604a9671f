"""Server-side sessions for the admin page: an API key is exchanged once for a random session id.

Only the id's SHA-256 is stored, so a copy of the database holds no usable session. A session ends at
sign-out, after `IDLE` without a request, `ABSOLUTE` after sign-in, or as soon as its key is revoked or
expires (checked on every request). Rows live in the database, so every gateway replica shares them.

A session is bound to the client certificate it was signed in with (its verified subject, or none): a
request that presents another subject, or none where one was presented, does not belong to it, so a
stolen cookie is no use without the certificate that `tls_roles_require_client_cert` asked for.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, String, delete, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from appliance import apikeys, directory
from appliance.db import Base
from appliance.principal import Principal

IDLE = timedelta(minutes=15)
ABSOLUTE = timedelta(hours=8)
TOUCH_EVERY = timedelta(seconds=30)  # last_seen is written at most this often: page views stay reads


class UiSession(Base):
    __tablename__ = "ui_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    csrf_token: Mapped[str] = mapped_column(String(64))  # the form half; the cookie holds its signed twin
    cert_subject: Mapped[str | None] = mapped_column(String(1024))  # migration 0006: the sign-in certificate
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class SignedIn:
    principal: Principal
    created_at: datetime
    csrf_token: str


def start(session: Session, principal: Principal, csrf_token: str, replaces: str | None = None) -> str:
    """A new session for `principal` (ending the one whose id is `replaces`); returns its id.

    `csrf_token` is issued with the session and kept for its life, so pages open in several tabs all post."""
    if replaces:
        end(session, replaces)
    now = datetime.now(UTC)
    session.execute(delete(UiSession).where(UiSession.last_seen < now - IDLE))  # sweep the expired
    sid = secrets.token_urlsafe(32)
    session.add(
        UiSession(
            id_sha256=_digest(sid),
            key_id=principal.key_id,
            name=principal.name,
            role=principal.role,
            csrf_token=csrf_token,
            cert_subject=principal.cert_subject,
            created_at=now,
            last_seen=now,
        )
    )
    session.commit()
    return sid


class WrongCertificate(Exception):
    """The session exists but this request does not present the certificate it was signed in with; the
    session has been ended. Carries the session's principal with the certificate presented (for the record)."""

    def __init__(self, principal: Principal) -> None:
        super().__init__("the session's client certificate is not the one presented")
        self.principal = principal


def lookup(session: Session, sid: str | None, cert_subject: str | None) -> SignedIn | None:
    """The live session `sid` for a request presenting `cert_subject`, refreshed; None (and the row gone)
    when expired or its key is no longer active. Raises WrongCertificate (the row gone too) when the
    request's certificate is not the one the session was signed in with."""
    if not sid:
        return None
    row = session.get(UiSession, _digest(sid))
    if row is None:
        return None
    now = datetime.now(UTC)
    created, seen = apikeys.as_utc(row.created_at), apikeys.as_utc(row.last_seen)
    stolen = row.cert_subject != cert_subject
    principal = Principal(key_id=row.key_id, name=row.name, role=row.role, cert_subject=row.cert_subject)
    signed_in = SignedIn(principal, created, row.csrf_token)
    ended = stolen or now - seen > IDLE or now - created > ABSOLUTE or not _key_active(session, row.key_id)
    if ended or now - seen > TOUCH_EVERY:
        # The write gets a transaction of its own: on SQLite, a write on top of this read's snapshot fails at
        # once ("database is locked", no busy wait) when another connection has committed since.
        session.rollback()
        where = UiSession.id_sha256 == _digest(sid)
        session.execute(
            delete(UiSession).where(where) if ended else update(UiSession).where(where).values(last_seen=now)
        )
        session.commit()
    if stolen:
        raise WrongCertificate(principal.model_copy(update={"cert_subject": cert_subject}))
    return None if ended else signed_in


def _key_active(session: Session, key_id: str) -> bool:
    """The session's API key is still active; a directory user's session (no key) ends only by time or
    sign-out: the directory decided at sign-in (groups are read again at the next one)."""
    if key_id.startswith(directory.KEY_PREFIX):
        return True
    key = session.get(apikeys.ApiKey, key_id)
    return key is not None and apikeys.key_info(key).status == "active"


def end(session: Session, sid: str) -> None:
    session.execute(delete(UiSession).where(UiSession.id_sha256 == _digest(sid)))
    session.commit()


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()
