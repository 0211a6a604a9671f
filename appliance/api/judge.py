"""Classifier rules in the gateway: the `Judge` (a classifier bundle run through the same model backend as
any request) and the verdicts' metrics and record detail.

The judge is greedy (temperature 0), so one text under one policy always gets the same verdict and the verdict cache
holds what a fresh run would say.
"""

from __future__ import annotations

import json
from typing import cast

from appliance.api.backend import ModelBackend
from appliance.api.metrics import Metrics
from appliance.engine.types import GenerationRequest, ReasoningEffort, TextEvent
from appliance.policy import Decision
from appliance.policy.classifier import Classifiers, Judge, Side, Verdict


def backend_judge(backend: ModelBackend) -> Judge:
    async def judge(
        model: str, messages: list[dict[str, str]], effort: str, max_tokens: int, scope: str | None
    ) -> tuple[str, str]:
        level = cast(ReasoningEffort, effort)  # the pack's schema allows only the three efforts
        request = GenerationRequest(
            messages=messages, reasoning_effort=level, max_tokens=max_tokens, temperature=0, cache_scope=scope
        )
        analysis: list[str] = []
        final: list[str] = []
        async for chunk in backend.generate(model, request):
            for event in chunk:
                if isinstance(event, TextEvent) and event.recipient is None:
                    (final if event.channel == "final" else analysis).append(event.text)
        return "".join(analysis), "".join(final)

    return judge


async def judged(
    classifiers: Classifiers, metrics: Metrics, side: Side, decision: Decision, texts: list[str], scope: str | None
) -> list[Verdict]:
    """The verdicts of the classifier rules on `side` for the decision's principal, counted in /metrics."""
    assert decision.policy is not None and decision.principal is not None
    verdicts = await classifiers.judge(decision.policy, side, decision.principal.role, texts, scope)
    for v in verdicts:
        outcome = "error" if v.violation is None else "violation" if v.violation else "safe"
        metrics.classifier_verdicts.labels(v.rule.id, side, outcome, str(v.cached).lower()).inc()
    return verdicts


def verdict_detail(verdicts: list[Verdict]) -> dict[str, str]:
    """The audit record's `classifiers` detail: each verdict with the classifier's reasoning (never sent)."""
    return {"classifiers": json.dumps([v.record() for v in verdicts], ensure_ascii=False)} if verdicts else {}
