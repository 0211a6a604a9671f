"""The API's and the admin page's `Actor` for appliance.admin_actions: who calls, and records written through
`Services.record` (durable, or a 503 and nothing done)."""

from __future__ import annotations

import asyncio

from fastapi.responses import StreamingResponse

from appliance import admin_actions, apikeys
from appliance.admin_actions import Actor
from appliance.api.admin_wire import NewKey
from appliance.api.auth import Caller
from appliance.api.errors import ApiError
from appliance.api.services import Services
from appliance.audit import AuditEvent, AuditFilter
from appliance.audit.readers import filter_text
from appliance.errors import ApplianceError


def audit_event(caller: Caller, event: str, **detail: str) -> AuditEvent:
    """A record of what `caller` did (sign-in and sign-out on the page use it directly)."""
    return AuditEvent(
        event=event,
        request_id=caller.request_id,
        principal=caller.principal,
        source=caller.source,
        route=caller.route,
        status=200,
        detail=detail,
    )


def actor(svc: Services, caller: Caller) -> Actor:
    """For actions run in a worker thread (`asyncio.to_thread`): each record goes through the event loop's
    `Services.record`, the one path every API record takes (metrics, fail-closed 503)."""
    loop = asyncio.get_running_loop()

    def append(event: AuditEvent) -> None:
        asyncio.run_coroutine_threadsafe(svc.record(event), loop).result()

    def recorded_versions(event: str, name: str) -> list[str]:
        return [r.detail["version"] for r in svc.audit.matching(event, name=name) if "version" in r.detail]

    return Actor(
        principal=caller.principal,
        append=append,
        recorded_versions=recorded_versions,
        route=caller.route,
        request_id=caller.request_id,
        source=caller.source,
        status=200,
    )


async def create_key(svc: Services, caller: Caller, body: NewKey) -> tuple[str, apikeys.KeyInfo]:
    """The API route and the admin page's form."""
    try:
        return await asyncio.to_thread(
            admin_actions.create_key, actor(svc, caller), svc.sessions, body.name, body.role, body.expires_at
        )
    except ApplianceError as exc:
        raise ApiError(400, str(exc)) from exc


async def revoke_key(svc: Services, caller: Caller, key_id: str) -> apikeys.KeyInfo:
    """The API route and the admin page's form."""
    try:
        return await asyncio.to_thread(admin_actions.revoke_key, actor(svc, caller), svc.sessions, key_id)
    except admin_actions.UnknownKey as exc:
        raise ApiError(404, str(exc), code="not_found") from exc


async def recorded_export(
    svc: Services, caller: Caller, fmt: str, filters: AuditFilter | None = None, filename: str = "audit"
) -> StreamingResponse:
    """An export of the log (API and page) that carries its own `audit.exported` record: who, the filter and
    how many records match, written first."""

    async def record() -> int:
        count = await asyncio.to_thread(svc.audit.count, filters)
        own = await svc.record(
            audit_event(caller, "audit.exported", filter=filter_text(filters), count=str(count), format=fmt)
        )
        return own.seq

    return await svc.exports.response(svc.audit, fmt, filters, filename, record)
