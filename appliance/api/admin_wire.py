"""Typed shapes of the /admin/* requests and answers; answers are declared as `response_model`s so
/openapi.json documents them. The admin page validates its forms and filters with the same types.

Times are ISO 8601 text as the audit log stores them. Audit records are `audit.AuditRecord` itself: the
API shows a record exactly as the chain holds it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Query
from pydantic import AfterValidator, BaseModel, Field

from appliance import apikeys
from appliance.api.schemas import RequestBody
from appliance.audit import AuditRecord
from appliance.audit.chain import VerifyReport
from appliance.bundles.store import StoredBundle
from appliance.usage.report import UsageRow


def _in_range(moment: datetime) -> datetime:
    """A time the log can compare: with four-digit years in UTC (stored times are text in that form)."""
    try:
        utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError("time is outside the years 1000 to 9999") from None
    if not 1000 <= utc.year <= 9999:
        raise ValueError("time is outside the years 1000 to 9999")
    return utc


Moment = Annotated[datetime | None, AfterValidator(lambda v: v if v is None else _in_range(v))]
# Plain printable text only: a NUL or control character reaches no database query (PostgreSQL refuses NUL).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Term = Annotated[str | None, Query(max_length=256, pattern=PRINTABLE)]


class NewKey(RequestBody):
    name: str = Field(min_length=1, max_length=128, pattern=PRINTABLE)
    role: Literal["user", "auditor", "admin"]
    expires_at: Moment = None


class Activation(RequestBody):
    name: str = Field(max_length=256, pattern=PRINTABLE)
    version: str = Field(max_length=256, pattern=PRINTABLE)


class AuditList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditRecord]
    next_cursor: int | None  # pass back as `cursor` for the records before these


class VerifyResult(BaseModel):
    ok: bool
    records: int
    first_seq: int | None
    last_seq: int | None
    head_hash: str | None
    checkpoints: int
    bad_seq: int | None
    reason: str | None
    uncovered: int  # records after the newest signed checkpoint
    uncovered_since: str | None

    @classmethod
    def of(cls, report: VerifyReport) -> VerifyResult:
        return cls(
            ok=report.ok,
            records=report.records,
            first_seq=report.first_seq,
            last_seq=report.last_seq,
            head_hash=report.head_hash,
            checkpoints=report.checkpoints,
            bad_seq=report.bad_seq,
            reason=report.reason,
            uncovered=report.uncovered,
            uncovered_since=report.uncovered_since,
        )


class Key(BaseModel):
    id: str
    name: str
    role: str
    status: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None

    @classmethod
    def of(cls, info: apikeys.KeyInfo) -> Key:
        return cls(
            id=info.key_id,
            name=info.name,
            role=info.role,
            status=info.status,
            created_at=info.created_at.isoformat(),
            expires_at=info.expires_at.isoformat() if info.expires_at else None,
            revoked_at=info.revoked_at.isoformat() if info.revoked_at else None,
        )


class NewKeyCreated(Key):
    key: str  # the secret, shown this once


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Key]


class ReplicaPolicy(BaseModel):
    replica: str
    revision: str
    since: str  # the time of its newest policy.in_force record


class PolicyState(BaseModel):
    revision: str
    version: int
    directory: str
    recorded_revision: str | None
    in_force_here: bool
    replica: str  # the gateway replica that answered
    replicas: list[ReplicaPolicy]


class PolicyReloaded(BaseModel):
    revision: str
    version: int


class Bundle(BaseModel):
    name: str
    version: str
    active: bool
    profile: str
    variant: str
    size: int
    created: str

    @classmethod
    def of(cls, b: StoredBundle) -> Bundle:
        return cls(
            name=b.name,
            version=b.version,
            active=b.active,
            profile=b.metadata.profile,
            variant=b.metadata.variant,
            size=b.size,
            created=b.metadata.created.isoformat(),
        )


class BundleList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Bundle]


class Activated(BaseModel):
    name: str
    version: str
    active: bool = True
    note: str = "serving replicas switch to it at their next health check"


class UsageReport(BaseModel):
    """Totals of the audit log's outcome records over [since, until), per key, group or model."""

    object: Literal["usage_report"] = "usage_report"
    by: Literal["key", "group", "model"]
    since: str
    until: str
    data: list[UsageRow]
