"""API keys on every route but /healthz and /readyz, and the role each route needs.

user: /v1/*; auditor: reads of /admin/audit*; admin: everything. A failed authentication is audited
(fail closed like every record) and answered 401 with the same message whatever the reason, so a caller
learns nothing about which keys exist.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass

import structlog
from fastapi import Request

from appliance import apikeys
from appliance.api.errors import ApiError
from appliance.api.services import Services
from appliance.audit import AuditEvent, Principal

USER, AUDITOR, ADMIN = frozenset({"user", "admin"}), frozenset({"auditor", "admin"}), frozenset({"admin"})


@dataclass(frozen=True)
class Caller:
    """Who is calling and about which request: what every audit record of the request shares."""

    principal: Principal
    request_id: str
    source: str | None
    route: str


def services(request: Request) -> Services:
    return request.app.state.services


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(request: Request) -> str:
    """The caller's `x-request-id` when it is a plain token (for correlating with its own logs), else a new one."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else f"req_{uuid.uuid4().hex}"


def requires(roles: frozenset[str]):
    """A FastAPI dependency that authenticates the bearer key and checks its role."""

    async def dependency(request: Request) -> Caller:
        svc = services(request)
        rid = request_id(request)
        structlog.contextvars.bind_contextvars(request_id=rid)  # every log line of this request carries it
        route = f"{request.method} {request.scope.get('route').path if request.scope.get('route') else request.url.path}"
        source = request.client.host if request.client else None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        principal = None
        if scheme.lower() == "bearer" and token.strip():
            principal = await asyncio.to_thread(_authenticate, svc, token.strip())
        if principal is None:
            await svc.record(AuditEvent(event="auth_failure", request_id=rid, source=source, route=route, status=401,
                                        error_code="invalid_api_key"))
            raise ApiError(401, "missing or invalid API key (send Authorization: Bearer <key>)",
                           code="invalid_api_key")
        caller = Caller(principal, rid, source, route)
        if principal.role not in roles:
            await svc.record(AuditEvent(event="denial", request_id=rid, principal=principal, source=source,
                                        route=route, status=403, error_code="role_forbidden"))
            raise ApiError(403, f"role {principal.role} may not use {route}", code="role_forbidden")
        return caller

    return dependency


def _authenticate(svc: Services, token: str) -> Principal | None:
    with svc.sessions() as session:
        return apikeys.authenticate(session, token)
