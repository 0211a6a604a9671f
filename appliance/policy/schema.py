"""The shape of a policy pack, validated by pydantic; unknown keys are errors, not silently ignored."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class Grant(_Strict):
    """What one role may do. Models are bundle names or shell patterns ("*", "gpt-oss-*")."""

    models: list[str] = []
    max_tokens: int = Field(default=1024, ge=1)
    reasoning_effort: list[Effort] = ["low", "medium", "high"]
    reasoning_visible: bool = False
    tools: bool = True
    rate: RateLimit = RateLimit()


class KeyOverride(_Strict):
    """Per API key (by key id): switch it off or narrow it; unset fields keep the role's value."""

    disabled: bool = False
    models: list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    rate: RateLimit | None = None


class Access(_Strict):
    roles: dict[Name, Grant]
    keys: dict[str, KeyOverride] = {}


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


class AuditPolicy(_Strict):
    content: AuditContent = "redacted"
    roles: dict[Name, AuditContent] = {}


class Pack(_Strict):
    pack: PackInfo
    access: Access
    input: InputPolicy = InputPolicy()
    output: OutputPolicy = OutputPolicy()
    audit: AuditPolicy = AuditPolicy()
