"""What one audit record says (NIST 800-53 AU-3: what, when, where, source, outcome, identity).

Callers build an `AuditEvent`; the log adds sequence number, time and the chain fields to make an
`AuditRecord`. Decisions carry rule ids and finding counts, never the matched text: the only text kept is
`content`, already reduced by the caller to what the policy allows (`content_for`).
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from appliance.principal import Principal

EVENTS = frozenset(
    {
        "request",
        "completion",
        "denial",
        "auth_failure",
        "cancelled",
        "error",
        "admin.key_created",
        "admin.key_revoked",
        "admin.policy_reloaded",
        "admin.bundle_imported",
        "admin.bundle_activated",
        "admin.bundle_removed",
        "admin.trust_added",
        "admin.audit_pruned",
        "admin.backup",
        "admin.restore",
        "admin.restored",
        "admin.tls_installed",
        "admin.cluster_initialised",  # the cluster (admin_actions: init, invite, rejoin, drain, remove)
        "admin.cluster_invited",
        "admin.cluster_rejoin_issued",
        "admin.cluster_drained",
        "admin.cluster_removed",
        "session.signin",
        "session.signout",
        "policy.in_force",
        "audit.viewed",
        "audit.searched",
        "audit.exported",
        "audit.verified",  # the log's readers (audit/readers.py)
        "response.viewed",
        "response.deleted",
        "admin.responses_pruned",  # stored Responses (appliance/responses_store.py)
    }
)
ContentMode = Literal["full", "redacted", "hash"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RecordDecision(_Frozen):
    """The policy outcome: action, the rules that fired, and counts of findings per category."""

    action: str | None = None
    rule_ids: tuple[str, ...] = ()
    findings: dict[str, int] = Field(default_factory=dict)


class RecordUsage(_Frozen):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None


class _EventFields(_Frozen):
    event: str
    request_id: str | None = None
    principal: Principal = Principal()
    source: str | None = None
    route: str | None = None
    model: str | None = None
    bundle_version: str | None = None
    policy_revision: str | None = None
    decision: RecordDecision = RecordDecision()
    content_mode: ContentMode | None = None
    content: str | None = None
    usage: RecordUsage = RecordUsage()
    latency_ms: int | None = None
    status: int | None = None
    error_code: str | None = None
    detail: dict[str, str] = Field(default_factory=dict)


class AuditEvent(_EventFields):
    """One thing that happened, as the caller knows it; `detail` holds admin targets (key id, bundle)."""

    @field_validator("event")
    @classmethod
    def _known_event(cls, value: str) -> str:
        if value not in EVENTS:
            raise ValueError(f"unknown audit event {value!r} (known: {', '.join(sorted(EVENTS))})")
        return value

    @field_validator("latency_ms", mode="before")
    @classmethod
    def _whole_milliseconds(cls, value: object) -> object:
        """Floats are rounded so the canonical form never holds a float (their text is not portable)."""
        return round(value) if isinstance(value, float) else value


class AuditRecord(_EventFields):
    """An event as committed: its place in the chain and the time the log assigned."""

    seq: int
    ts: str
    prev_hash: str
    hash: str


def content_for(mode: ContentMode, text: str, redacted_text: str | None = None) -> str:
    """What to store for `text` under the policy's content mode: all of it, the redacted text, or a digest."""
    if mode == "full":
        return text
    if mode == "redacted":
        if redacted_text is None:
            raise ValueError("content mode 'redacted' needs the redacted text")
        return redacted_text
    if mode == "hash":
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    raise ValueError(f"unknown content mode {mode!r}")
