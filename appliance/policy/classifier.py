"""Classifier rules: text judged by a model against a policy written in plain language.

Patterns catch values, not intent; a classifier model (gpt-oss-safeguard on a site) reads the pack's policy
and the text and says whether the text violates it, with its reasoning. This module decides which rules
apply, asks, reads the verdict, caches it and fails closed; it never imports the engine or the API: the
gateway hands it a `Judge`, one async function that runs a model on chat messages and returns the text of
its analysis and final channels.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from appliance.policy.pack import PolicySet
from appliance.policy.schema import ClassifierRule

Side = Literal["input", "output"]
# (model, messages, effort, max_tokens, scope) -> (analysis, final); scope as in `Classifiers.judge`
Judge = Callable[[str, list[dict[str, str]], str, int, str | None], Awaitable[tuple[str, str]]]
RATIONALE_CHARS = 2000  # what a record keeps of the classifier's reasoning


@dataclass(frozen=True)
class Verdict:
    """One rule's judgement of one request or answer: `violation` is None when there is no verdict."""

    rule: ClassifierRule
    violation: bool | None
    rationale: str = ""
    error: str = ""
    cached: bool = False
    seconds: float = 0.0

    @property
    def blocks(self) -> bool:
        """Stops the request or answer: an enforced violation, or no verdict where the rule fails closed."""
        if self.rule.mode != "enforce":
            return False
        return bool(self.violation) or (self.violation is None and self.rule.on_error == "deny")

    def record(self) -> dict[str, str]:
        """What the audit record keeps (the caller never sees the rationale)."""
        outcome = "error" if self.violation is None else "violation" if self.violation else "safe"
        kept = {"rule": self.rule.id, "model": self.rule.model, "mode": self.rule.mode, "verdict": outcome}
        kept |= {"cached": str(self.cached).lower(), "ms": f"{self.seconds * 1000:.0f}"}
        if self.error:
            kept["error"] = self.error[:500]
        if self.rationale:
            kept["rationale"] = self.rationale[:RATIONALE_CHARS]
        return kept


def parse_verdict(final: str) -> bool:
    """`1`/`0`, or a JSON object whose `violation` is 1/0/true/false; anything else raises ValueError."""
    text = final.strip()
    if text in ("0", "1"):
        return text == "1"
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict) and value.get("violation") in (0, 1):  # True == 1, False == 0
        return bool(value["violation"])
    raise ValueError(f"the classifier answered {text[:80]!r}, not a verdict (1, 0 or {{'violation': 1|0}})")


def rules_for(policy: PolicySet, side: Side, role: str | None) -> list[ClassifierRule]:
    return [r for r in policy.pack.classifiers if side in r.applies_to and (r.roles is None or role in r.roles)]


class VerdictCache:
    """Verdicts by rule (its model, policy text and settings) and text, least recently used out first.

    Keyed on the rule's own content rather than the pack's revision, so editing another rule keeps them,
    and on the caller's scope (its key, unless the prefix cache's scope is widened): a verdict that comes
    back at once would otherwise tell one key that another sent the same text. Errors are never cached.
    Per gateway process: a restart (and so a classifier bundle upgrade, which
    restarts serving) starts empty.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: OrderedDict[str, tuple[bool, str]] = OrderedDict()
        self._max = max_entries
        self.hits = self.misses = 0

    @staticmethod
    def key(rule: ClassifierRule, text: str, scope: str | None = None) -> str:
        digest = hashlib.sha256(rule.model_dump_json(exclude={"mode", "roles", "on_error", "message"}).encode())
        digest.update(b"\0" + (scope or "").encode("utf-8", "surrogatepass"))
        digest.update(b"\0" + text.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def get(self, key: str) -> tuple[bool, str] | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found

    def put(self, key: str, verdict: tuple[bool, str]) -> None:
        self._entries[key] = verdict
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class Classifiers:
    """Runs the classifier rules that apply to one side of one request, concurrently, through `judge`."""

    def __init__(self, judge: Judge, cache: VerdictCache | None = None) -> None:
        self._judge = judge
        self.cache = cache or VerdictCache()

    async def judge(
        self, policy: PolicySet, side: Side, role: str | None, texts: list[str], scope: str | None = None
    ) -> list[Verdict]:
        """One verdict per applicable rule: a violation if any text violates, else an error if any text got
        no verdict, else safe. Empty texts are not sent. `scope` (the caller's prefix-cache scope) bounds
        whose cached verdicts and cached prompt blocks the judgement may reuse."""
        rules = rules_for(policy, side, role)
        texts = [t for t in dict.fromkeys(texts) if t.strip()]
        if not rules or not texts:
            return []
        return list(await asyncio.gather(*(self._rule(rule, texts, scope) for rule in rules)))

    async def _rule(self, rule: ClassifierRule, texts: list[str], scope: str | None) -> Verdict:
        started = time.perf_counter()
        results = await asyncio.gather(*(self._one(rule, text, scope) for text in texts))
        seconds = time.perf_counter() - started
        cached = all(r.cached for r in results)
        for result in results:
            if result.violation:
                return Verdict(rule, True, result.rationale, cached=cached, seconds=seconds)
        for result in results:
            if result.violation is None:
                return Verdict(rule, None, result.rationale, result.error, cached=cached, seconds=seconds)
        return Verdict(rule, False, results[0].rationale, cached=cached, seconds=seconds)

    async def _one(self, rule: ClassifierRule, text: str, scope: str | None) -> Verdict:
        key = VerdictCache.key(rule, text, scope)
        known = self.cache.get(key)
        if known is not None:
            return Verdict(rule, known[0], known[1], cached=True)
        messages = [{"role": "system", "content": rule.policy}, {"role": "user", "content": text}]
        try:
            analysis, final = await asyncio.wait_for(
                self._judge(rule.model, messages, rule.effort, rule.max_tokens, scope), rule.timeout_s
            )
        except TimeoutError:
            return Verdict(rule, None, error=f"the classifier {rule.model!r} gave no verdict in {rule.timeout_s:g} s")
        except Exception as exc:  # noqa: BLE001 - any failure of the classifier is a missing verdict
            return Verdict(rule, None, error=f"the classifier {rule.model!r} failed: {exc}")
        try:
            violation = parse_verdict(final)
        except ValueError as exc:
            return Verdict(rule, None, analysis, error=str(exc))
        self.cache.put(key, (violation, analysis))
        return Verdict(rule, violation, analysis)
