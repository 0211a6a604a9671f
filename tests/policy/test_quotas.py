"""Groups and quotas in the pack: who counts against what, and every mistake refused by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from appliance.policy import PolicyError, PolicySet
from appliance.policy.grants import quotas_for
from appliance.principal import Principal
from tests.policy.test_pack import PACK, edit

KEYS = """  keys:
    k-lab: {group: lab}
    k-own: {group: lab, quotas: [{id: own.monthly, period: month, input_tokens: 10}]}
"""
GROUPS = """  groups:
    lab:
      quotas:
        - {id: lab.daily, period: day, output_tokens: 500}
        - {id: lab.big, period: month, requests: 5, models: ["gpt-oss-120b*"]}
"""


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    pack = Path(shutil.copytree(PACK, tmp_path / "pack"))
    edit(pack / "access.yaml", "  keys: {}", KEYS)
    edit(pack / "access.yaml", "  groups: {}", GROUPS)
    edit(
        pack / "access.yaml",
        "      rate: {requests_per_minute: 60, tokens_per_minute: 60000}",
        "      rate: {requests_per_minute: 60, tokens_per_minute: 60000}\n"
        "      quotas: [{id: user.daily, period: day, requests: 100}]",
    )
    return pack


def scoped(policy: PolicySet, key_id: str, role: str = "user", model: str = "gpt-oss-demo") -> list[str]:
    return sorted(f"{scope}/{q.id}" for scope, q in quotas_for(policy, Principal(key_id=key_id, role=role), model))


def test_keys_count_against_their_own_and_their_groups_quotas(pack: Path) -> None:
    policy = PolicySet.load(pack)
    assert scoped(policy, "k-other") == ["key:k-other/user.daily"]
    assert scoped(policy, "k-lab") == ["group:lab/lab.daily", "key:k-lab/user.daily"]
    assert scoped(policy, "k-own") == ["group:lab/lab.daily", "key:k-own/own.monthly"]  # replaces the role's
    assert scoped(policy, "k-lab", model="gpt-oss-120b") == [
        "group:lab/lab.big",
        "group:lab/lab.daily",
        "key:k-lab/user.daily",
    ]
    assert scoped(policy, "k-lab", role="admin") == ["group:lab/lab.daily"]  # admins count by default


def test_a_role_is_exempt_only_when_the_pack_says_so(pack: Path) -> None:
    edit(pack / "access.yaml", "  quota_exempt_roles: []", "  quota_exempt_roles: [admin]")
    policy = PolicySet.load(pack)
    assert scoped(policy, "k-lab", role="admin") == []
    assert scoped(policy, "k-lab") == ["group:lab/lab.daily", "key:k-lab/user.daily"]


@pytest.mark.parametrize(
    "old,new,words",
    [
        ("{group: lab}", "{group: labs}", "group 'labs', which access.groups lacks"),
        ("output_tokens: 500}", "output_tokens: 500, tokens: 5}", "tokens"),
        ("period: day, output_tokens: 500}", "period: week, output_tokens: 500}", "period"),
        ("output_tokens: 500}", "output_token: 500}", "output_token"),
        ("{id: lab.daily, period: day, output_tokens: 500}", "{id: lab.daily, period: day}", "caps nothing"),
        (
            "{id: lab.daily, period: day, output_tokens: 500}",
            "{id: lab.big, period: day, output_tokens: 500}",
            "quota ids repeat",
        ),
        ("output_tokens: 500}", "output_tokens: -1}", "greater than or equal to 0"),
    ],
)
def test_mistakes_are_refused_by_name(pack: Path, old: str, new: str, words: str) -> None:
    edit(pack / "access.yaml", old, new)
    with pytest.raises(PolicyError, match=words):
        PolicySet.load(pack)
