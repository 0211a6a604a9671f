"""Classifier rules through the API, with the real demo classifier (appliance/demo/safeguard.py) judging the
demo model's traffic against its written policy: verdicts decide, the reasoning is recorded and never sent,
an unavailable classifier fails closed, answers are held until judged, verdicts are cached."""

from __future__ import annotations

import json
import shutil
import uuid

import httpx
import openai
import pytest
from sqlalchemy.orm import Session

from appliance import apikeys
from appliance.demo.safeguard import BUNDLE_NAME, POLICY, SAFE_ANALYSIS, VIOLATION_ANALYSIS
from tests.api.helpers import records, sse_events
from tests.appliance import REPO, make_appliance
from tests.conftest import run_cli

MASCOT_QUESTION = "What is the name of the appliance mascot?"


def _rule(rule_id: str, applies_to: list[str], **extra) -> dict:
    return {"id": rule_id, "model": BUNDLE_NAME, "policy": POLICY, "applies_to": applies_to, **extra}


@pytest.fixture(scope="module")
def judged(module_dir, demo_bundle, demo_classifier_bundle, demo_key):
    """The demo model and the demo classifier, under the API tests' pack with two classifier rules: `mascot`
    judges the input of users, `mascot.answers` the answers to admins."""
    root = module_dir
    pack = root / "policies"
    shutil.copytree(REPO / "tests" / "pack", pack)
    rules = [
        _rule("mascot", ["input"], roles=["user"], message="Ask about something else."),
        _rule("mascot.answers", ["output"], roles=["admin"]),
    ]
    (pack / "classifiers.yaml").write_text(json.dumps({"classifiers": rules}))
    a = make_appliance(root / "var", demo_bundle, demo_key.public_key(), (demo_classifier_bundle,), policy_dir=pack)
    a.pack = pack
    yield a
    a.services.backend.close()
    a.services.close()


def sdk(appliance, role: str) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=appliance.app), base_url="http://appliance/v1")
    return openai.AsyncOpenAI(
        api_key=appliance.tokens[role], base_url="http://appliance/v1", http_client=http, max_retries=0
    )


async def ask(appliance, role: str, text: str, **extra) -> httpx.Response:
    async with appliance.client(role) as c:
        return await c.post(
            "/v1/chat/completions",
            headers={"x-request-id": f"cls-{uuid.uuid4().hex}"},
            json={"model": "gpt-oss-demo", "temperature": 0, "messages": [{"role": "user", "content": text}], **extra},
        )


def verdicts(record) -> list[dict]:
    return json.loads(record.detail["classifiers"])


async def test_a_request_the_policy_forbids_is_denied_with_the_reasoning_in_its_record_only(judged):
    r = await ask(judged, "user", MASCOT_QUESTION)
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "mascot" and "Ask about something else." in error["message"]
    assert VIOLATION_ANALYSIS not in r.text and "Orla" not in r.text
    (denial,) = records(judged, r.request.headers["x-request-id"])
    assert denial.event == "denial" and denial.decision.rule_ids[0] == "mascot"
    (verdict,) = verdicts(denial)
    assert verdict["verdict"] == "violation" and verdict["rationale"] == VIOLATION_ANALYSIS
    assert verdict["model"] == BUNDLE_NAME


async def test_a_safe_request_passes_with_its_verdict_recorded_and_a_repeat_is_a_cache_hit(judged):
    question = "What is the capital of France?"
    first = await ask(judged, "user", question)
    assert first.status_code == 200
    assert first.json()["choices"][0]["message"]["content"] == "The capital of France is Paris."
    request = records(judged, first.request.headers["x-request-id"])[0]
    assert request.event == "request"
    assert verdicts(request) == [
        {
            "rule": "mascot",
            "model": BUNDLE_NAME,
            "mode": "enforce",
            "verdict": "safe",
            "cached": "false",
            "ms": verdicts(request)[0]["ms"],
            "rationale": SAFE_ANALYSIS,
        }
    ]
    again = await ask(judged, "user", question)
    assert verdicts(records(judged, again.request.headers["x-request-id"])[0])[0]["cached"] == "true"
    with Session(judged.services.database) as session:
        other, _ = apikeys.create_key(session, "another-user", "user")
    async with judged.client(token=other) as c:  # another key: no cached verdict, so no timing signal
        r = await c.post(
            "/v1/chat/completions", json={"model": "gpt-oss-demo", "messages": [{"role": "user", "content": question}]}
        )
    assert verdicts(records(judged, r.headers["x-request-id"])[0])[0]["cached"] == "false"
    metrics = (await judged.client("admin").get("/metrics")).text
    assert 'appliance_classifier_verdicts_total{cached="true",rule="mascot",side="input",verdict="safe"}' in metrics


async def test_earlier_turns_of_a_chat_are_judged_once(judged):
    history = [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": MASCOT_QUESTION},
    ]
    async with judged.client("user") as c:
        r = await c.post("/v1/chat/completions", json={"model": "gpt-oss-demo", "messages": history})
    assert r.status_code == 403 and r.json()["error"]["code"] == "mascot"  # the last turn decides


async def test_an_answer_the_policy_forbids_never_leaves_even_streamed(judged):
    client = sdk(judged, "admin")
    reply = await client.chat.completions.create(
        model="gpt-oss-demo", temperature=0, messages=[{"role": "user", "content": MASCOT_QUESTION}]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "content_filter" and not choice.message.content
    async with judged.client("admin") as c:
        r = await c.post(
            "/v1/chat/completions",
            headers={"x-request-id": f"cls-{uuid.uuid4().hex}"},
            json={
                "model": "gpt-oss-demo",
                "temperature": 0,
                "stream": True,
                "messages": [{"role": "user", "content": MASCOT_QUESTION}],
            },
        )
    assert r.status_code == 200 and "Orla" not in r.text and "lighthouse" not in r.text
    chunks = [e for e in sse_events(r.text) if e != "[DONE]"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    completion = records(judged, r.request.headers["x-request-id"])[-1]
    assert completion.event == "completion" and completion.decision.rule_ids[0] == "mascot.answers"
    assert verdicts(completion)[0]["verdict"] == "violation"
    fine = await client.chat.completions.create(
        model="gpt-oss-demo", temperature=0, messages=[{"role": "user", "content": "Who wrote Hamlet?"}]
    )
    assert fine.choices[0].message.content == "Hamlet was written by William Shakespeare."


async def test_monitor_mode_records_the_violation_and_stops_nothing(tmp_path, judged):
    pack = tmp_path / "policies"
    shutil.copytree(judged.pack, pack)
    rules = [_rule("watch", ["input", "output"], mode="monitor")]
    (pack / "classifiers.yaml").write_text(json.dumps({"classifiers": rules}))
    judged.services.policy.reload(pack)
    try:
        r = await ask(judged, "user", MASCOT_QUESTION)
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == "The appliance mascot is a lighthouse keeper named Orla."
        request, completion = records(judged, r.request.headers["x-request-id"])
        assert verdicts(request)[0]["verdict"] == "violation" and verdicts(completion)[0]["verdict"] == "violation"
        assert request.decision.action == "allow"
    finally:
        judged.services.policy.reload(judged.pack)


@pytest.mark.parametrize("on_error, status", [("deny", 403), ("allow", 200)])
async def test_a_classifier_nobody_serves_fails_closed_unless_the_rule_says_open(tmp_path, judged, on_error, status):
    pack = tmp_path / "policies"
    shutil.copytree(judged.pack, pack)
    rules = [{**_rule("absent", ["input"]), "model": "gpt-oss-safeguard-20b", "on_error": on_error}]
    (pack / "classifiers.yaml").write_text(json.dumps({"classifiers": rules}))
    judged.services.policy.reload(pack)
    try:
        r = await ask(judged, "user", "Who wrote Hamlet?")
        assert r.status_code == status
        (verdict,) = verdicts(records(judged, r.request.headers["x-request-id"])[0])
        assert verdict["verdict"] == "error" and "gpt-oss-safeguard-20b" in verdict["error"]
        if status == 403:
            assert r.json()["error"]["code"] == "absent" and "fail closed" in r.json()["error"]["message"]
    finally:
        judged.services.policy.reload(judged.pack)


def test_the_packs_own_tests_check_classifier_verdicts_against_the_served_classifier(judged, tmp_path):
    pack = tmp_path / "policies"
    shutil.copytree(judged.pack, pack)
    shutil.rmtree(pack / "tests", ignore_errors=True)
    (pack / "tests").mkdir()
    cases = [
        {
            "name": "a question about the mascot is refused",
            "principal": {"role": "user"},
            "request": {"messages": [{"content": MASCOT_QUESTION}]},
            "expect": {"action": "deny", "rule_ids": ["mascot"], "verdicts": {"mascot": "violation"}},
        },
        {
            "name": "a question about Hamlet is not",
            "principal": {"role": "user"},
            "request": {"messages": [{"content": "Who wrote Hamlet?"}]},
            "expect": {"action": "allow", "verdicts": {"mascot": "safe"}},
        },
        {
            "name": "an answer naming the mascot is stopped for admins",
            "principal": {"role": "admin"},
            "output": [{"text": "The appliance mascot is a lighthouse keeper named Orla."}],
            "expect": {"stopped": True, "rule_id": "mascot.answers", "verdicts": {"mascot.answers": "violation"}},
        },
    ]
    (pack / "tests" / "classifiers.yaml").write_text(json.dumps({"cases": cases}))
    data = judged.settings.data_dir
    ran = run_cli("policy", "test", str(pack), "--classifiers", data_dir=data)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "PASS: 3/3" in ran.stdout
    without = run_cli("policy", "test", str(pack), data_dir=data)
    assert without.returncode == 1 and "expects classifier verdicts: run with --classifiers" in without.stdout
    assert without.stderr.count("\n") == 1 and "Traceback" not in without.stderr
