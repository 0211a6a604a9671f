"""The shape of a policy pack, validated by pydantic; unknown keys are errors, not silently ignored."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

Effort = Literal["low", "medium", "high"]
AuditContent = Literal["full", "redacted", "hash"]
RuleId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*(?:[.\-][a-z0-9_]+)*$", max_length=64)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=128)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PackInfo(_Strict):
    name: Name
    version: int = Field(ge=1, description="Raised on every release; a signed site refuses a lower one.")
    description: str = ""


class RateLimit(_Strict):
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)


class Quota(_Strict):
    """A cap per calendar day or month in the site's time zone (setting `site_timezone`). Held in the database
    per key or per group, so every gateway replica and restart sees the same count; `models` narrows it to
    some models, whose use it counts together. Counters are kept by `id`: changing a cap keeps the count."""

    id: RuleId
    period: Literal["day", "month"]
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    requests: int | None = Field(default=None, ge=0)
    models: list[str] = Field(default=["*"], min_length=1)

    @model_validator(mode="after")
    def _caps_something(self) -> Quota:
        if self.input_tokens is None and self.output_tokens is None and self.requests is None:
            raise ValueError(f"quota {self.id!r} caps nothing: set input_tokens, output_tokens or requests")
        return self


def _unique_ids(quotas: list[Quota] | None) -> list[Quota] | None:
    ids = [q.id for q in quotas or []]
    if len(ids) != len(set(ids)):
        raise ValueError(f"quota ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return quotas


Quotas = Annotated[list[Quota], AfterValidator(_unique_ids)]


class Grant(_Strict):
    """What one role may do. Models are bundle names or shell patterns ("*", "gpt-oss-*")."""

    models: list[str] = []
    max_tokens: int = Field(default=1024, ge=1)
    reasoning_effort: list[Effort] = ["low", "medium", "high"]
    reasoning_visible: bool = False
    tools: bool = True
    rate: RateLimit = RateLimit()
    quotas: Quotas = []  # each key of the role has its own


class KeyOverride(_Strict):
    """Per API key (by key id): switch it off or narrow it; unset fields keep the role's value."""

    disabled: bool = False
    models: list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    rate: RateLimit | None = None
    quotas: Annotated[list[Quota] | None, AfterValidator(_unique_ids)] = None  # replaces the role's quotas
    group: Name | None = None  # the group (department, project) whose quotas the key shares


class Group(_Strict):
    """Keys that share quotas: every member's use counts against the group's caps (and its own)."""

    description: str = ""
    quotas: Quotas = []


class Access(_Strict):
    roles: dict[Name, Grant]
    keys: dict[str, KeyOverride] = {}
    groups: dict[Name, Group] = {}
    quota_exempt_roles: list[Name] = []  # never exempt by default, admins included

    @model_validator(mode="after")
    def _groups_exist(self) -> Access:
        for key_id, override in self.keys.items():
            if override.group is not None and override.group not in self.groups:
                raise ValueError(f"key {key_id!r} is in group {override.group!r}, which access.groups lacks")
        return self


class Limits(_Strict):
    max_input_chars: int = Field(default=200_000, ge=1)
    max_messages: int = Field(default=256, ge=1)


class Topic(_Strict):
    """Denied or watched subjects: phrases match whole words in any case; patterns are regexes (add (?i) to
    ignore case)."""

    phrases: list[Annotated[str, Field(min_length=2)]] = []
    patterns: list[str] = []

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} does not compile: {exc}") from exc
        return patterns


class InputRule(_Strict):
    id: RuleId
    match: list[str] = Field(min_length=1, description="Categories or shell patterns: 'pii.*', 'topic.weapons'.")
    action: Literal["allow", "redact", "deny"]
    roles: list[Name] | None = None
    message: str = ""


class OutputRule(_Strict):
    id: RuleId
    match: list[str] = Field(min_length=1)
    action: Literal["allow", "redact", "stop"]
    roles: list[Name] | None = None


class InputPolicy(_Strict):
    limits: Limits = Limits()
    topics: dict[Name, Topic] = {}
    rules: list[InputRule] = []


class OutputPolicy(_Strict):
    rules: list[OutputRule] = []


class ClassifierRule(_Strict):
    """Text judged by a classifier model (gpt-oss-safeguard on a site) against a policy in plain language.

    The policy is the classifier's developer message, and it must ask for a verdict the appliance can read:
    `1` (violates) or `0` (safe), or a JSON object whose `violation` is 1/0 or true/false. On input, every
    user and tool message is judged on its own (a chat's earlier turns are then verdict-cache hits); on
    output, the whole final answer, before any of it leaves (`stream: end`).
    """

    id: RuleId
    model: Name = Field(description="The classifier bundle the appliance serves, by name.")
    policy: str = Field(min_length=1, max_length=65536)
    applies_to: list[Literal["input", "output"]] = Field(min_length=1)
    mode: Literal["enforce", "monitor"] = "enforce"  # monitor: the verdict is recorded, nothing is stopped
    roles: list[Name] | None = None
    effort: Effort = "low"
    max_tokens: int = Field(default=512, ge=1, le=8192)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    on_error: Literal["deny", "allow"] = "deny"  # a timeout, a missing model or an unreadable verdict
    stream: Literal["end"] = "end"  # streamed answers are held until the verdict (per window: not built)
    message: str = ""


def _unique_classifiers(rules: list[ClassifierRule]) -> list[ClassifierRule]:
    ids = [r.id for r in rules]
    if len(ids) != len(set(ids)):
        raise ValueError(f"classifier ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return rules


class AuditPolicy(_Strict):
    content: AuditContent = "redacted"
    roles: dict[Name, AuditContent] = {}


class Pack(_Strict):
    pack: PackInfo
    access: Access
    input: InputPolicy = InputPolicy()
    output: OutputPolicy = OutputPolicy()
    classifiers: Annotated[list[ClassifierRule], AfterValidator(_unique_classifiers)] = []
    audit: AuditPolicy = AuditPolicy()
