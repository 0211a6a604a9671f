"""Liveness and readiness (no key: probes and load balancers), the OpenAPI document (any key) and Prometheus
metrics (admin or auditor)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from appliance.api.auth import AnyCaller, AuditorCaller, ServicesDep
from appliance.api.wire import ERRORS

router = APIRouter(responses=ERRORS)


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
async def readyz(svc: ServicesDep) -> JSONResponse:
    ready = await svc.backend.ready()
    return JSONResponse({"status": "ready" if ready else "not ready"}, status_code=200 if ready else 503)


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request, _: AnyCaller) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format 0.0.4"}},
)
async def metrics(_: AuditorCaller, svc: ServicesDep) -> Response:
    return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4")
