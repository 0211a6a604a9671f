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
    reasoning, content, calls = [], [], []
    async for delta in gen.deltas():
        reasoning.append(delta.reasoning)
        content.append(delta.content)
        calls.extend(delta.tool_calls)
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
                content_filter_results=ContentFilterResults(rule_id=o.rule_id) if o.rule_id else None,
            )
        ],
    )
    body_json = completion.model_dump(exclude_none=True)
    body_json["choices"][0] |= {"logprobs": None}
    body_json["choices"][0]["message"].setdefault("content", None)
    return JSONResponse(body_json, headers=gen.headers)


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
            ).wire()
        )

    yield chunk(ChunkDelta(role="assistant", content=""))
    n_calls = 0
    async for delta in deltas:
        calls = [
            StreamToolCall(index=n_calls + i, **ToolCall.of(c).model_dump()) for i, c in enumerate(delta.tool_calls)
        ]
        n_calls += len(calls)
        if delta.reasoning or delta.content or calls:
            yield chunk(
                ChunkDelta(
                    reasoning_content=delta.reasoning or None, content=delta.content or None, tool_calls=calls or None
                )
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
            ).wire()
        )
    yield event("[DONE]")
