"""/admin/*: the audit log (auditor and admin), keys, policy and bundles (admin). Changes are audited."""

from __future__ import annotations

import asyncio
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path as FsPath
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, Field

from appliance import apikeys
from appliance.api import admin_wire as wire
from appliance.api.auth import AdminCaller, AuditorCaller, Caller, ServicesDep
from appliance.api.errors import ApiError
from appliance.api.policy_follow import record_in_force, recorded_revision, replicas_in_force
from appliance.api.schemas import RequestBody
from appliance.api.services import Services
from appliance.api.wire import ERRORS
from appliance.audit import AuditEvent, AuditFilter, AuditRecord
from appliance.audit.log import MAX_SEQ
from appliance.errors import ApplianceError
from appliance.policy.pack import PolicySet, load_options
from appliance.usage.periods import site_zone
from appliance.usage.report import bounds, usage_report

router = APIRouter(prefix="/admin", responses=ERRORS)


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
_ISO = r"^[0-9T:.+\-Z ]+$"
Term = Annotated[str | None, Query(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")]


def audit_event(caller: Caller, event: str, **detail: str) -> AuditEvent:
    return AuditEvent(event=event, request_id=caller.request_id, principal=caller.principal, source=caller.source,
                      route=caller.route, status=200, detail=detail)


# -- audit --------------------------------------------------------------------------------------------
@router.get("/audit")
async def audit_list(caller: AuditorCaller, svc: ServicesDep,
                     since: Moment = None, until: Moment = None, principal: Term = None,
                     event: Term = None, action: Term = None, model: Term = None,
                     cursor: int | None = Query(None, ge=0, le=MAX_SEQ),
                     limit: int = Query(50, ge=1, le=1000)) -> wire.AuditList:
    page = await asyncio.to_thread(svc.audit.query, AuditFilter(since, until, principal, event, action, model),
                                   cursor, limit)
    return wire.AuditList(data=page.records, next_cursor=page.next_cursor)


@router.get("/audit/verify")
async def audit_verify(caller: AuditorCaller, svc: ServicesDep) -> wire.VerifyResult:
    return wire.VerifyResult.of(await asyncio.to_thread(svc.audit.verify))


@router.get("/audit/export", response_class=StreamingResponse, responses={200: {
    "content": {"application/x-ndjson": {}, "text/csv": {}}, "description": "Every record, oldest first"}})
async def audit_export(caller: AuditorCaller, svc: ServicesDep,
                       format: Literal["jsonl", "csv"] = "jsonl") -> StreamingResponse:
    return await export_response(svc, format)


async def export_response(svc: Services, format: str, filters: AuditFilter | None = None,
                          filename: str = "audit") -> StreamingResponse:
    """Written to an unnamed temporary file (unlinked at once: nothing is left behind whatever the client
    does), then streamed in blocks. Shared with the admin page."""
    fd, name = tempfile.mkstemp(prefix="audit-export-", suffix=f".{format}")
    os.close(fd)
    try:
        await asyncio.to_thread(svc.audit.export, format, FsPath(name), None, filters)
        handle = open(name, "rb")
    finally:
        os.unlink(name)

    def blocks():
        with handle:
            while block := handle.read(1 << 20):
                yield block

    return StreamingResponse(blocks(), media_type="application/x-ndjson" if format == "jsonl" else "text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{filename}.{format}"'})


@router.get("/usage")
async def usage(caller: AuditorCaller, svc: ServicesDep,
                start: Annotated[str, Query(alias="from", max_length=40, pattern=_ISO)],
                end: Annotated[str, Query(alias="to", max_length=40, pattern=_ISO)],
                by: Literal["key", "group", "model"] = "key") -> wire.UsageReport:
    """Requests and tokens per key, group or model over a period: dates are whole days in the site's time
    zone (`to` included); the totals are the audit log's outcome records, summed."""
    since, until = bounds(start, end, site_zone(svc.settings.site_timezone))
    rows = await asyncio.to_thread(usage_report, svc.audit, svc.policy.current, by, since, until)
    return wire.UsageReport(by=by, since=since.isoformat(), until=until.isoformat(), data=rows)


@router.get("/audit/{seq}")
async def audit_show(seq: Annotated[int, Path(ge=0, le=MAX_SEQ)], caller: AuditorCaller,
                     svc: ServicesDep) -> AuditRecord:
    record = await asyncio.to_thread(svc.audit.get, seq)
    if record is None:
        raise ApiError(404, f"no audit record {seq}", code="not_found")
    return record


# -- keys ---------------------------------------------------------------------------------------------
class NewKey(RequestBody):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")
    role: Literal["user", "auditor", "admin"]
    expires_at: Moment = None


@router.get("/keys")
async def keys_list(caller: AdminCaller, svc: ServicesDep) -> wire.KeyList:
    with svc.sessions() as session:
        return wire.KeyList(data=[wire.Key.of(k) for k in apikeys.list_keys(session)])


@router.post("/keys", status_code=201)
async def keys_create(body: NewKey, caller: AdminCaller, svc: ServicesDep) -> wire.NewKeyCreated:
    token, info = await create_key(svc, caller, body)
    return wire.NewKeyCreated(**wire.Key.of(info).model_dump(), key=token)


@router.delete("/keys/{key_id}")
async def keys_revoke(key_id: str, caller: AdminCaller, svc: ServicesDep) -> wire.Key:
    return wire.Key.of(await revoke_key(svc, caller, key_id))


async def create_key(svc: Services, caller: Caller, body: NewKey) -> tuple[str, apikeys.KeyInfo]:
    """Create, record, and take back the key if the record fails (shared with the admin page)."""
    with svc.sessions() as session:
        try:
            token, info = apikeys.create_key(session, body.name, body.role, body.expires_at)
        except ApplianceError as exc:
            raise ApiError(400, str(exc)) from exc
    try:
        await svc.record(audit_event(caller, "admin.key_created", key_id=info.key_id, role=info.role, name=info.name))
    except ApiError:
        with svc.sessions() as session:  # no record, no key: an unaudited key must not stay usable
            apikeys.revoke_key(session, info.key_id)
        raise
    return token, info


async def revoke_key(svc: Services, caller: Caller, key_id: str) -> apikeys.KeyInfo:
    """Recorded first, then revoked: fail closed (shared with the admin page)."""
    with svc.sessions() as session:
        known = any(k.key_id == key_id for k in apikeys.list_keys(session))
    if not known:
        raise ApiError(404, f"no key with id {key_id}", code="not_found")
    await svc.record(audit_event(caller, "admin.key_revoked", key_id=key_id))
    with svc.sessions() as session:
        return apikeys.revoke_key(session, key_id)


# -- policy -------------------------------------------------------------------------------------------
@router.get("/policy")
async def policy_show(caller: AdminCaller, svc: ServicesDep) -> wire.PolicyState:
    current = svc.policy.current
    recorded = await asyncio.to_thread(recorded_revision, svc)
    replicas = await asyncio.to_thread(replicas_in_force, svc)
    return wire.PolicyState(revision=current.revision, version=current.version,
                            directory=str(svc.settings.policy_dir), recorded_revision=recorded,
                            in_force_here=recorded in (None, current.revision), replica=svc.replica,
                            replicas=[wire.ReplicaPolicy(**r) for r in replicas])


@router.post("/policy/reload")
async def policy_reload(caller: AdminCaller, svc: ServicesDep) -> wire.PolicyReloaded:
    s = svc.settings
    try:  # validated first, then recorded, then put in force: no unaudited policy is ever in force
        candidate = await asyncio.to_thread(PolicySet.from_settings, s)
        await svc.record(audit_event(caller, "admin.policy_reloaded", revision=candidate.revision))
        options = load_options(s)  # exactly the pack whose revision was recorded; other replicas follow it
        loaded = svc.policy.install(candidate, require_signed=options["require_signed"],
                                    min_version=options["min_version"])
        await asyncio.to_thread(record_in_force, svc)
    except ApplianceError as exc:
        raise ApiError(400, f"policy not reloaded, the previous one stays in force: {exc}",
                       code="invalid_policy") from exc
    return wire.PolicyReloaded(revision=loaded.revision, version=loaded.version)


# -- bundles ------------------------------------------------------------------------------------------
class Activation(RequestBody):
    name: str = Field(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")
    version: str = Field(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")


@router.get("/bundles")
async def bundles_list(caller: AdminCaller, svc: ServicesDep) -> wire.BundleList:
    return wire.BundleList(data=[wire.Bundle.of(b) for b in await asyncio.to_thread(svc.store.list)])


@router.post("/bundles/activate")
async def bundles_activate(body: Activation, caller: AdminCaller, svc: ServicesDep) -> wire.Activated:
    try:  # verified, then recorded, then switched: no unaudited activation
        await asyncio.to_thread(svc.store.open, body.name, body.version, svc.bundle_trust())
        await svc.record(audit_event(caller, "admin.bundle_activated", name=body.name, version=body.version))
        await asyncio.to_thread(svc.store.mark_active, body.name, body.version)
    except ApplianceError as exc:
        raise ApiError(400, str(exc), code="invalid_bundle") from exc
    return wire.Activated(name=body.name, version=body.version)
