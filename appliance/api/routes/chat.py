"""POST /v1/chat/completions, streamed or not."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from appliance.api.auth import ServicesDep, UserCaller
from appliance.api.pipeline import AuditedGeneration, Delta, start_generation
from appliance.api.schemas import ChatCompletionRequest
from appliance.api.sse import event, primed, stream_response
from appliance.api.wire import (
    ERRORS,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatUsage,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    ChunkDelta,
    ContentFilterResults,
    StreamToolCall,
    ToolCall,
)

router = APIRouter(responses=ERRORS)


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": ChatCompletionChunk.model_json_schema()}},
            "description": "A chat completion, or with `stream` its chunks as server-sent events",
        }
    },
)
async def chat_completions(body: ChatCompletionRequest, caller: UserCaller, svc: ServicesDep) -> Response:
    gen = await start_generation(svc, caller, body.to_generation_spec())
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return stream_response(_sse(gen, cid, await primed(gen.deltas()), include_usage), gen.headers)
    reasoning, content, calls, entries = [], [], [], []
    async for delta in gen.deltas():
        reasoning.append(delta.reasoning)
        content.append(delta.content)
        calls.extend(delta.tool_calls)
        entries.extend(delta.logprobs)
    message = AssistantMessage(
        content="".join(content) or (None if calls else ""),
        tool_calls=[ToolCall.of(c) for c in calls] or None,
        reasoning_content="".join(reasoning) or None,
    )
    o = gen.outcome
    completion = ChatCompletion(
        id=cid,
        created=int(time.time()),
        model=gen.model.name,
        usage=ChatUsage.of(o.usage),
        system_fingerprint=gen.model.version,
        choices=[
            Choice(
                message=message,
                finish_reason=o.finish_reason,
                logprobs=ChoiceLogprobs.of(entries if _logprobs(gen) else None),
                content_filter_results=ContentFilterResults(rule_id=o.rule_id) if o.rule_id else None,
            )
        ],
    )
    return JSONResponse(completion.model_dump(), headers=gen.headers)


def _logprobs(gen: AuditedGeneration) -> bool:
    """Whether the answer carries log probabilities: asked for, and not stopped by the output filter."""
    return gen.request.logprobs is not None and gen.outcome.finish_reason != "content_filter"


async def _sse(gen: AuditedGeneration, cid: str, deltas: AsyncIterator[Delta], include_usage: bool):
    created = int(time.time())

    def chunk(delta: ChunkDelta, finish: str | None = None, **extra) -> str:
        return event(
            ChatCompletionChunk(
                id=cid,
                created=created,
                model=gen.model.name,
                system_fingerprint=gen.model.version,
                choices=[ChunkChoice(delta=delta, finish_reason=finish, **extra)],
            ).model_dump()
        )

    yield chunk(ChunkDelta(role="assistant", content=""))
    n_calls = 0
    async for delta in deltas:
        calls = [
            StreamToolCall(index=n_calls + i, **ToolCall.of(c).model_dump()) for i, c in enumerate(delta.tool_calls)
        ]
        n_calls += len(calls)
        if delta.reasoning or delta.content or calls:
            asked = delta.content and gen.request.logprobs is not None
            yield chunk(
                ChunkDelta(
                    reasoning_content=delta.reasoning or None, content=delta.content or None, tool_calls=calls or None
                ),
                logprobs=ChoiceLogprobs.of(delta.logprobs if asked else None),
            )
    rule = gen.outcome.rule_id
    yield chunk(
        ChunkDelta(),
        gen.outcome.finish_reason,
        content_filter_results=ContentFilterResults(rule_id=rule) if rule else None,
    )
    if include_usage:
        yield event(
            ChatCompletionChunk(
                id=cid, created=created, model=gen.model.name, choices=[], usage=ChatUsage.of(gen.outcome.usage)
            ).model_dump()
        )
    yield event("[DONE]")
