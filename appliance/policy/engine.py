"""Input decisions: access, limits and guardrails for one request, against the pack in force.

The engine holds one immutable `PolicySet` and swaps it atomically on reload; a decision keeps the set it
was made with, so a response is filtered by the same revision that admitted its request.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from appliance.policy.detectors import Finding
from appliance.policy.errors import PolicyError
from appliance.policy.floor import raise_floor
from appliance.policy.grants import audit_mode, effective_grant, rule_for
from appliance.policy.pack import PolicySet
from appliance.policy.ratelimit import Limiter, RateLimiter
from appliance.policy.redact import redact
from appliance.policy.schema import Grant, InputRule, RateLimit
from appliance.policy.stream import OutputFilter
from appliance.principal import Principal
from appliance.signing import keys

Action = Literal["allow", "redact", "deny"]
_SEVERITY = {"allow": 0, "redact": 1, "deny": 2}
_CONTROL = "injection.control_token"


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class PolicyRequest:
    model: str
    messages: list[Message]
    max_tokens: int | None = None
    reasoning_effort: str | None = None
    tools: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Decision:
    """The outcome for one request. `request` is the redacted request to run (only when not denied)."""

    action: Action
    rule_ids: tuple[str, ...]
    findings: tuple[Finding, ...]
    request: PolicyRequest
    reasoning_visible: bool
    max_tokens: int
    audit_content: Literal["full", "redacted", "hash"]
    revision: str
    message: str = ""
    policy: PolicySet | None = field(default=None, repr=False, compare=False)
    principal: Principal | None = field(default=None, repr=False, compare=False)

    @property
    def denied(self) -> bool:
        return self.action == "deny"

    @property
    def deny_rule(self) -> str | None:
        return self.rule_ids[0] if self.denied and self.rule_ids else None

    @property
    def messages(self) -> list[Message]:
        return self.request.messages

    def output_filter(self) -> OutputFilter:
        """A fresh streaming filter for this response, bound to the decision's pack and principal."""
        assert self.policy is not None and self.principal is not None
        return OutputFilter(self.policy, self.principal)


def evaluate(policy: PolicySet, request: PolicyRequest, principal: Principal) -> Decision:
    """Access first (cheap, and a denied caller learns nothing about the guardrails), then the content."""
    grant = effective_grant(policy, principal)
    cap = grant.max_tokens if grant else 0
    base: dict[str, Any] = dict(
        findings=(),
        request=request,
        revision=policy.revision,
        policy=policy,
        principal=principal,
        reasoning_visible=bool(grant and grant.reasoning_visible),
        max_tokens=min(request.max_tokens or cap, cap),
        audit_content=audit_mode(policy, principal.role),
    )
    denial = _access_denial(policy, request, principal, grant)
    if denial:
        rule_id, message = denial
        # Over a size limit: refused before anything is scanned, and no text of it is kept at all.
        kept = replace(request, messages=[]) if rule_id.startswith("limits.") else _fully_redacted(policy, request)
        return Decision(action="deny", rule_ids=(rule_id,), message=message, **{**base, "request": kept})
    action: Action = "allow"
    fired: dict[str, str] = {}  # rule id -> its action, in firing order
    findings: list[Finding] = []
    messages: list[Message] = []
    message = ""
    for index, msg in enumerate(request.messages):
        hidden: list[Finding] = []
        for finding in policy.scanner.scan(msg.content):
            rule = cast(InputRule | None, rule_for(policy, "input", principal.role, finding.category))
            if rule is None and finding.category != _CONTROL:
                continue
            findings.append(replace(finding, message=index))
            if rule is None:
                continue
            fired[rule.id] = rule.action
            if _SEVERITY[rule.action] > _SEVERITY[action]:
                action, message = rule.action, rule.message
            if rule.action != "allow" and finding.category != _CONTROL:
                hidden.append(finding)
        messages.append(Message(msg.role, redact(msg.content, hidden)))
    ordered = sorted(fired, key=lambda rule_id: _SEVERITY[fired[rule_id]], reverse=True)
    return Decision(
        action=action,
        rule_ids=tuple(ordered),
        message=message,
        **{
            **base,
            "findings": tuple(findings),
            "request": replace(request, messages=messages, max_tokens=base["max_tokens"]),
        },
    )


def _fully_redacted(policy: PolicySet, request: PolicyRequest) -> PolicyRequest:
    """Every finding redacted, whatever the rules say: what a denied request may leave in the audit log."""
    return replace(
        request, messages=[Message(m.role, redact(m.content, policy.scanner.scan(m.content))) for m in request.messages]
    )


def _access_denial(
    policy: PolicySet, request: PolicyRequest, principal: Principal, grant: Grant | None
) -> tuple[str, str] | None:
    override = policy.pack.access.keys.get(principal.key_id or "")
    limits = policy.pack.input.limits
    if grant is None:
        return "access.role", f"role {principal.role!r} has no access"
    if override is not None and override.disabled:
        return "access.key_disabled", "this API key is disabled"
    if not any(fnmatch.fnmatchcase(request.model, pattern) for pattern in grant.models):
        return "access.model", f"model {request.model!r} is not available to role {principal.role!r}"
    if request.reasoning_effort is not None and request.reasoning_effort not in grant.reasoning_effort:
        return "access.reasoning_effort", f"reasoning effort {request.reasoning_effort!r} is not allowed"
    if request.tools and not grant.tools:
        return "access.tools", "tools are not allowed for this role"
    if len(request.messages) > limits.max_messages:
        return "limits.messages", f"more than {limits.max_messages} messages"
    if sum(len(m.content) for m in request.messages) > limits.max_input_chars:
        return "limits.input_chars", f"input longer than {limits.max_input_chars} characters"
    return None


class PolicyEngine:
    """The pack in force, its atomic reload, input decisions and per-key rate limits."""

    def __init__(
        self, policy_set: PolicySet, *, clock: Callable[[], float] = time.monotonic, floor_file: Path | None = None
    ) -> None:
        self._current = policy_set
        self._lock = threading.Lock()
        self.limiter: Limiter = RateLimiter(clock)  # the gateway puts the database's buckets here
        self._floor_file = floor_file
        if policy_set.signed_by:
            raise_floor(floor_file, policy_set.version)

    @property
    def current(self) -> PolicySet:
        return self._current

    def reload(
        self,
        directory: Path,
        *,
        require_signed: bool = False,
        trust: list[keys.PublicKey] | None = None,
        min_version: int = 0,
        max_signature_bytes: int = 16 << 20,
    ) -> PolicySet:
        """Load `directory` and put it in force; on any error raise and keep the pack in force."""
        floor = max(self._current.version, min_version) if require_signed else 0
        loaded = PolicySet.load(
            directory,
            require_signed=require_signed,
            trust=trust,
            min_version=floor,
            max_signature_bytes=max_signature_bytes,
        )
        return self.install(loaded, require_signed=require_signed, min_version=min_version)

    def install(self, loaded: PolicySet, *, require_signed: bool = False, min_version: int = 0) -> PolicySet:
        """Put an already loaded (and audited) pack in force: exactly the bytes whose revision was recorded.

        When signatures are required, a pack older than the one in force (or than the recorded floor) is
        refused (no rollback), and putting a signed pack in force raises the floor.
        """
        with self._lock:
            floor = max(self._current.version, min_version) if require_signed else 0
            if require_signed and loaded.version < floor:
                raise PolicyError(f"policy pack version {loaded.version} is older than {floor} (rollback refused)")
            if loaded.signed_by:
                raise_floor(self._floor_file, loaded.version)
            self._current = loaded
            return loaded

    def evaluate_input(self, request: PolicyRequest, principal: Principal) -> Decision:
        return evaluate(self._current, request, principal)

    def check_rate(self, principal: Principal, tokens: int = 0) -> None:
        """Take one request and `tokens` tokens from the key's budget; raises `RateLimited` (retry_after)."""
        self.limiter.acquire(principal.key_id or "", self.rate_for(principal), tokens)

    def charge_tokens(self, principal: Principal, tokens: int) -> None:
        """Charge tokens used beyond those passed to `check_rate`."""
        self.limiter.charge(principal.key_id or "", self.rate_for(principal), tokens)

    def rate_for(self, principal: Principal) -> RateLimit:
        grant = effective_grant(self._current, principal)
        return grant.rate if grant else RateLimit(requests_per_minute=1, tokens_per_minute=1)
