"""/admin/audit*: the audit log, for auditors and admins (list, verify, export, one record). Every read is
itself recorded (audit/readers.py: searches and views aggregated per window)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from appliance.api import admin_wire as wire
from appliance.api.actors import audit_event, recorded_export
from appliance.api.admin_wire import Moment, Term
from appliance.api.auth import AuditorCaller, ServicesDep
from appliance.api.errors import ApiError
from appliance.api.wire import ERRORS
from appliance.audit import AuditFilter, AuditRecord
from appliance.audit.log import MAX_SEQ
from appliance.audit.readers import filter_text, verified_detail

router = APIRouter(prefix="/admin", responses=ERRORS)


@router.get("/audit")
async def audit_list(
    caller: AuditorCaller,
    svc: ServicesDep,
    since: Moment = None,
    until: Moment = None,
    principal: Term = None,
    event: Term = None,
    action: Term = None,
    model: Term = None,
    cursor: int | None = Query(None, ge=0, le=MAX_SEQ),
    limit: int = Query(50, ge=1, le=1000),
) -> wire.AuditList:
    filters = AuditFilter(since, until, principal, event, action, model)
    page = await asyncio.to_thread(svc.audit.query, filters, cursor, limit)
    count = len(page.records)
    await svc.record_read(audit_event(caller, "audit.searched", filter=filter_text(filters), count=str(count)), count)
    return wire.AuditList(data=page.records, next_cursor=page.next_cursor)


@router.get("/audit/verify")
async def audit_verify(caller: AuditorCaller, svc: ServicesDep) -> wire.VerifyResult:
    report = await asyncio.to_thread(svc.audit.verify)
    await svc.record(audit_event(caller, "audit.verified", **verified_detail(report)))
    return wire.VerifyResult.of(report)


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}, "text/csv": {}}, "description": "Every record, oldest first"}
    },
)
async def audit_export(
    caller: AuditorCaller, svc: ServicesDep, format: Literal["jsonl", "csv"] = "jsonl"
) -> StreamingResponse:
    return await recorded_export(svc, caller, format)


@router.get("/audit/{seq}")
async def audit_show(
    seq: Annotated[int, Path(ge=0, le=MAX_SEQ)], caller: AuditorCaller, svc: ServicesDep
) -> AuditRecord:
    record = await asyncio.to_thread(svc.audit.get, seq)
    await svc.record_read(audit_event(caller, "audit.viewed", filter="{}", seq=str(seq)), int(record is not None), seq)
    if record is None:
        raise ApiError(404, f"no audit record {seq}", code="not_found")
    return record
