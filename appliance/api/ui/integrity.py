"""The integrity panel's state: verification runs (one at a time, in a thread, with progress) and their
stored results, so every replica and every restart knows when the chain was last proven and how it fared.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import BigInteger, Boolean, DateTime, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from appliance.api.ui.security import PREFIX
from appliance.apikeys import as_utc
from appliance.audit import AuditError, AuditEvent, AuditLog
from appliance.audit.readers import verified_detail
from appliance.db import Base
from appliance.principal import Principal

STALE_AFTER = timedelta(hours=24)
log = structlog.get_logger()


class AuditVerificationRow(Base):
    __tablename__ = "audit_verifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column(Boolean)
    records: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int | None] = mapped_column(BigInteger)
    head_hash: Mapped[str | None] = mapped_column(String(64))
    bad_seq: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(Text)
    by_key_id: Mapped[str | None] = mapped_column(String(16))


@dataclass(frozen=True)
class Banner:
    level: str  # "broken" | "stale"
    message: str


@dataclass(frozen=True)
class Progress:
    running: bool
    done: int
    total: int


class Integrity:
    """Starts verifications and answers what the last one found."""

    def __init__(self, audit: AuditLog, sessions: sessionmaker, stale_after: timedelta = STALE_AFTER) -> None:
        self.audit, self.sessions, self.stale_after = audit, sessions, stale_after
        self._lock = threading.Lock()
        self._progress = Progress(False, 0, 0)

    @property
    def progress(self) -> Progress:
        return self._progress

    def start(self, by: Principal) -> bool:
        """Begin a verification in the background; False when one is already running here."""
        with self._lock:
            if self._progress.running:
                return False
            self._progress = Progress(True, 0, 0)
        threading.Thread(target=self._run, args=(by,), name="audit-verify", daemon=True).start()
        return True

    def last(self) -> AuditVerificationRow | None:
        with self.sessions() as session:
            return session.scalars(
                select(AuditVerificationRow).order_by(AuditVerificationRow.id.desc()).limit(1)
            ).first()

    def banner(self) -> Banner | None:
        """What every page must say while the chain is broken or has gone unproven too long."""
        last = self.last()
        if last is None:
            return Banner("stale", "The audit chain has never been verified here. Run a verification.")
        if not last.ok:
            return Banner("broken", f"The audit chain FAILED verification at seq {last.bad_seq}: {last.reason}")
        age = datetime.now(UTC) - as_utc(last.finished_at)
        if age > self.stale_after:
            return Banner("stale", f"The audit chain was last verified {_hours(age)} ago. Run a verification.")
        return None

    def _run(self, by: Principal) -> None:
        started = datetime.now(UTC)
        total = self.audit.count()
        self._progress = Progress(True, 0, total)

        def advance(n: int) -> None:
            self._progress = Progress(True, self._progress.done + n, total)

        try:
            report = self.audit.verify(progress=advance)
            self._record(by, verified_detail(report))
            row = AuditVerificationRow(
                ok=report.ok,
                records=report.records,
                last_seq=report.last_seq,
                head_hash=report.head_hash,
                bad_seq=report.bad_seq,
                reason=report.reason,
            )
        except AuditError as exc:  # the store itself failed: that is a failed verification too
            row = AuditVerificationRow(ok=False, records=0, reason=str(exc))
        row.started_at, row.finished_at, row.by_key_id = started, datetime.now(UTC), by.key_id
        try:
            with self.sessions() as session:
                session.add(row)
                session.commit()
        finally:
            self._progress = Progress(False, total, total)

    def _record(self, by: Principal, detail: dict[str, str]) -> None:
        """The verification on the log (`audit.verified`); the panel's own row is written regardless."""
        try:
            self.audit.append(
                AuditEvent(event="audit.verified", principal=by, route=f"POST {PREFIX}/integrity/verify", detail=detail)
            )
        except AuditError as exc:
            log.error("audit.verified record not written", error=str(exc))


def _hours(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.0f} days"
