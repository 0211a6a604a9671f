"""Classifier rules without a model: the pack's schema, reading verdicts, the cache, fail-closed errors.

The judge here is a plain function (the model is not what these tests are about); tests/api/test_classifier.py
runs the rules end to end with the real demo classifier.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.policy import PolicyError, PolicySet
from appliance.policy.classifier import Classifiers, VerdictCache, parse_verdict
from tests.appliance import REPO


def pack_with(tmp_path, classifiers) -> PolicySet:
    pack = tmp_path / "policies"
    shutil.copytree(REPO / "tests" / "pack", pack)
    (pack / "classifiers.yaml").write_text(json.dumps({"classifiers": classifiers}))
    return PolicySet.load(pack)


RULE = {"id": "safety", "model": "gpt-oss-safeguard-20b", "policy": "Answer 1 or 0.", "applies_to": ["input"]}


@pytest.mark.parametrize(
    "change, named",
    [
        ({"stream": "window"}, "classifiers.0.stream"),
        ({"applies_to": []}, "classifiers.0.applies_to"),
        ({"applies_to": ["tools"]}, "classifiers.0.applies_to"),
        ({"mode": "audit"}, "classifiers.0.mode"),
        ({"timeout_s": 0}, "classifiers.0.timeout_s"),
        ({"effort": "max"}, "classifiers.0.effort"),
        ({"policy": ""}, "classifiers.0.policy"),
        ({"roles": ["nobody"]}, "unknown role 'nobody'"),
        ({"id": "rate.tokens"}, "is taken"),
        ({"colour": "red"}, "classifiers.0.colour"),
    ],
)
def test_a_rule_the_appliance_cannot_honour_is_refused_by_name(tmp_path, change, named):
    with pytest.raises(PolicyError, match=named.replace(".", r"\.").replace("(", r"\(")):
        pack_with(tmp_path, [{**RULE, **change}])


def test_repeated_ids_are_refused(tmp_path):
    with pytest.raises(PolicyError, match="classifier ids repeat"):
        pack_with(tmp_path, [RULE, RULE])


@pytest.mark.parametrize(
    "final, violation",
    [("1", True), (" 0\n", False), ('{"violation": 1, "policy_category": "x"}', True), ('{"violation": false}', False)],
)
def test_verdicts_are_read_in_the_documented_forms(final, violation):
    assert parse_verdict(final) is violation


@given(st.text(max_size=40))
def test_anything_else_is_not_a_verdict(text):
    if text.strip() in ("0", "1"):
        return
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict) and value.get("violation") in (0, 1):
        return
    with pytest.raises(ValueError, match="not a verdict"):
        parse_verdict(text)


def run(classifiers: Classifiers, policy: PolicySet, texts: list[str], role: str = "user"):
    return asyncio.run(classifiers.judge(policy, "input", role, texts))


def test_errors_fail_closed_unless_the_rule_fails_open_and_are_never_cached(tmp_path):
    calls: list[str] = []

    async def broken(model, messages, effort, max_tokens, scope):
        calls.append(messages[1]["content"])
        raise RuntimeError("replica gone")

    closed = pack_with(tmp_path / "a", [RULE])
    (verdict,) = run(Classifiers(broken), closed, ["hello"])
    assert verdict.violation is None and verdict.blocks and "replica gone" in verdict.error
    opened = pack_with(tmp_path / "b", [{**RULE, "on_error": "allow"}])
    (verdict,) = run(Classifiers(broken), opened, ["hello"])
    assert verdict.violation is None and not verdict.blocks
    assert len(calls) == 2  # the failure was not remembered


def test_a_slow_classifier_times_out_as_an_error(tmp_path):
    async def slow(model, messages, effort, max_tokens, scope):
        await asyncio.sleep(30)
        return "", "0"

    policy = pack_with(tmp_path, [{**RULE, "timeout_s": 0.05}])
    (verdict,) = run(Classifiers(slow), policy, ["hello"])
    assert verdict.violation is None and "no verdict in 0.05 s" in verdict.error and verdict.blocks


def test_one_violating_text_decides_and_each_text_is_judged_once(tmp_path):
    seen: list[str] = []

    async def judge(model, messages, effort, max_tokens, scope):
        assert messages[0] == {"role": "system", "content": RULE["policy"]} and effort == "low"
        seen.append(messages[1]["content"])
        return f"judged {messages[1]['content']}", "1" if "bad" in messages[1]["content"] else "0"

    classifiers = Classifiers(judge)
    policy = pack_with(tmp_path, [RULE])
    (verdict,) = run(classifiers, policy, ["fine", "bad", "fine", "  "])
    assert verdict.violation and verdict.rationale == "judged bad" and verdict.blocks
    (verdict,) = run(classifiers, policy, ["fine", "also fine"])
    assert verdict.violation is False and not verdict.cached  # one of the two was new
    (verdict,) = run(classifiers, policy, ["fine", "also fine"])
    assert verdict.cached
    assert seen == ["fine", "bad", "also fine"]
    assert run(classifiers, policy, ["bad"], role="auditor")  # no roles on the rule: every role
    assert not run(classifiers, pack_with(tmp_path / "x", [{**RULE, "roles": ["admin"]}]), ["bad"])


def test_monitor_mode_never_blocks(tmp_path):
    async def judge(model, messages, effort, max_tokens, scope):
        return "", "1"

    (verdict,) = run(Classifiers(judge), pack_with(tmp_path, [{**RULE, "mode": "monitor"}]), ["x"])
    assert verdict.violation and not verdict.blocks


def test_the_cache_forgets_the_least_recently_used_and_keys_on_the_rule():
    cache = VerdictCache(max_entries=2)
    from appliance.policy.schema import ClassifierRule

    rule = ClassifierRule.model_validate(RULE)
    other = ClassifierRule.model_validate({**RULE, "policy": "Another policy."})
    assert VerdictCache.key(rule, "t") != VerdictCache.key(other, "t")
    assert VerdictCache.key(rule, "t") == VerdictCache.key(rule.model_copy(update={"mode": "monitor"}), "t")
    for text in ("a", "b"):
        cache.put(VerdictCache.key(rule, text), (False, ""))
    assert cache.get(VerdictCache.key(rule, "a")) is not None  # a is now the most recent
    cache.put(VerdictCache.key(rule, "c"), (True, ""))
    assert cache.get(VerdictCache.key(rule, "b")) is None and cache.get(VerdictCache.key(rule, "a")) is not None
