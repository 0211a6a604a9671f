"""The tamper-evident audit log: hash-chained records, signed checkpoints, one ordered chain per database.

The names below load on first use (PEP 562): importing any submodule runs this file first, and the installer
imports the standard-library-only `appliance.audit.carry` on a host where SQLAlchemy and pydantic are not
installed yet.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.audit.chain import VerifyReport
    from appliance.audit.errors import AuditError, AuditTampered, AuditUnavailable
    from appliance.audit.events import EVENTS, AuditEvent, AuditRecord, RecordDecision, RecordUsage, content_for
    from appliance.audit.log import AuditFilter, AuditLog, AuditPage, PruneResult

_HOMES = {
    "VerifyReport": "chain",
    "AuditError": "errors",
    "AuditTampered": "errors",
    "AuditUnavailable": "errors",
    "EVENTS": "events",
    "AuditEvent": "events",
    "AuditRecord": "events",
    "RecordDecision": "events",
    "RecordUsage": "events",
    "content_for": "events",
    "AuditFilter": "log",
    "AuditLog": "log",
    "AuditPage": "log",
    "PruneResult": "log",
}

__all__ = [
    "EVENTS",
    "AuditError",
    "AuditEvent",
    "AuditFilter",
    "AuditLog",
    "AuditPage",
    "AuditRecord",
    "AuditTampered",
    "AuditUnavailable",
    "PruneResult",
    "RecordDecision",
    "RecordUsage",
    "VerifyReport",
    "content_for",
]


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
