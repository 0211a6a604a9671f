"""The audited request path shared by chat completions and responses.

auth (route dependency) -> rate limit -> input policy -> durable "request" record (fail closed) -> engine
-> streaming output filter -> durable "completion" record. Denials, rate limits, cancellations and
failures get their own record. No answer is finished without its record: the completion record is
written before the last chunk (or the JSON body) leaves, and if it cannot be written the client gets an
error instead of a normal end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from appliance.api.auth import Caller
from appliance.api.backend import ModelInfo
from appliance.api.errors import ApiError
from appliance.api.services import Services
from appliance.audit import AuditEvent, Decision as AuditDecision, Usage as AuditUsage, content_for
from appliance.audit.events import ContentMode
from appliance.engine.types import EngineBusy, EngineError, FinishEvent, GenerationRequest, TextEvent, ToolCallEvent
from appliance.policy import Decision, Message, PolicyRequest, RateLimited

log = structlog.get_logger()


@dataclass
class GenerationSpec:
    """One request in the API's terms, whichever route it came through (chat-shaped messages)."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    reasoning_effort: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class Delta:
    """What the client may see from one chunk: visible reasoning, answer text, complete tool calls."""

    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCallEvent] = field(default_factory=list)


@dataclass
class Outcome:
    finish_reason: str = "stop"  # stop | length | tool_calls | content_filter
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    rule_id: str | None = None


class AuditedGeneration:
    """A generation whose request record is already durable; iterate it for deltas, then read `outcome`."""

    def __init__(self, svc: Services, caller: Caller, spec: GenerationSpec, decision: Decision,
                 request: GenerationRequest, model: ModelInfo) -> None:
        self.svc, self.caller, self.spec, self.decision, self.request, self.model = \
            svc, caller, spec, decision, request, model
        self.outcome = Outcome()
        self.started = time.perf_counter()
        self._raw_final: list[str] = []
        self._shown_final: list[str] = []
        self._tool_calls: list[ToolCallEvent] = []
        self._first_token_at: float | None = None

    @property
    def headers(self) -> dict[str, str]:
        """Response headers: the request id and the input decision (action, rule ids, policy revision)."""
        d = self.decision
        return {"x-request-id": self.caller.request_id,
                "x-appliance-policy": f"{d.action}; rules={','.join(d.rule_ids)}; revision={d.revision[:12]}"}

    async def deltas(self) -> AsyncIterator[Delta]:
        """Deltas as the engine produces them; ends after the completion record is durable."""
        out_filter = self.decision.output_filter()
        ended = False  # an outcome record has been started: never a second one
        try:
            try:
                # leaving this block (end, content filter stop, client gone at `yield`) stops the generation
                async with contextlib.aclosing(self.svc.backend.generate(self.model.name, self.request)) as stream:
                    async for chunk in stream:
                        delta = self._apply(chunk, out_filter)
                        if delta is not None:
                            self._first_token()
                            yield delta
                        if out_filter.stopped and self.outcome.rule_id is None:
                            self.outcome.finish_reason, self.outcome.rule_id = "content_filter", out_filter.rule_id
                        if self.outcome.finish_reason == "content_filter":
                            break
                tail = out_filter.finish()
                if tail.chunks:
                    yield self._from_filter(tail)
            except (EngineBusy, EngineError, ApiError) as exc:
                if isinstance(exc, ApiError):
                    raise
                busy = isinstance(exc, EngineBusy)
                ended = True
                await self._finish("error", 429 if busy else 400, "engine_busy" if busy else "invalid_request")
                if busy:
                    raise ApiError(429, "the engine is at capacity; retry shortly", code="engine_busy",
                                   retry_after=1) from exc
                raise ApiError(400, str(exc), code="invalid_request") from exc
            except Exception as exc:
                log.error("generation failed", request_id=self.caller.request_id, error=repr(exc)[:500])
                ended = True
                await self._finish("error", 503, "engine_unavailable")
                raise ApiError(503, "the model is unavailable; retry shortly", code="engine_unavailable",
                               retry_after=2) from exc
            if self._tool_calls and self.outcome.finish_reason == "stop":
                self.outcome.finish_reason = "tool_calls"
            ended = True
            await self._finish("completion", 200, None)
        finally:
            self._charge()
            if not ended:  # the client went away (or we were cancelled): the record still lands
                with contextlib.suppress(ApiError):  # nobody is left to tell; counted and logged
                    await asyncio.shield(self._finish("cancelled", 499, "client_disconnected"))

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

    def _charge(self) -> None:
        """Token rate limit: the usage the engine reported, or, when a generation ended before reporting it
        (client gone, content filter stop), its whole allowance, so stopping early never saves budget."""
        o = self.outcome
        used = o.prompt_tokens + o.completion_tokens if o.completion_tokens else \
            self.request.max_tokens + sum(len(m.get("content") or "") for m in self.request.messages) // 4
        self.svc.policy.charge_tokens(self.caller.principal, used)

    def _first_token(self) -> None:
        if self._first_token_at is None:
            self._first_token_at = time.perf_counter()
            self.svc.metrics.ttft.observe(self._first_token_at - self.started)

    def _apply(self, chunk: list, out_filter) -> Delta | None:
        reasoning, content, calls = [], [], []
        for event in chunk:
            if isinstance(event, TextEvent):
                if event.recipient is not None:
                    continue  # tool-call arguments arrive complete as a ToolCallEvent
                channel = "final" if event.channel == "final" else "analysis"
                if channel == "final":
                    self._raw_final.append(event.text)
                got = out_filter.feed(channel, event.text)
                reasoning.append(got.text_of("analysis"))
                content.append(got.text_of("final"))
                if got.stopped:
                    break
            elif isinstance(event, ToolCallEvent):
                call = self._checked_call(event)
                if call is None:
                    break
                self._tool_calls.append(call)
                calls.append(call)
            elif isinstance(event, FinishEvent):
                u = event.usage
                self.outcome.prompt_tokens, self.outcome.completion_tokens = u.prompt_tokens, u.completion_tokens
                self.outcome.reasoning_tokens = u.reasoning_tokens
                if event.finish_reason in ("length", "tool_calls"):
                    self.outcome.finish_reason = event.finish_reason
        delta = Delta("".join(reasoning), "".join(content), calls)
        self._shown_final.append(delta.content)
        return delta if (delta.reasoning or delta.content or delta.tool_calls) else None

    def _checked_call(self, call: ToolCallEvent) -> ToolCallEvent | None:
        """Output guardrails on a tool call's arguments too: redacted in place, or the answer stopped (None)."""
        guard = self.decision.output_filter()
        text = guard.feed("final", call.arguments).text + guard.finish().text
        if guard.stopped:
            self.outcome.finish_reason, self.outcome.rule_id = "content_filter", guard.rule_id
            return None
        return replace(call, arguments=text) if text != call.arguments else call

    def _from_filter(self, got) -> Delta:
        delta = Delta(got.text_of("analysis"), got.text_of("final"))
        self._shown_final.append(delta.content)
        return delta

    async def _record_end(self, event: str, status: int, error_code: str | None) -> None:
        raw = "".join(self._raw_final) + "".join(f"\n[tool {c.name}] {c.arguments}" for c in self._tool_calls)
        shown = "".join(self._shown_final) + "".join(f"\n[tool {c.name}] {c.arguments}" for c in self._tool_calls)
        mode = self.decision.audit_content
        o = self.outcome
        latency = time.perf_counter() - self.started
        self.svc.metrics.tokens.labels("prompt").inc(o.prompt_tokens)
        self.svc.metrics.tokens.labels("completion").inc(o.completion_tokens)
        self.svc.metrics.tokens.labels("reasoning").inc(o.reasoning_tokens)
        await self.svc.record(AuditEvent(
            event=event, request_id=self.caller.request_id, principal=self.caller.principal,
            source=self.caller.source, route=self.caller.route, model=self.model.name,
            bundle_version=self.model.version, policy_revision=self.decision.revision,
            decision=AuditDecision(action="deny" if o.finish_reason == "content_filter" else "allow",
                                   rule_ids=(o.rule_id,) if o.rule_id else ()),
            content_mode=mode, content=content_for(mode, raw, shown),
            usage=AuditUsage(prompt_tokens=o.prompt_tokens, completion_tokens=o.completion_tokens,
                             reasoning_tokens=o.reasoning_tokens),
            latency_ms=int(latency * 1000), status=status, error_code=error_code,
            detail={"finish_reason": o.finish_reason} if event == "completion" else {}))


async def start_generation(svc: Services, caller: Caller, spec: GenerationSpec) -> AuditedGeneration:
    """Checks that end in an error before any model work; returns once the request record is durable."""
    model = next((m for m in await models_or_503(svc) if m.name == spec.model), None)
    if model is None:
        raise ApiError(404, f"model {spec.model!r} does not exist or is not active", code="model_not_found",
                       param="model")
    base = dict(request_id=caller.request_id, principal=caller.principal, source=caller.source,
                route=caller.route, model=model.name, bundle_version=model.version,
                policy_revision=svc.policy.current.revision)
    try:
        svc.policy.check_rate(caller.principal)
    except RateLimited as exc:
        svc.metrics.decisions.labels("input", "rate_limited").inc()
        await svc.record(AuditEvent(event="denial", **base, decision=AuditDecision(action="deny",
                                    rule_ids=(exc.rule_id,)), status=429, error_code="rate_limited"))
        raise ApiError(429, str(exc), code="rate_limited", retry_after=exc.retry_after) from exc
    decision, audit_decision, content = await asyncio.to_thread(_evaluate, svc, caller, spec, model)
    svc.metrics.decisions.labels("input", decision.action).inc()
    if decision.denied:
        await svc.record(AuditEvent(event="denial", **base, decision=audit_decision, content_mode=content[0],
                                    content=content[1], status=403, error_code=decision.deny_rule,
                                    detail=content[2]))
        raise ApiError(403, f"{decision.message or 'denied by policy'} (rule {decision.deny_rule})",
                       code=decision.deny_rule)
    request = _engine_request(spec, decision)
    await svc.record(AuditEvent(event="request", **base, decision=audit_decision, content_mode=content[0],
                                content=content[1], detail=content[2]))
    return AuditedGeneration(svc, caller, spec, decision, request, model)


def _evaluate(svc: Services, caller: Caller, spec: GenerationSpec,
              model: ModelInfo) -> tuple[Decision, AuditDecision, tuple[ContentMode, str, dict[str, str]]]:
    """The input decision and what its audit record keeps; run in a worker thread, because scanning and
    serialising a large input takes real time that the gateway's event loop must not lose.

    An input over the size limits is refused before anything is scanned (the policy checks limits first),
    and its record keeps sizes and a hash only: nobody's megabytes are redacted, stored or echoed."""
    # Tool-call arguments the client sends back are text the model reads too: they follow the messages.
    scanned = [Message(m["role"], _text(m)) for m in spec.messages] + \
        [Message("assistant", args) for _, _, args in _call_arguments(spec)]
    policy_request = PolicyRequest(model=model.name, messages=scanned, max_tokens=spec.max_tokens,
                                   reasoning_effort=spec.reasoning_effort or "medium", tools=spec.tools or None)
    decision = svc.policy.evaluate_input(policy_request, caller.principal)
    findings: dict[str, int] = {}
    for f in decision.findings:
        findings[f.category] = findings.get(f.category, 0) + 1
    audit_decision = AuditDecision(action=decision.action, rule_ids=decision.rule_ids, findings=findings)
    raw = json.dumps([{"role": m.role, "content": m.content} for m in policy_request.messages],
                     ensure_ascii=False)
    if decision.denied and decision.deny_rule and decision.deny_rule.startswith("limits."):
        sizes = {"messages": str(len(scanned)), "input_chars": str(sum(len(m.content) for m in scanned))}
        return decision, audit_decision, ("hash", content_for("hash", raw), sizes)
    mode = decision.audit_content
    redacted = json.dumps([{"role": m.role, "content": m.content} for m in decision.messages],
                          ensure_ascii=False)
    return decision, audit_decision, (mode, content_for(mode, raw, redacted), {})


async def models_or_503(svc: Services) -> list[ModelInfo]:
    try:
        return await svc.backend.models()
    except Exception as exc:  # noqa: BLE001 - no model replica reachable yet
        raise ApiError(503, "no model is available yet; retry shortly", code="engine_unavailable",
                       retry_after=2) from exc


def _call_arguments(spec: GenerationSpec) -> list[tuple[int, int, str]]:
    """(message index, call index, arguments) of every tool call in the conversation."""
    return [(i, j, str(call.get("function", {}).get("arguments") or ""))
            for i, m in enumerate(spec.messages) for j, call in enumerate(m.get("tool_calls") or [])]


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _engine_request(spec: GenerationSpec, decision: Decision) -> GenerationRequest:
    """The redacted messages, with their non-text fields (tool calls, ids) kept from the original."""
    messages = [{**original, "content": redacted.content}
                for original, redacted in zip(spec.messages, decision.messages)]
    for (i, j, _), redacted in zip(_call_arguments(spec), decision.messages[len(spec.messages):]):
        calls = [dict(c) for c in messages[i]["tool_calls"]]
        calls[j] = {**calls[j], "function": {**calls[j]["function"], "arguments": redacted.content}}
        messages[i] = {**messages[i], "tool_calls": calls}
    tools = spec.tools
    choice = spec.tool_choice
    if choice == "none":
        tools = []
    elif isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
        tools = [t for t in tools if t["function"]["name"] == name]
        if not tools:
            raise ApiError(400, f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
        messages = [{"role": "developer", "content": f"Call the function {name} now."}, *messages]
    elif choice not in (None, "auto", "required"):
        raise ApiError(400, "tool_choice must be auto, none, required or a named function", param="tool_choice")
    if choice == "required" and tools:
        messages = [{"role": "developer", "content": "Answer by calling one of the functions."}, *messages]
    return GenerationRequest(
        messages=messages, tools=tools, reasoning_effort=spec.reasoning_effort or "medium",
        max_tokens=decision.max_tokens, temperature=1.0 if spec.temperature is None else spec.temperature,
        top_p=1.0 if spec.top_p is None else spec.top_p,
        seed=None if spec.seed is None else spec.seed % 2**64,  # OpenAI's int64, as the sampler's uint64
        stop=spec.stop)
