"""Everything a gateway needs, built once from the settings: the app's dependencies in one place."""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass, field

import structlog
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from appliance.api.authgate import FailureThrottle, aggregate_event
from appliance.api.backend import ModelBackend
from appliance.api.errors import ApiError
from appliance.api.exports import Exports
from appliance.api.judge import backend_judge
from appliance.api.metrics import Metrics
from appliance.audit import AuditEvent, AuditLog, AuditRecord, AuditUnavailable, forward
from appliance.audit.readers import ReadWindows
from appliance.bundles import BundleStore, trusted_keys
from appliance.config import Settings
from appliance.db import make_engine, require_tables
from appliance.policy import PolicyEngine, PolicySet
from appliance.policy.classifier import Classifiers
from appliance.policy.pack import floor_file
from appliance.responses_store import ResponseStore
from appliance.signing import keys
from appliance.tls.expiry import ExpiryWatch
from appliance.usage import QuotaLedger
from appliance.usage.periods import site_zone

log = structlog.get_logger()


@dataclass
class Services:
    settings: Settings
    audit: AuditLog
    policy: PolicyEngine
    backend: ModelBackend
    sessions: sessionmaker
    store: BundleStore
    database: Engine
    metrics: Metrics = field(init=False)
    cert_expiry: ExpiryWatch = field(init=False)
    auth_throttle: FailureThrottle = field(init=False)
    exports: Exports = field(init=False)  # audit exports running here: bounded in number and time
    reads: ReadWindows = field(init=False)  # views and searches of the log, aggregated per window
    # the policy's day and month quotas and per-minute rate buckets, counted in `database`
    quotas: QuotaLedger = field(init=False)
    classifiers: Classifiers = field(init=False)  # the pack's classifier rules, run on `backend`, verdicts cached
    responses: ResponseStore = field(init=False)  # stored Responses, in `database`
    # Names this gateway replica in its `policy.in_force` records (GET /admin/policy lists every replica's)
    replica: str = field(init=False)

    def __post_init__(self) -> None:
        self.cert_expiry = ExpiryWatch(self.settings)
        names = [c.name for c in self.settings.audit_forward]
        self.metrics = Metrics(
            self.backend.stats,
            self.cert_expiry.days_left,
            (names, self.forward_lags) if names else None,
            getattr(self.backend, "replicas", None),  # only a Serve backend has replicas (and nodes)
        )
        s = self.settings
        self.auth_throttle = FailureThrottle(s.auth_failure_rate, s.auth_failure_burst, s.auth_failure_window_s)
        self.exports = Exports(s.audit_export_concurrency, s.audit_export_deadline_s)
        self.reads = ReadWindows(s.audit_read_window_s)
        self.quotas = QuotaLedger(self.database, site_zone(s.site_timezone), s.quota_reservation_ttl_s)
        self.policy.limiter = self.quotas  # per-minute buckets in the database: shared by every replica
        self.classifiers = Classifiers(backend_judge(self.backend))
        self.responses = ResponseStore(self.database, s.responses_retention_days)
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"

    @classmethod
    def from_settings(cls, settings: Settings, backend: ModelBackend) -> Services:
        policy = PolicyEngine(PolicySet.from_settings(settings), floor_file=floor_file(settings))
        store = BundleStore(
            settings.model_store, workers=settings.hash_workers, max_signature_bytes=settings.max_signature_bytes
        )
        engine = make_engine(settings.database_url)
        require_tables(engine, "api_keys", "usage_counters", "stored_responses")
        audit = AuditLog.from_settings(settings)
        audit.start_writer()
        return cls(settings, audit, policy, backend, sessionmaker(engine, expire_on_commit=False), store, engine)

    def forward_lags(self) -> dict[str, int]:
        """Records each collector has not been delivered yet (read at each /metrics scrape; -1: unknown)."""
        names = [c.name for c in self.settings.audit_forward]
        try:
            return {s.name: s.lag for s in forward.states(self.audit.engine, names)}
        except AuditUnavailable:
            return dict.fromkeys(names, -1)

    def forward_warning(self) -> str | None:
        """The admin page's banner while a collector is more than `audit_forward_lag_warning` records behind."""
        limit = self.settings.audit_forward_lag_warning
        lags = [(name, lag) for name, lag in self.forward_lags().items() if lag > limit]
        if not lags:
            return None
        return (
            "Audit forwarding is behind: "
            + "; ".join(f"{name} lacks {lag:,} records" for name, lag in lags)
            + (" (see `appliance audit forward status`)")
        )

    def bundle_trust(self) -> list[keys.PublicKey]:
        return trusted_keys(self.settings.trust_dir)

    async def record(self, event: AuditEvent) -> AuditRecord:
        """Append durably or fail closed with a 503: nothing proceeds without its audit record."""
        start = time.perf_counter()
        try:
            return await self.audit.append_async(event)
        except AuditUnavailable as exc:
            raise ApiError(
                503, "audit store unavailable; request refused (fail closed)", code="audit_unavailable"
            ) from exc
        finally:
            self.metrics.audit_append.observe(time.perf_counter() - start)

    async def record_read(self, event: AuditEvent, count: int, seq: int | None = None) -> None:
        """Record a view or search of the log (audit/readers.py): the first of its window at once (fail closed),
        later ones counted into the window's aggregate, written when the window ends."""
        for agg in self.reads.due():
            await self._record_aggregate(agg)
        if self.reads.counted(event, count, seq):
            return
        await self.record(event)
        for agg in self.reads.opens(event):
            await self._record_aggregate(agg)

    async def _record_aggregate(self, event: AuditEvent) -> None:
        try:
            await self.audit.append_async(event)
        except AuditUnavailable as exc:  # the reads it counts were each preceded by their window's record
            log.error("aggregated audit read record lost", audit_event=event.event, error=str(exc))

    def close(self) -> None:
        """Write what the failed-authentication and read counts still hold, then close the log and the database."""
        for read in self.reads.due(force=True):
            try:
                self.audit.append(read)
            except AuditUnavailable as exc:
                log.error("aggregated audit read record lost at shutdown", audit_event=read.event, error=str(exc))
        for agg in self.auth_throttle.due(force=True):
            try:
                self.audit.append(aggregate_event(agg, self.auth_throttle.window_s))
            except AuditUnavailable as exc:  # the store is down at shutdown: the log line is all that is left
                log.error(
                    "aggregated auth_failure record lost at shutdown",
                    source=agg.source,
                    count=agg.count,
                    error=str(exc),
                )
        self.quotas.close()
        self.audit.close()
        self.database.dispose()
