"""`appliance policy test`: test cases kept beside a pack, run against it like `opa test`.

Each file under `<pack>/tests/` holds `cases:`; a case gives a principal and either a request (checked
against the input decision) or output pieces (checked against the streaming filter), and what to expect.

Classifier rules need their classifier model: given a `Judge` (`appliance policy test --classifiers` runs
the active bundles the rules name), every case is decided as the gateway decides it, verdicts included, and
`expect.verdicts` checks them; without one, classifier rules are not run and a case that expects verdicts
fails, saying so.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from appliance.policy.classifier import Classifiers, Judge, Verdict
from appliance.policy.engine import Decision, Message, PolicyRequest, evaluate
from appliance.policy.errors import PolicyError
from appliance.policy.grants import quotas_for
from appliance.policy.pack import PolicySet
from appliance.policy.stream import OutputFilter
from appliance.policy.yamlfile import YamlDoc
from appliance.principal import Principal


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CasePrincipal(_Strict):
    role: str
    key_id: str = "test-key"
    name: str = "policy-test"


class CaseMessage(_Strict):
    role: str = "user"
    content: str


class CaseRequest(_Strict):
    model: str = "gpt-oss-demo"
    messages: list[CaseMessage]
    max_tokens: int | None = None
    reasoning_effort: str | None = None
    tools: list[dict[str, Any]] | None = None


class OutputPiece(_Strict):
    channel: str = "final"
    text: str


class Expect(_Strict):
    action: Literal["allow", "redact", "deny"] | None = None
    rule_ids: list[str] | None = None
    max_tokens: int | None = None
    reasoning_visible: bool | None = None
    text: str | None = None
    contains: list[str] = []
    absent: list[str] = []
    stopped: bool | None = None
    rule_id: str | None = None
    quotas: list[str] | None = None  # "<scope>/<quota id>" the request counts against, e.g. group:lab/lab.daily
    verdicts: dict[str, Literal["violation", "safe", "error"]] | None = None  # classifier rule id -> verdict


class Case(_Strict):
    name: str
    principal: CasePrincipal
    request: CaseRequest | None = None
    output: list[OutputPiece] | None = None
    expect: Expect


class CaseFile(_Strict):
    cases: list[Case]


@dataclass(frozen=True)
class Result:
    name: str
    where: str
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


def load_cases(pack_dir: Path) -> list[tuple[str, Case]]:
    """Every case under `pack_dir/tests`, with "file:line" of each."""
    out: list[tuple[str, Case]] = []
    for path in sorted((pack_dir / "tests").glob("*.y*ml")):
        doc = YamlDoc(path.read_bytes(), str(path))
        try:
            parsed = CaseFile.model_validate(doc.data)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise doc.error(list(err["loc"]), f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        for i, case in enumerate(parsed.cases):
            if (case.request is None) == (case.output is None):
                raise doc.error(["cases", i], f"case {case.name!r}: give exactly one of request or output")
            out.append((f"{path}:{doc.line_of(['cases', i])}", case))
    if not out:
        raise PolicyError(f"{pack_dir / 'tests'}: no test cases")
    return out


def _principal(case: Case) -> Principal:
    return Principal(key_id=case.principal.key_id, name=case.principal.name, role=case.principal.role)


def _decision(policy: PolicySet, case: Case) -> Decision:
    req = case.request
    assert req is not None
    messages = [Message(m.role, m.content) for m in req.messages]
    request = PolicyRequest(req.model, messages, req.max_tokens, req.reasoning_effort, req.tools)
    return evaluate(policy, request, _principal(case))


def _filtered(policy: PolicySet, case: Case) -> tuple[OutputFilter, str]:
    stream = OutputFilter(policy, _principal(case))
    pieces = [stream.feed(p.channel, p.text) for p in case.output or []] + [stream.finish()]
    return stream, "".join(p.text for p in pieces)


async def _verdicts(policy: PolicySet, case: Case, classifiers: Classifiers) -> list[Verdict]:
    """What the gateway's classifier rules say about the case: its user and tool messages after the input
    rules, or its answer after the output filter."""
    role = case.principal.role
    if case.request is not None:
        decision = _decision(policy, case)
        if decision.denied:
            return []
        texts = [m.content for m in decision.messages if m.role in ("user", "tool")]
        return await classifiers.judge(policy, "input", role, texts, case.principal.key_id)
    _, text = _filtered(policy, case)
    return await classifiers.judge(policy, "output", role, [text], case.principal.key_id)


def run_case(policy: PolicySet, case: Case, verdicts: list[Verdict] | None = None) -> tuple[str, ...]:
    """The case's failures; `verdicts` are its classifier rules' (None: classifier rules were not run)."""
    principal = _principal(case)
    exp = case.expect
    got: dict[str, object] = {}
    blocking = next((v for v in verdicts or [] if v.blocks), None)
    if case.request is not None:
        req = case.request
        decision = _decision(policy, case)
        rule_ids = sorted(decision.rule_ids) if blocking is None else sorted({blocking.rule.id, *decision.rule_ids})
        got = {
            "action": decision.action if blocking is None else "deny",
            "rule_ids": rule_ids,
            "max_tokens": decision.max_tokens,
            "reasoning_visible": decision.reasoning_visible,
            "quotas": sorted(f"{scope}/{q.id}" for scope, q in quotas_for(policy, principal, req.model)),
        }
        text = "\n".join(m.content for m in decision.messages)
    else:
        stream, text = _filtered(policy, case)
        got = {"stopped": stream.stopped, "rule_id": stream.rule_id}
        if blocking is not None and not stream.stopped:
            got = {"stopped": True, "rule_id": blocking.rule.id}
    want = {
        "action": exp.action,
        "rule_ids": sorted(exp.rule_ids) if exp.rule_ids is not None else None,
        "max_tokens": exp.max_tokens,
        "reasoning_visible": exp.reasoning_visible,
        "stopped": exp.stopped,
        "rule_id": exp.rule_id,
        "text": exp.text,
        "quotas": sorted(exp.quotas) if exp.quotas is not None else None,
    }
    got["text"] = text
    failures = [
        f"{key}: expected {value!r}, got {got.get(key)!r}"
        for key, value in want.items()
        if value is not None and got.get(key) != value
    ]
    if exp.verdicts is not None and verdicts is None:
        failures.append("expects classifier verdicts: run with --classifiers (their bundles active in the store)")
    elif exp.verdicts is not None:
        said = {
            v.rule.id: "error" if v.violation is None else "violation" if v.violation else "safe"
            for v in verdicts or []
        }
        failures += [
            f"verdict of {rule}: expected {want!r}, got {said.get(rule)!r}"
            for rule, want in exp.verdicts.items()
            if said.get(rule) != want
        ]
    failures += [f"text lacks {s!r}" for s in exp.contains if s not in text]
    failures += [f"text still holds {s!r}" for s in exp.absent if s in text]
    return tuple(failures)


def run_tests(policy: PolicySet, pack_dir: Path, judge: Judge | None = None) -> list[Result]:
    cases = load_cases(pack_dir)
    if judge is None:
        return [Result(case.name, where, run_case(policy, case)) for where, case in cases]
    classifiers = Classifiers(judge)

    async def judged() -> list[list[Verdict]]:
        return [await _verdicts(policy, case, classifiers) for _, case in cases]

    return [
        Result(case.name, where, run_case(policy, case, verdicts))
        for (where, case), verdicts in zip(cases, asyncio.run(judged()), strict=True)
    ]
