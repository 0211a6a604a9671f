"""POST /v1/responses (OpenAI Responses API), streamed or not, with text and function tools."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from appliance.api.auth import ServicesDep, UserCaller
from appliance.api.pipeline import AuditedGeneration, Delta, start_generation
from appliance.api.schemas import ResponsesRequest
from appliance.api.sse import event, primed, stream_response
from appliance.api.wire import (
    ERRORS,
    FunctionCallItem,
    IncompleteDetails,
    OutputMessage,
    OutputText,
    ReasoningItem,
    ReasoningText,
    ResponseObject,
    ResponseUsage,
)
from appliance.engine.types import ToolCallEvent

router = APIRouter(responses=ERRORS)


@router.post("/v1/responses", response_model=ResponseObject, responses={
    200: {"content": {"text/event-stream": {}}, "description": "A response, or with `stream` its `response.*` "
          "events as server-sent events"}})
async def create_response(body: ResponsesRequest, caller: UserCaller, svc: ServicesDep) -> Response:
    gen = await start_generation(svc, caller, body.to_generation_spec())
    rid = f"resp_{uuid.uuid4().hex}"
    if body.stream:
        return stream_response(_sse(gen, rid, await primed(gen.deltas())), gen.headers)
    acc = _Accumulator(rid)
    async for delta in gen.deltas():
        acc.add(delta)
    return JSONResponse(acc.response(gen, "done"), headers=gen.headers)


class _Accumulator:
    def __init__(self, rid: str) -> None:
        self.rid, self.created = rid, int(time.time())
        self.reasoning: list[str] = []
        self.text: list[str] = []
        self.calls: list[ToolCallEvent] = []
        self.msg_id, self.reasoning_id = f"msg_{uuid.uuid4().hex}", f"rs_{uuid.uuid4().hex}"

    def add(self, delta: Delta) -> None:
        self.reasoning.append(delta.reasoning)
        self.text.append(delta.content)
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
        return OutputMessage(id=self.msg_id, status=status, content=[OutputText(text="".join(self.text))])

    def response(self, gen: AuditedGeneration, phase: str) -> dict:
        o = gen.outcome
        incomplete = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(o.finish_reason)
        done = phase == "done"
        return ResponseObject(
            id=self.rid, created_at=self.created, model=gen.model.name,
            status=("incomplete" if incomplete else "completed") if done else "in_progress",
            incomplete_details=IncompleteDetails(reason=incomplete) if done and incomplete else None,
            output=self.output() if done else [], usage=ResponseUsage.of(o.usage) if done else None).model_dump()


def _call_item(call, status: str) -> dict:
    return FunctionCallItem.of(call, status).model_dump()


async def _sse(gen: AuditedGeneration, rid: str, deltas: AsyncIterator[Delta]):
    acc = _Accumulator(rid)
    seq = 0

    def ev(kind: str, **data) -> str:
        nonlocal seq
        seq += 1
        return event({"type": kind, "sequence_number": seq, **data}, kind)

    yield ev("response.created", response=acc.response(gen, "start"))
    yield ev("response.in_progress", response=acc.response(gen, "start"))
    index = 0
    text_open = False
    async for delta in deltas:
        acc.add(delta)
        if delta.content:
            if not text_open:
                text_open, msg_index = True, index
                index += 1
                opened = {**acc.message("in_progress").model_dump(), "content": []}
                yield ev("response.output_item.added", output_index=msg_index, item=opened)
                yield ev("response.content_part.added", item_id=acc.msg_id, output_index=msg_index, content_index=0,
                         part={"type": "output_text", "text": "", "annotations": []})
            yield ev("response.output_text.delta", item_id=acc.msg_id, output_index=msg_index, content_index=0,
                     delta=delta.content, logprobs=[])
        for call in delta.tool_calls:
            item = _call_item(call, "in_progress")
            yield ev("response.output_item.added", output_index=index, item=item)
            yield ev("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                     delta=call.arguments)
            yield ev("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                     arguments=call.arguments)
            yield ev("response.output_item.done", output_index=index, item=_call_item(call, "completed"))
            index += 1
    if text_open:
        text = "".join(acc.text)
        yield ev("response.output_text.done", item_id=acc.msg_id, output_index=msg_index, content_index=0, text=text,
                 logprobs=[])
        yield ev("response.content_part.done", item_id=acc.msg_id, output_index=msg_index, content_index=0,
                 part={"type": "output_text", "text": text, "annotations": []})
        yield ev("response.output_item.done", output_index=msg_index, item=acc.message("completed").model_dump())
    final = acc.response(gen, "done")
    yield ev("response.incomplete" if final["status"] == "incomplete" else "response.completed", response=final)
