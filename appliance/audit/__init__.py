"""The tamper-evident audit log: hash-chained records, signed checkpoints, one ordered chain per database."""

from appliance.audit.chain import VerifyReport
from appliance.audit.errors import AuditError, AuditTampered, AuditUnavailable
from appliance.audit.events import EVENTS, AuditEvent, AuditRecord, RecordDecision, RecordUsage, content_for
from appliance.audit.log import AuditFilter, AuditLog, AuditPage, PruneResult

__all__ = ["EVENTS", "AuditError", "AuditEvent", "AuditFilter", "AuditLog", "AuditPage", "AuditRecord",
           "AuditTampered", "AuditUnavailable", "PruneResult", "RecordDecision", "RecordUsage",
           "VerifyReport", "content_for"]
