"""The failures the policy package reports: a bad pack, and a caller over its rate limit."""

from __future__ import annotations

import math

from appliance.errors import ApplianceError


class PolicyError(ApplianceError):
    """A pack that cannot be loaded: the message names the file and line ("file:line: message")."""


class RateLimited(ApplianceError):
    """A key over its request or token rate; `retry_after` says how many seconds to wait (HTTP 429)."""

    def __init__(self, rule_id: str, retry_after: float) -> None:
        self.rule_id = rule_id
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"rate limit exceeded ({rule_id}); retry after {self.retry_after} s")
