"""POST /v1/responses (OpenAI Responses API), streamed or not, with text and function tools; stored unless
`store` is false (api/stored.py), and continuing a stored one with `previous_response_id`."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from appliance.api import response_events as ev_
from appliance.api import stored
from appliance.api.auth import ServicesDep, UserCaller
from appliance.api.pipeline import AuditedGeneration, Delta, start_generation
from appliance.api.schemas import ResponsesRequest
from appliance.api.sse import event, primed, stream_response
from appliance.api.wire import (
    ERRORS,
    FunctionCallItem,
    IncompleteDetails,
    LogprobEntry,
    OutputMessage,
    OutputText,
    ReasoningItem,
    ReasoningText,
    ResponseObject,
    ResponseUsage,
)
from appliance.engine.types import TokenLogprob, ToolCallEvent

router = APIRouter(responses=ERRORS)
Done = Callable[[ResponseObject], Awaitable[None]]  # stores the finished response (when it is to be stored)


@router.post(
    "/v1/responses",
    response_model=ResponseObject,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "A response, or with `stream` its `response.*` events as server-sent events",
        }
    },
)
async def create_response(body: ResponsesRequest, caller: UserCaller, svc: ServicesDep) -> Response:
    store = stored.stored(svc, body.store)
    previous = body.previous_response_id
    spec = body.to_generation_spec(None if previous is None else await stored.history(svc, caller, previous))
    rid = f"resp_{uuid.uuid4().hex}"
    spec.audit["response_id"] = rid
    gen = await start_generation(svc, caller, spec)
    own = len(body.input_messages())

    async def done(sent: ResponseObject) -> None:
        if store:
            await stored.keep(svc, caller, previous, gen.request, own, sent)

    acc = _Accumulator(rid, gen, store, previous)
    if body.stream:
        return stream_response(_sse(gen, acc, done, await primed(gen.deltas())), gen.headers)
    async for delta in gen.deltas():
        acc.add(delta)
    final = acc.response(gen, "done")
    await done(final)
    return JSONResponse(final.model_dump(), headers=gen.headers)


class _Accumulator:
    def __init__(self, rid: str, gen: AuditedGeneration, store: bool, previous: str | None) -> None:
        self.rid, self.created, self.store, self.previous = rid, int(time.time()), store, previous
        self.gen = gen
        self.reasoning: list[str] = []
        self.text: list[str] = []
        self.entries: list[TokenLogprob] = []
        self.calls: list[ToolCallEvent] = []
        self.msg_id, self.reasoning_id = f"msg_{uuid.uuid4().hex}", f"rs_{uuid.uuid4().hex}"

    def add(self, delta: Delta) -> None:
        self.reasoning.append(delta.reasoning)
        self.text.append(delta.content)
        self.entries.extend(delta.logprobs)
        self.calls.extend(delta.tool_calls)

    def output(self) -> list[ReasoningItem | OutputMessage | FunctionCallItem]:
        out: list[ReasoningItem | OutputMessage | FunctionCallItem] = []
        if "".join(self.reasoning):
            out.append(ReasoningItem(id=self.reasoning_id, content=[ReasoningText(text="".join(self.reasoning))]))
        if "".join(self.text) or not self.calls:
            out.append(self.message("completed"))
        out += [FunctionCallItem.of(c, "completed") for c in self.calls]
        return out

    def message(self, status: str) -> OutputMessage:
        return OutputMessage(id=self.msg_id, status=status, content=[self.part()])

    def part(self) -> OutputText:
        return OutputText(text="".join(self.text), logprobs=self.logprobs(self.entries))

    def logprobs(self, entries: list[TokenLogprob]) -> list[LogprobEntry] | None:
        """`entries` as sent, when the request included them (none for an answer the filter stopped)."""
        if self.gen.request.logprobs is None or self.gen.outcome.finish_reason == "content_filter":
            return None
        return [LogprobEntry.of(e) for e in entries]

    def response(self, gen: AuditedGeneration, phase: str) -> ResponseObject:
        o = gen.outcome
        incomplete = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(o.finish_reason)
        done = phase == "done"
        return ResponseObject(
            id=self.rid,
            created_at=self.created,
            model=gen.model.name,
            status=("incomplete" if incomplete else "completed") if done else "in_progress",
            incomplete_details=IncompleteDetails(reason=incomplete) if done and incomplete else None,
            output=self.output() if done else [],
            usage=ResponseUsage.of(o.usage) if done else None,
            previous_response_id=self.previous,
            store=self.store,
        )


async def _sse(
    gen: AuditedGeneration, acc: _Accumulator, done: Done, deltas: AsyncIterator[Delta]
) -> AsyncIterator[str]:
    seq = 0

    def ev(e: ev_.ResponseEvent) -> str:
        nonlocal seq
        seq += 1
        e.sequence_number = seq
        return event(e.model_dump(), e.type)

    async for e in _events(gen, acc, done, deltas):
        yield ev(e)


async def _events(
    gen: AuditedGeneration, acc: _Accumulator, done: Done, deltas: AsyncIterator[Delta]
) -> AsyncIterator[ev_.ResponseEvent]:
    """The stream's events in OpenAI's order: the response, each output item as it opens, its deltas, its end
    (sent once the response is stored)."""
    yield ev_.ResponseCreated(response=acc.response(gen, "start"))
    yield ev_.ResponseInProgress(response=acc.response(gen, "start"))
    index = 0
    text_open = False
    async for delta in deltas:
        acc.add(delta)
        if delta.content:
            if not text_open:
                text_open, msg_index = True, index
                index += 1
                opened = acc.message("in_progress")
                opened.content = []
                yield ev_.OutputItemAdded(output_index=msg_index, item=opened)
                yield ev_.ContentPartAdded(item_id=acc.msg_id, output_index=msg_index, part=OutputText(text=""))
            yield ev_.OutputTextDelta(
                item_id=acc.msg_id,
                output_index=msg_index,
                delta=delta.content,
                logprobs=acc.logprobs(delta.logprobs) or [],
            )
        for call in delta.tool_calls:
            item = FunctionCallItem.of(call, "in_progress")
            yield ev_.OutputItemAdded(output_index=index, item=item)
            yield ev_.FunctionCallArgumentsDelta(item_id=item.id, output_index=index, delta=call.arguments)
            yield ev_.FunctionCallArgumentsDone(item_id=item.id, output_index=index, arguments=call.arguments)
            yield ev_.OutputItemDone(output_index=index, item=FunctionCallItem.of(call, "completed"))
            index += 1
    if text_open:
        part = acc.part()
        yield ev_.OutputTextDone(
            item_id=acc.msg_id, output_index=msg_index, text=part.text, logprobs=part.logprobs or []
        )
        yield ev_.ContentPartDone(item_id=acc.msg_id, output_index=msg_index, part=part)
        yield ev_.OutputItemDone(output_index=msg_index, item=acc.message("completed"))
    final = acc.response(gen, "done")
    await done(final)
    if final.status == "incomplete":
        yield ev_.ResponseIncomplete(response=final)
    else:
        yield ev_.ResponseCompleted(response=final)
