"""The audited request path shared by chat completions and responses.

auth (route dependency) -> rate limit -> input policy -> quota reservation -> durable "request" record
(fail closed) -> engine -> streaming output filter -> durable "completion" record -> quota settled.
Denials, rate limits, quotas, cancellations and failures get their own record. No answer is finished
without its record: the completion record is written before the last chunk (or the JSON body) leaves,
and if it cannot be written the client gets an error instead of a normal end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, cast

import structlog

from appliance.api.auth import Caller
from appliance.api.backend import ModelInfo
from appliance.api.errors import ApiError
from appliance.api.judge import judged, verdict_detail
from appliance.api.services import Services
from appliance.api.spec import GenerationSpec
from appliance.audit import AuditEvent, RecordDecision, RecordUsage, content_for
from appliance.audit.events import ContentMode
from appliance.engine.grammar import GrammarError, compile_grammar
from appliance.engine.harmony import prompt_size
from appliance.engine.logprobs import Aligner
from appliance.engine.types import (
    EngineBusy,
    EngineError,
    Event,
    FinishEvent,
    GenerationRequest,
    ServedBy,
    TextEvent,
    TokenLogprob,
    ToolCallEvent,
    Usage,
)
from appliance.policy import Decision, FilterOutput, Message, PolicyRequest, RateLimited
from appliance.policy.classifier import Verdict, rules_for
from appliance.policy.grants import group_of, quotas_for, rule_for
from appliance.policy.schema import Quota
from appliance.usage import Amounts, QuotaExceeded, QuotaUnavailable, Reservation, outcome

log = structlog.get_logger()
RETRY_AFTER_SOON_S = 300.0  # a quota resetting within this long gets a Retry-After header
_PENDING: set[asyncio.Future] = set()  # charges and settlements still running after their request ended


@dataclass
class Delta:
    """What the client may see from one chunk: visible reasoning, answer text, complete tool calls, and
    when asked for, the log probabilities of exactly that answer text (logprobs.py)."""

    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCallEvent] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Outcome:
    """How a generation ended, and what the output policy did to it (recorded in its outcome record)."""

    finish_reason: str = "stop"  # stop | length | tool_calls | content_filter
    usage: Usage = field(default_factory=lambda: Usage(0, 0, 0))
    rule_id: str | None = None  # the output rule that stopped the answer
    findings: dict[str, int] = field(default_factory=dict)  # output findings acted on, per category
    redactions: set[str] = field(default_factory=set)  # ids of output rules that redacted
    verdicts: list[Verdict] = field(default_factory=list)  # of the output classifier rules

    @property
    def action(self) -> str:
        return "deny" if self.finish_reason == "content_filter" else "redact" if self.redactions else "allow"

    def count(self, findings, rule_ids: list[str]) -> None:
        for f in findings:
            self.findings[f.category] = self.findings.get(f.category, 0) + 1
        self.redactions.update(rule_ids)


class AuditedGeneration:
    """A generation whose request record is already durable; iterate it for deltas, then read `outcome`."""

    def __init__(
        self,
        svc: Services,
        caller: Caller,
        decision: Decision,
        request: GenerationRequest,
        model: ModelInfo,
        reservation: Reservation | None = None,
        prompt_tokens: int | None = None,
    ) -> None:
        self.svc, self.caller, self.decision, self.request, self.model = svc, caller, decision, request, model
        self.reservation = reservation
        self.prompt_tokens = prompt_tokens  # counted at admission (an input-token quota), counted once
        self.outcome = Outcome()
        self.started = time.perf_counter()
        self._raw_final: list[str] = []
        self._shown_final: list[str] = []
        self._tool_calls: list[ToolCallEvent] = []
        self._first_token_at: float | None = None
        self._engine_failed = False  # refused or failed by the engine: no tokens were used for this answer
        self.node: str | None = None  # the node whose replica served it (a Serve backend says), for the record
        # output classifier rules judge the whole answer before any of it leaves: deltas are held till then
        assert decision.policy is not None
        self._held: list[Delta] | None = [] if rules_for(decision.policy, "output", caller.principal.role) else None
        self._aligner = None if request.logprobs is None else Aligner()  # answer entries through the filter

    @property
    def headers(self) -> dict[str, str]:
        """Response headers: the request id and the input decision (action, rule ids, policy revision)."""
        d = self.decision
        return {
            "x-request-id": self.caller.request_id,
            "x-appliance-policy": f"{d.action}; rules={','.join(d.rule_ids)}; revision={d.revision[:12]}",
        }

    async def deltas(self) -> AsyncIterator[Delta]:
        """Deltas as the engine produces them; ends after the completion record is durable."""
        out_filter = self.decision.output_filter()
        ended = False  # an outcome record has been started: never a second one
        try:
            try:
                # leaving this block (end, content filter stop, client gone at `yield`) stops the generation
                stream = cast(
                    AsyncGenerator[list[Event], None], self.svc.backend.generate(self.model.name, self.request)
                )
                async with contextlib.aclosing(stream):
                    async for chunk in stream:
                        delta = self._apply(chunk, out_filter)
                        if delta is not None and self._held is not None:
                            self._held.append(delta)
                        elif delta is not None:
                            self._first_token()
                            yield delta
                        if out_filter.stopped and self.outcome.rule_id is None:
                            self.outcome.finish_reason, self.outcome.rule_id = "content_filter", out_filter.rule_id
                        if self.outcome.finish_reason == "content_filter":
                            break
                tail = self._from_filter(out_filter.finish())
                if (tail.reasoning or tail.content) and self._held is not None:
                    self._held.append(tail)
                elif tail.reasoning or tail.content:
                    yield tail
                for delta in await self._judge_output():
                    self._first_token()
                    yield delta
            except (EngineBusy, EngineError, ApiError) as exc:
                if isinstance(exc, ApiError):
                    raise
                busy = isinstance(exc, EngineBusy)
                ended = self._engine_failed = True
                await self._finish("error", 429 if busy else 400, "engine_busy" if busy else "invalid_request")
                if busy:
                    raise ApiError(
                        429, "the engine is at capacity; retry shortly", code="engine_busy", retry_after=1
                    ) from exc
                raise ApiError(400, str(exc), code="invalid_request") from exc
            except Exception as exc:
                log.error("generation failed", request_id=self.caller.request_id, error=repr(exc)[:500])
                ended = self._engine_failed = True
                await self._finish("error", 503, "engine_unavailable")
                raise ApiError(
                    503, "the model is unavailable; retry shortly", code="engine_unavailable", retry_after=2
                ) from exc
            if self._tool_calls and self.outcome.finish_reason == "stop":
                self.outcome.finish_reason = "tool_calls"
            ended = True
            await self._finish("completion", 200, None)
        finally:
            charging = _kept(self._charge())  # a task: it ends even if we are cancelled again
            if not ended:  # the client went away (or we were cancelled): the record still lands
                with contextlib.suppress(ApiError):  # nobody is left to tell; counted and logged
                    await asyncio.shield(self._finish("cancelled", 499, "client_disconnected"))
            await asyncio.shield(charging)

    async def _judge_output(self) -> list[Delta]:
        """The held deltas once the output classifier rules found the answer clean; none when one blocks it."""
        if self._held is None:
            return []
        held, self._held = self._held, None
        verdicts = await judged(
            self.svc.classifiers,
            self.svc.metrics,
            "output",
            self.decision,
            ["".join(self._shown_final)],
            self.request.cache_scope,
        )
        self.outcome.verdicts = verdicts
        blocking = next((v for v in verdicts if v.blocks), None)
        if blocking is None:
            return held
        self.outcome.finish_reason, self.outcome.rule_id = "content_filter", blocking.rule.id
        self._shown_final.clear()  # nothing of it was shown
        return []

    async def _finish(self, event: str, status: int, error_code: str | None) -> None:
        """The request's one outcome record. When it cannot be written, an `error` record naming the audit
        failure takes its place if the store takes that; either way the failure is counted and logged, and
        the caller's stream ends in an error instead of its normal end."""
        try:
            await self._record_end(event, status, error_code)
        except ApiError:
            self.svc.metrics.outcome_failures.inc()
            log.error("outcome record not written", request_id=self.caller.request_id, outcome=event)
            if event != "error":
                with contextlib.suppress(ApiError):
                    await self._record_end("error", 503, "audit_unavailable")
            raise

    async def _charge(self) -> None:
        """Token rate limit and quotas: the usage the engine reported, or, when a generation ended before
        reporting it (client gone, content filter stop), its whole allowance and its prompt as the tokenizer
        counts it (at admission already when an input-token quota applies), so hanging up early never saves
        budget. Counted in a thread: a long prompt must not stall the loop."""
        u = self.outcome.usage
        if u.completion_tokens:
            charged = Amounts(u.prompt_tokens, u.completion_tokens, 1)  # exactly what the outcome record holds
        elif self._engine_failed:  # the engine refused or failed it: a request, and no tokens, against quotas
            charged = Amounts(0, 0, 1)
        else:
            prompt = self.prompt_tokens
            if prompt is None:
                prompt = await asyncio.to_thread(_prompt_size, self.request, self.caller.request_id)
            charged = Amounts(prompt, self.request.max_tokens, 1)
        rate_charge = self.request.max_tokens if self._engine_failed else charged.input_tokens + charged.output_tokens
        self.svc.policy.charge_tokens(self.caller.principal, rate_charge)
        if self.reservation is not None:  # off the response's path
            settle_quota(self.svc, self.reservation, charged)

    def _first_token(self) -> None:
        if self._first_token_at is None:
            self._first_token_at = time.perf_counter()
            self.svc.metrics.ttft.observe(self._first_token_at - self.started)

    def _apply(self, chunk: list, out_filter) -> Delta | None:
        reasoning, content, calls, entries = [], [], [], []
        for event in chunk:
            if isinstance(event, TextEvent):
                if event.recipient is not None:
                    continue  # tool-call arguments arrive complete as a ToolCallEvent
                channel = "final" if event.channel == "final" else "analysis"
                if channel == "final":
                    self._raw_final.append(event.text)
                    if self._aligner is not None:
                        self._aligner.add(event.logprobs or ())
                got = out_filter.feed(channel, event.text)
                self._count(got)
                reasoning.append(got.text_of("analysis"))
                text, aligned = self._final(got)
                content.append(text)
                entries += aligned
                if got.stopped:
                    break
            elif isinstance(event, ToolCallEvent):
                call = self._checked_call(event)
                if call is None:
                    break
                self._tool_calls.append(call)
                calls.append(call)
            elif isinstance(event, ServedBy):
                self.node = event.node
            elif isinstance(event, FinishEvent):
                self.outcome.usage = event.usage
                if event.finish_reason in ("length", "tool_calls"):
                    self.outcome.finish_reason = event.finish_reason
        delta = Delta("".join(reasoning), "".join(content), calls, entries)
        self._shown_final.append(delta.content)
        return delta if (delta.reasoning or delta.content or delta.tool_calls) else None

    def _final(self, got: FilterOutput, end: bool = False) -> tuple[str, list[TokenLogprob]]:
        """The answer text `got` releases and, when log probabilities were asked for, its entries: the
        aligner holds text back until its tokens are whole, and at the end (or a stop) lets the rest go."""
        if self._aligner is None:
            return got.text_of("final"), []
        text: list[str] = []
        entries: list[TokenLogprob] = []
        for (channel, shown), release in zip(got.chunks, got.releases):
            if channel == "final":
                piece, aligned = self._aligner.release(release.end, shown, release.edits)
                text.append(piece)
                entries += aligned
        if end or got.stopped:
            piece, aligned = self._aligner.close()
            text.append(piece)
            entries += aligned
        return "".join(text), entries

    def _checked_call(self, call: ToolCallEvent) -> ToolCallEvent | None:
        """Output guardrails on a tool call's arguments too: redacted in place, or the answer stopped (None)."""
        guard = self.decision.output_filter()
        pieces = [guard.feed("final", call.arguments), guard.finish()]
        for got in pieces:
            self._count(got)
        text = "".join(got.text for got in pieces)
        if guard.stopped:
            self.outcome.finish_reason, self.outcome.rule_id = "content_filter", guard.rule_id
            return None
        return replace(call, arguments=text) if text != call.arguments else call

    def _count(self, got: FilterOutput) -> None:
        """Note the output findings acted on and the rules that redacted them (for the outcome record)."""
        if got.findings and not got.stopped:
            rules = (
                rule_for(self.decision.policy, "output", self.caller.principal.role, f.category) for f in got.findings
            )
            self.outcome.count(got.findings, [r.id for r in rules if r is not None and r.action == "redact"])

    def _from_filter(self, got: FilterOutput) -> Delta:
        self._count(got)
        text, entries = self._final(got, end=True)
        delta = Delta(got.text_of("analysis"), text, logprobs=entries)
        self._shown_final.append(delta.content)
        return delta

    async def _record_end(self, event: str, status: int, error_code: str | None) -> None:
        raw = "".join(self._raw_final) + "".join(f"\n[tool {c.name}] {c.arguments}" for c in self._tool_calls)
        shown = "".join(self._shown_final) + "".join(f"\n[tool {c.name}] {c.arguments}" for c in self._tool_calls)
        mode = self.decision.audit_content
        o = self.outcome
        latency = time.perf_counter() - self.started
        assert self.decision.policy is not None
        group = group_of(self.decision.policy, self.caller.principal.key_id) or "-"
        self.svc.metrics.observe_outcome(o.usage, o.action, group, self.model.name)
        rule_ids = ((o.rule_id,) if o.rule_id else ()) + tuple(sorted(o.redactions))
        await self.svc.record(
            AuditEvent(
                event=event,
                request_id=self.caller.request_id,
                principal=self.caller.principal,
                source=self.caller.source,
                route=self.caller.route,
                model=self.model.name,
                bundle_version=self.model.version,
                policy_revision=self.decision.revision,
                decision=RecordDecision(action=o.action, rule_ids=rule_ids, findings=o.findings),
                content_mode=mode,
                content=content_for(mode, raw, shown),
                usage=RecordUsage(
                    prompt_tokens=o.usage.prompt_tokens,
                    completion_tokens=o.usage.completion_tokens,
                    reasoning_tokens=o.usage.reasoning_tokens,
                ),
                latency_ms=int(latency * 1000),
                status=status,
                error_code=error_code,
                detail=(
                    {"finish_reason": o.finish_reason, "cached_tokens": str(o.usage.cached_tokens)}
                    if event == "completion"
                    else {}
                )
                | ({"node": self.node} if self.node else {})
                | verdict_detail(o.verdicts),
            )
        )


def _kept(work: Coroutine[Any, Any, None]) -> asyncio.Future:
    """`work` as a task that outlives its request, held in `_PENDING` until it ends."""
    task = asyncio.ensure_future(work)
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)
    return task


async def start_generation(svc: Services, caller: Caller, spec: GenerationSpec) -> AuditedGeneration:
    """Checks that end in an error before any model work; returns once the request record is durable."""
    model = next((m for m in await models_or_503(svc) if m.name == spec.model), None)
    if model is None:
        raise ApiError(
            404, f"model {spec.model!r} does not exist or is not active", code="model_not_found", param="model"
        )
    grammar = await asyncio.to_thread(_grammar, spec)
    base: dict[str, Any] = dict(
        request_id=caller.request_id,
        principal=caller.principal,
        source=caller.source,
        route=caller.route,
        model=model.name,
        bundle_version=model.version,
        policy_revision=svc.policy.current.revision,
    )
    try:  # the key's per-minute buckets: this replica's lease on them, else the database (batched commits)
        await outcome(svc.quotas.take_future(caller.principal.key_id or "", svc.policy.rate_for(caller.principal), 0))
    except QuotaUnavailable as exc:
        raise _counters_down(exc) from exc
    except RateLimited as exc:
        svc.metrics.decisions.labels("input", "rate_limited").inc()
        await svc.record(
            AuditEvent(
                event="denial",
                **base,
                decision=RecordDecision(action="deny", rule_ids=(exc.rule_id,)),
                status=429,
                error_code="rate_limited",
            )
        )
        raise ApiError(429, str(exc), code="rate_limited", retry_after=exc.retry_after) from exc
    (decision, audit_decision, content), request, quotas, prompt = await asyncio.to_thread(
        _admission, svc, caller, spec, model, grammar
    )
    key_id = caller.principal.key_id
    group = group_of(decision.policy, key_id) if decision.policy is not None else None
    scope = cache_scope(svc.settings.engine_prefix_cache_scope, key_id, group)
    verdicts: list[Verdict] = []
    if request is not None:
        texts = [m.content for m in decision.messages if m.role in _JUDGED]
        verdicts = await judged(svc.classifiers, svc.metrics, "input", decision, texts, scope)
        decision, audit_decision = _classified(decision, audit_decision, verdicts)
        request = None if decision.denied else request
    svc.metrics.decisions.labels("input", decision.action).inc()
    if request is None:
        await svc.record(
            AuditEvent(
                event="denial",
                **base,
                decision=audit_decision,
                content_mode=content[0],
                content=content[1],
                status=403,
                error_code=decision.deny_rule,
                detail=content[2] | verdict_detail(verdicts),
            )
        )
        raise ApiError(
            403, f"{decision.message or 'denied by policy'} (rule {decision.deny_rule})", code=decision.deny_rule
        )
    request.cache_scope = scope
    reservation = await reserve_quota(svc, quotas, Amounts(prompt or 0, request.max_tokens, 1), base)
    try:
        await svc.record(
            AuditEvent(
                event="request",
                **base,
                decision=audit_decision,
                content_mode=content[0],
                content=content[1],
                detail=content[2] | spec.audit | spec.format_detail(bool(grammar)) | verdict_detail(verdicts),
            )
        )
    except BaseException:
        if reservation is not None:  # refused (or cancelled) before the model ran: nothing was used
            settle_quota(svc, reservation, Amounts())
        raise
    return AuditedGeneration(svc, caller, decision, request, model, reservation, prompt)


_JUDGED = ("user", "tool")  # the messages input classifier rules judge: what callers and tools wrote


def _classified(
    decision: Decision, audit_decision: RecordDecision, verdicts: list[Verdict]
) -> tuple[Decision, RecordDecision]:
    """The input decision after the classifier rules: a denial naming the first rule that blocks, if any."""
    blocking = next((v for v in verdicts if v.blocks), None)
    if blocking is None:
        return decision, audit_decision
    rule_ids = (blocking.rule.id, *decision.rule_ids)
    message = blocking.rule.message or (
        "The request was refused by the site's content policy."
        if blocking.violation
        else "The site's content classifier could not judge the request, so it was refused (fail closed)."
    )
    return (
        replace(decision, action="deny", rule_ids=rule_ids, message=message),
        audit_decision.model_copy(update={"action": "deny", "rule_ids": rule_ids}),
    )


def cache_scope(width: str, key_id: str | None, group: str | None) -> str | None:
    """Whose cached prompt blocks this request may reuse (engine/prefix.py): its own key's by default, its key
    group's or everyone's when `engine_prefix_cache_scope` widens it; a key without a group stays alone. The
    scope is hashed into every block key, so no lookup crosses it; None (no key) keeps a request out."""
    if key_id is None:
        return None
    if width == "appliance":
        return "appliance"
    return f"group:{group}" if width == "group" and group is not None else f"key:{key_id}"


async def reserve_quota(
    svc: Services, quotas: list[tuple[str, Quota]], want: Amounts, base: dict[str, Any]
) -> Reservation | None:
    """Reserve the request's prompt and `max_tokens` against its day and month quotas (policy pack), or
    record a denial naming the quota and answer 429 `quota_exceeded` (Retry-After when it resets soon; the
    message says what is left, so a client can retry with a smaller `max_tokens`)."""
    if not quotas:
        return None
    try:  # the ledger's writer answers a whole batch of admissions with one commit
        return await svc.quotas.reserve_async(quotas, want)
    except QuotaUnavailable as exc:
        raise _counters_down(exc) from exc
    except QuotaExceeded as exc:
        svc.metrics.decisions.labels("input", "quota_exceeded").inc()
        await svc.record(
            AuditEvent(
                event="denial",
                **base,
                decision=RecordDecision(action="deny", rule_ids=(exc.rule_id,)),
                status=429,
                error_code="quota_exceeded",
                detail={"resets_at": exc.resets_at.isoformat()},
            )
        )
        soon = exc.retry_after if exc.retry_after <= RETRY_AFTER_SOON_S else None
        param = "max_tokens" if exc.amount == "output_tokens" else None
        raise ApiError(429, str(exc), code="quota_exceeded", param=param, retry_after=soon) from exc


def _counters_down(exc: QuotaUnavailable) -> ApiError:
    """Rate buckets and quota counters that cannot be read: the admission fails closed."""
    return ApiError(503, f"{exc}; request refused (fail closed)", code="quota_unavailable", retry_after=2)


def settle_quota(svc: Services, reservation: Reservation, used: Amounts) -> None:
    """Settle after the outcome, off the response's path (nobody waits: no task, no wake-up of the loop); a
    failure is logged (the reservation then expires), never the client's."""
    svc.quotas.settle_future(reservation, used).add_done_callback(functools.partial(_unsettled, reservation.id))


def _unsettled(reservation_id: str, settled: Future) -> None:
    if (exc := settled.exception()) is not None:
        log.error("quota not settled", reservation=reservation_id, error=str(exc))


def _grammar(spec: GenerationSpec) -> str | None:
    """The request's output constraint, compiled once here (a worker thread: a big schema takes real time)
    so a schema that cannot be enforced is a 400 naming its field before anything is recorded or run."""
    try:
        constraint = spec.constraint()
        if constraint is None:
            return None
        grammar = constraint.grammar()
        compile_grammar(grammar)
    except GrammarError as exc:
        raise ApiError(400, str(exc), code="invalid_schema", param=exc.param) from exc
    return grammar


def _admission(
    svc: Services, caller: Caller, spec: GenerationSpec, model: ModelInfo, grammar: str | None
) -> tuple[
    tuple[Decision, RecordDecision, tuple[ContentMode, str, dict[str, str]]],
    GenerationRequest | None,
    list[tuple[str, Quota]],
    int | None,
]:
    """The input decision (`_evaluate`) and, unless it denies, the engine request, the quotas it counts
    against and, when one caps input tokens, its prompt's tokens: all in the one worker thread, so counting
    the prompt costs no second hand-off."""
    evaluated = _evaluate(svc, caller, spec, model)
    decision = evaluated[0]
    if decision.denied:
        return evaluated, None, [], None
    assert decision.policy is not None
    request = spec.engine_request([m.content for m in decision.messages], decision.max_tokens, grammar)
    quotas = quotas_for(decision.policy, caller.principal, model.name)
    counted = any(q.input_tokens is not None for _, q in quotas)
    return evaluated, request, quotas, _prompt_size(request, caller.request_id) if counted else None


def _prompt_size(request: GenerationRequest, request_id: str) -> int:
    """The prompt's tokens as the engine will count them; 0 for a prompt the engine will refuse anyway."""
    try:
        return prompt_size(request)
    except Exception as exc:  # noqa: BLE001 - its allowance alone is charged
        log.warning("prompt not counted", request_id=request_id, error=str(exc)[:200])
        return 0


def _evaluate(
    svc: Services, caller: Caller, spec: GenerationSpec, model: ModelInfo
) -> tuple[Decision, RecordDecision, tuple[ContentMode, str, dict[str, str]]]:
    """The input decision and what its audit record keeps; run in a worker thread, because scanning and
    serialising a large input takes real time that the gateway's event loop must not lose.

    An input over the size limits is refused before anything is scanned (the policy checks limits first),
    and its record keeps sizes and a hash only: nobody's megabytes are redacted, stored or echoed."""
    scanned = [Message(role, text) for role, text in spec.texts()]
    policy_request = PolicyRequest(
        model=model.name,
        messages=scanned,
        max_tokens=spec.max_tokens,
        reasoning_effort=spec.reasoning_effort or "medium",
        tools=spec.tools or None,
    )
    decision = svc.policy.evaluate_input(policy_request, caller.principal)
    findings: dict[str, int] = {}
    for f in decision.findings:
        findings[f.category] = findings.get(f.category, 0) + 1
    audit_decision = RecordDecision(action=decision.action, rule_ids=decision.rule_ids, findings=findings)
    raw = json.dumps([{"role": m.role, "content": m.content} for m in policy_request.messages], ensure_ascii=False)
    if decision.denied and decision.deny_rule and decision.deny_rule.startswith("limits."):
        sizes = {"messages": str(len(scanned)), "input_chars": str(sum(len(m.content) for m in scanned))}
        return decision, audit_decision, ("hash", content_for("hash", raw), sizes)
    mode = decision.audit_content
    redacted = json.dumps([{"role": m.role, "content": m.content} for m in decision.messages], ensure_ascii=False)
    return decision, audit_decision, (mode, content_for(mode, raw, redacted), {})


async def models_or_503(svc: Services) -> list[ModelInfo]:
    try:
        return await svc.backend.models()
    except Exception as exc:  # noqa: BLE001 - no model replica reachable yet
        raise ApiError(
            503, "no model is available yet; retry shortly", code="engine_unavailable", retry_after=2
        ) from exc
