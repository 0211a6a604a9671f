"""The FastAPI application: routers, OpenAI-shaped errors, a request size limit and per-route metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, HTTPException

from appliance.api import policy_follow
from appliance.api.authgate import AuthGate
from appliance.api.errors import ApiError, install_error_handlers
from appliance.api.peer import PeerGate
from appliance.api.routes import (
    admin_audit,
    admin_bundles,
    admin_keys,
    admin_policy,
    admin_usage,
    chat,
    health,
    models,
    responses,
    stored_responses,
)
from appliance.api.services import Services
from appliance.api.ui import create_ui
from appliance.bundles.metadata import APPLIANCE_VERSION

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024


def create_app(svc: Services, *, owns_services: bool = False) -> FastAPI:
    """The app over `svc`. With `owns_services` (a Serve replica) its lifespan follows recorded policy
    reloads (policy_follow.py) and closes the services at ASGI shutdown (pending aggregated records
    written, the audit writer flushed with a closing checkpoint)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        follower = asyncio.create_task(policy_follow.follow(svc)) if owns_services else None
        yield
        if follower is not None:
            follower.cancel()
        if owns_services:
            await asyncio.to_thread(svc.close)

    app = FastAPI(
        title="gpt-oss appliance",
        version=APPLIANCE_VERSION,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )  # the OpenAPI document: routes/health.py, behind a key
    app.state.services = svc
    install_error_handlers(app)
    for module in (
        chat,
        responses,
        stored_responses,
        models,
        admin_audit,
        admin_keys,
        admin_policy,
        admin_bundles,
        admin_usage,
        health,
    ):
        app.include_router(module.router)
    app.mount("/admin/ui", create_ui(svc))  # its own sessions: the gate lets /admin/ui through
    # outermost last: observe -> size limits -> the attested peer -> the key check (before any body) -> routes
    app.add_middleware(AuthGate, services=svc)
    app.add_middleware(PeerGate, settings=svc.settings)
    app.add_middleware(_Limits)
    app.add_middleware(_Observe, metrics=svc.metrics)
    return app


class _Limits:
    """413 for bodies over MAX_BODY_BYTES (declared or streamed), 431 for oversized headers."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = scope.get("headers", [])
        if sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
            return await ApiError(431, "request headers too large", code="headers_too_large").response()(
                scope, receive, send
            )
        declared = next((v for k, v in headers if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return await _too_large()(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:  # a chunked body has no Content-Length to refuse it by
                raise HTTPException(413, f"request body over {MAX_BODY_BYTES} bytes")
            return message

        await self.app(scope, limited_receive, send)


def _too_large():
    return ApiError(413, f"request body over {MAX_BODY_BYTES} bytes", code="request_too_large").response()


class _Observe:
    """Counts requests by route template and status, times them, and binds the request id to the logs."""

    def __init__(self, app, metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def observed_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        structlog.contextvars.clear_contextvars()
        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
