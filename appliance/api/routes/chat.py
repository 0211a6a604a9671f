"""POST /v1/chat/completions, streamed or not."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from appliance.api.auth import ServicesDep, UserCaller
from appliance.api.pipeline import AuditedGeneration, Delta, start_generation
from appliance.api.schemas import ChatCompletionRequest
from appliance.api.sse import event, primed, stream_response

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, caller: UserCaller,
                           svc: ServicesDep):
    gen = await start_generation(svc, caller, body.to_generation_spec())
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return stream_response(_sse(gen, cid, await primed(gen.deltas()), include_usage), gen.headers)
    reasoning, content, calls = [], [], []
    async for delta in gen.deltas():
        reasoning.append(delta.reasoning)
        content.append(delta.content)
        calls.extend(delta.tool_calls)
    message: dict = {"role": "assistant", "content": "".join(content) or (None if calls else "")}
    if calls:
        message["tool_calls"] = [_tool_call(c) for c in calls]
    if "".join(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    choice = {"index": 0, "message": message, "finish_reason": gen.outcome.finish_reason, "logprobs": None}
    if gen.outcome.rule_id:
        choice["content_filter_results"] = {"rule_id": gen.outcome.rule_id}
    return JSONResponse({"id": cid, "object": "chat.completion", "created": int(time.time()), "model": gen.model.name,
                         "choices": [choice], "usage": usage(gen), "system_fingerprint": gen.model.version},
                        headers=gen.headers)


def usage(gen: AuditedGeneration) -> dict:
    u = gen.outcome.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens, "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "prompt_tokens_details": {"cached_tokens": 0}}


def _tool_call(call, index: int | None = None) -> dict:
    out = {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
    return out if index is None else {"index": index, **out}


async def _sse(gen: AuditedGeneration, cid: str, deltas: AsyncIterator[Delta], include_usage: bool):
    created = int(time.time())

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        return event({"id": cid, "object": "chat.completion.chunk", "created": created, "model": gen.model.name,
                      "system_fingerprint": gen.model.version,
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None, **extra}]})

    yield chunk({"role": "assistant", "content": ""})
    n_calls = 0
    async for delta in deltas:
        piece: dict = {}
        if delta.reasoning:
            piece["reasoning_content"] = delta.reasoning
        if delta.content:
            piece["content"] = delta.content
        if delta.tool_calls:
            piece["tool_calls"] = [_tool_call(c, n_calls + i) for i, c in enumerate(delta.tool_calls)]
            n_calls += len(delta.tool_calls)
        if piece:
            yield chunk(piece)
    extra = {"content_filter_results": {"rule_id": gen.outcome.rule_id}} if gen.outcome.rule_id else {}
    yield chunk({}, gen.outcome.finish_reason, **extra)
    if include_usage:
        yield event({"id": cid, "object": "chat.completion.chunk", "created": created, "model": gen.model.name,
                     "choices": [], "usage": usage(gen)})
    yield event("[DONE]")
