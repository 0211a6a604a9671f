"""The key check in front of everything, before a byte of the body is read, and a limit on failures.

FastAPI reads and parses a request's body before it resolves the route's dependencies, so a key checked
there lets an anonymous caller make the gateway read and parse up to the body limit first. This ASGI
middleware authenticates the bearer key from the headers alone and answers 401 without reading the body;
the route's `requires(...)` dependency then only checks the role of the principal found here.

Failed authentications are limited per source address by a token bucket (`auth_failure_rate` per second,
`auth_failure_burst` at once). Within the bucket each failure gets its own durable `auth_failure` record;
beyond it the caller gets 429 and its failures are counted, then written as one aggregated record per
source and window (count, first and last time), so a flood of bad keys is recorded in full without
filling the disk or taking group commits from real traffic.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import quote

import structlog

from appliance import apikeys
from appliance.api.errors import ApiError
from appliance.api.peer import cert_subject, lacks_required_certificate, with_certificate
from appliance.audit import AuditEvent
from appliance.audit.store import now_ts
from appliance.principal import Principal

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes: no key
OPEN_PREFIXES = ("/admin/ui",)  # the admin page signs in with a key and keeps its own session
MAX_SOURCES = 10_000  # beyond this many distinct addresses, new ones share one bucket
_OVERFLOW = "*"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # left as they are in a recorded path; everything else is %-encoded
log = structlog.get_logger()


def request_id_from(given: str) -> str:
    """The caller's `x-request-id` when it is a plain token (for correlating with its own logs), else a new one."""
    return given if _REQUEST_ID.fullmatch(given) else f"req_{uuid.uuid4().hex}"


@dataclass
class _Source:
    level: float
    stamp: float
    throttled: int = 0
    first: str | None = None
    last: str | None = None
    since: float = 0.0  # when the current window of throttled failures began


@dataclass(frozen=True)
class Aggregate:
    source: str
    count: int
    first: str
    last: str


class FailureThrottle:
    """Per-source token buckets for failed authentications, and the counts of those turned away."""

    def __init__(
        self,
        rate: float,
        burst: int,
        window_s: float,
        *,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.burst, self.window_s = rate, burst, window_s
        self._max, self._clock = max_sources, clock
        self._sources: dict[str, _Source] = {}

    def admit(self, source: str) -> float | None:
        """None when this failure may be answered (and recorded) on its own; else seconds to wait."""
        now = self._clock()
        if source not in self._sources and len(self._sources) >= self._max:
            source = _OVERFLOW
        s = self._sources.setdefault(source, _Source(float(self.burst), now))
        s.level = min(float(self.burst), s.level + (now - s.stamp) * self.rate)
        s.stamp = now
        if s.level >= 1:
            s.level -= 1
            return None
        stamp = now_ts()
        if not s.throttled:
            s.first, s.since = stamp, now
        s.throttled += 1
        s.last = stamp
        return (1 - s.level) / self.rate if self.rate > 0 else self.window_s

    def due(self, force: bool = False) -> list[Aggregate]:
        """Take the counts whose window has ended (all of them when `force`); forget idle full buckets."""
        now = self._clock()
        out = []
        for source, s in list(self._sources.items()):
            if s.throttled and (force or now - s.since >= self.window_s):
                out.append(Aggregate(source, s.throttled, s.first or "", s.last or ""))
                s.throttled, s.first, s.last = 0, None, None
            if not s.throttled and s.level + (now - s.stamp) * self.rate >= self.burst:
                del self._sources[source]
        return out

    def restore(self, aggregate: Aggregate) -> None:
        """Put back a count whose record could not be written, to be written with the next one."""
        s = self._sources.setdefault(aggregate.source, _Source(0.0, self._clock()))
        s.throttled += aggregate.count
        s.first = min(filter(None, (s.first, aggregate.first)), default=aggregate.first)
        s.last = max(filter(None, (s.last, aggregate.last)), default=aggregate.last)
        s.since = min(s.since or self._clock(), self._clock())

    @property
    def pending(self) -> bool:
        return any(s.throttled for s in self._sources.values())


class AuthGate:
    """ASGI middleware: authenticate from the headers; 401 (or 429 past the limit) before the body."""

    def __init__(self, app, services) -> None:
        self.app, self.svc = app, services
        self._flusher: asyncio.Task | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["path"].startswith(OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = request_id_from(headers.get("x-request-id", ""))
        scheme, _, token = headers.get("authorization", "").partition(" ")
        principal = None
        if scheme.lower() == "bearer" and token.strip():
            principal = await asyncio.to_thread(self._authenticate, token.strip())
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        client = scope.get("client")
        source = client[0] if client else "unknown"
        route = route_of(scope)
        try:
            if principal is None:
                await self._refuse(rid, source, route, cert_subject(scope))
            principal = with_certificate(principal, scope)
            if lacks_required_certificate(self.svc.settings, principal):
                await self.svc.record(
                    AuditEvent(
                        event="denial",
                        request_id=rid,
                        principal=principal,
                        source=source,
                        route=route,
                        status=403,
                        error_code="client_certificate_required",
                    )
                )
                raise ApiError(
                    403, f"role {principal.role} must present a client certificate", code="client_certificate_required"
                )
        except ApiError as exc:
            return await exc.response()(scope, receive, send)
        state["principal"] = principal
        await self.app(scope, receive, send)

    async def _refuse(self, rid: str, source: str, route: str, subject: str | None) -> NoReturn:
        throttle: FailureThrottle = self.svc.auth_throttle
        wait = throttle.admit(source)
        await self.flush()
        if wait is not None:
            self.svc.metrics.auth_throttled.inc()
            self._ensure_flusher()
            raise ApiError(
                429,
                "too many failed authentications from this address; retry later",
                code="auth_rate_limited",
                retry_after=wait,
            )
        await self.svc.record(
            AuditEvent(
                event="auth_failure",
                request_id=rid,
                source=source,
                route=route,
                principal=Principal(cert_subject=subject),
                status=401,
                error_code="invalid_api_key",
            )
        )
        raise ApiError(401, "missing or invalid API key (send Authorization: Bearer <key>)", code="invalid_api_key")

    async def flush(self, force: bool = False) -> None:
        """Write the aggregated records that are due; a count that cannot be written is kept for later."""
        for agg in self.svc.auth_throttle.due(force):
            try:
                await self.svc.audit.append_async(aggregate_event(agg, self.svc.auth_throttle.window_s))
            except Exception as exc:  # noqa: BLE001 - kept and retried: nothing goes unrecorded
                self.svc.auth_throttle.restore(agg)
                log.warning("aggregated auth_failure record not written", source=agg.source, error=str(exc))

    def _ensure_flusher(self) -> None:
        """A window's count is written when the window ends even if that source never comes back."""
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while self.svc.auth_throttle.pending:
            await asyncio.sleep(self.svc.auth_throttle.window_s / 4)
            await self.flush()

    def _authenticate(self, token: str) -> Principal | None:
        with self.svc.sessions() as session:
            return apikeys.authenticate(session, token)


def route_of(scope) -> str:
    """The request's method and path as recorded before routing (no template is known yet): the path
    percent-encoded, so a control character or any other byte is recorded as text; the audit layer cuts it
    to the column's length (chain.bounded)."""
    return f"{scope.get('method', '')} {quote(scope['path'], safe=_PATH_SAFE)}"


def aggregate_event(agg: Aggregate, window_s: float) -> AuditEvent:
    return AuditEvent(
        event="auth_failure",
        source=agg.source,
        status=429,
        error_code="auth_rate_limited",
        detail={
            "aggregated": "true",
            "count": str(agg.count),
            "first": agg.first,
            "last": agg.last,
            "window_s": f"{window_s:g}",
        },
    )
