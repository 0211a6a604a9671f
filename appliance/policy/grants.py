"""What a principal may do under a pack: its grant, its audit content mode, and the rule for a finding.

Shared by input decisions (engine.py) and the streaming output filter (stream.py), which import this
module and not each other.
"""

from __future__ import annotations

import fnmatch
from functools import lru_cache
from typing import Literal

from appliance.policy.pack import PolicySet
from appliance.policy.schema import Grant, InputRule, OutputRule, Quota
from appliance.principal import Principal


def effective_grant(policy: PolicySet, principal: Principal) -> Grant | None:
    """The role's grant narrowed by the key's override; None when the role is unknown."""
    grant = policy.pack.access.roles.get(principal.role or "")
    override = policy.pack.access.keys.get(principal.key_id or "")
    if grant is None or override is None:
        return grant
    changes = {
        name: getattr(override, name)
        for name in ("models", "max_tokens", "rate", "quotas")
        if getattr(override, name) is not None
    }
    return grant.model_copy(update=changes)


def quotas_for(policy: PolicySet, principal: Principal, model: str) -> list[tuple[str, Quota]]:
    """(counter scope, quota) of every quota a request of `principal` for `model` counts against: the key's
    own (`key:<id>`) and its group's (`group:<name>`); none for a role the pack exempts."""
    access = policy.pack.access
    grant = effective_grant(policy, principal)
    if grant is None or principal.role in access.quota_exempt_roles:
        return []
    override = access.keys.get(principal.key_id or "")
    scoped = [(f"key:{principal.key_id or ''}", q) for q in grant.quotas]
    if override is not None and override.group is not None:
        scoped += [(f"group:{override.group}", q) for q in access.groups[override.group].quotas]
    return [(scope, q) for scope, q in scoped if any(fnmatch.fnmatchcase(model, p) for p in q.models)]


def group_of(policy: PolicySet, key_id: str | None) -> str | None:
    override = policy.pack.access.keys.get(key_id or "")
    return override.group if override is not None else None


def audit_mode(policy: PolicySet, role: str | None) -> Literal["full", "redacted", "hash"]:
    return policy.pack.audit.roles.get(role or "", policy.pack.audit.content)


@lru_cache(maxsize=4096)
def rule_for(policy: PolicySet, direction: str, role: str | None, category: str) -> InputRule | OutputRule | None:
    """First rule of `direction` (input/output) applying to `role` whose patterns match `category`."""
    rules = policy.pack.input.rules if direction == "input" else policy.pack.output.rules
    for rule in rules:
        if (rule.roles is None or role in rule.roles) and any(fnmatch.fnmatchcase(category, p) for p in rule.match):
            return rule
    return None
