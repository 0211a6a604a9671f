"""The role each route needs, checked on the principal that `authgate.AuthGate` found for the request.

user: /v1/*; auditor: reads of /admin/audit*; admin: everything. The key itself is checked (and a failure
audited) by the gate before the body is read; a principal whose role may not use the route is audited and
answered 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends, Request

from appliance.api.errors import ApiError
from appliance.api.services import Services
from appliance.audit import AuditEvent
from appliance.principal import Principal

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


def requires(roles: frozenset[str]):
    """A FastAPI dependency that checks the authenticated principal's role."""

    async def dependency(request: Request) -> Caller:
        svc = services(request)
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None:  # the gate lets no unauthenticated request through to a keyed route
            raise ApiError(401, "missing or invalid API key (send Authorization: Bearer <key>)", code="invalid_api_key")
        rid: str = request.state.request_id
        structlog.contextvars.bind_contextvars(request_id=rid)  # every log line of this request carries it
        matched = request.scope.get("route")
        route = f"{request.method} {matched.path if matched else request.url.path}"
        source = request.client.host if request.client else None
        caller = Caller(principal, rid, source, route)
        if principal.role not in roles:
            await svc.record(
                AuditEvent(
                    event="denial",
                    request_id=rid,
                    principal=principal,
                    source=source,
                    route=route,
                    status=403,
                    error_code="role_forbidden",
                )
            )
            raise ApiError(403, f"role {principal.role} may not use {route}", code="role_forbidden")
        return caller

    return dependency


ServicesDep = Annotated[Services, Depends(services)]
UserCaller = Annotated[Caller, Depends(requires(USER))]
AuditorCaller = Annotated[Caller, Depends(requires(AUDITOR))]
AdminCaller = Annotated[Caller, Depends(requires(ADMIN))]
AnyCaller = Annotated[Caller, Depends(requires(USER | AUDITOR))]
