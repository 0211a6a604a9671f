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
from appliance.api.metrics import Metrics
from appliance.audit import AuditEvent, AuditLog, AuditRecord, AuditUnavailable
from appliance.bundles import BundleStore, trusted_keys
from appliance.config import Settings
from appliance.db import make_engine, require_tables
from appliance.policy import PolicyEngine, PolicySet
from appliance.policy.pack import floor_file
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
    # the policy's day and month quotas and per-minute rate buckets, counted in `database`
    quotas: QuotaLedger = field(init=False)
    # Names this gateway replica in its `policy.in_force` records (GET /admin/policy lists every replica's)
    replica: str = field(init=False)

    def __post_init__(self) -> None:
        self.cert_expiry = ExpiryWatch(self.settings)
        self.metrics = Metrics(self.backend.stats, self.cert_expiry.days_left)
        s = self.settings
        self.auth_throttle = FailureThrottle(s.auth_failure_rate, s.auth_failure_burst, s.auth_failure_window_s)
        self.quotas = QuotaLedger(self.database, site_zone(s.site_timezone), s.quota_reservation_ttl_s)
        self.policy.limiter = self.quotas  # per-minute buckets in the database: shared by every replica
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"

    @classmethod
    def from_settings(cls, settings: Settings, backend: ModelBackend) -> Services:
        policy = PolicyEngine(PolicySet.from_settings(settings), floor_file=floor_file(settings))
        store = BundleStore(settings.model_store, workers=settings.hash_workers,
                            max_signature_bytes=settings.max_signature_bytes)
        engine = make_engine(settings.database_url)
        require_tables(engine, "api_keys", "usage_counters")
        audit = AuditLog.from_settings(settings)
        audit.start_writer()
        return cls(settings, audit, policy, backend,
                   sessionmaker(engine, expire_on_commit=False), store, engine)

    def bundle_trust(self) -> list[keys.PublicKey]:
        return trusted_keys(self.settings.trust_dir)

    async def record(self, event: AuditEvent) -> AuditRecord:
        """Append durably or fail closed with a 503: nothing proceeds without its audit record."""
        start = time.perf_counter()
        try:
            return await self.audit.append_async(event)
        except AuditUnavailable as exc:
            raise ApiError(503, "audit store unavailable; request refused (fail closed)",
                           code="audit_unavailable") from exc
        finally:
            self.metrics.audit_append.observe(time.perf_counter() - start)

    def close(self) -> None:
        """Write what the failed-authentication counts still hold, then close the log and the database."""
        for agg in self.auth_throttle.due(force=True):
            try:
                self.audit.append(aggregate_event(agg, self.auth_throttle.window_s))
            except AuditUnavailable as exc:  # the store is down at shutdown: the log line is all that is left
                log.error("aggregated auth_failure record lost at shutdown", source=agg.source,
                          count=agg.count, error=str(exc))
        self.quotas.close()
        self.audit.close()
        self.database.dispose()
