"""POST /v1/responses (OpenAI Responses API), streamed or not, with text and function tools."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from appliance.api.auth import USER, Caller, requires, services
from appliance.api.errors import ApiError
from appliance.api.pipeline import AuditedGeneration, Delta, GenerationSpec, start_generation
from appliance.api.schemas import ResponsesRequest
from appliance.api.services import Services
from appliance.api.sse import event, primed, stream_response

router = APIRouter()


def spec_from_responses(body: ResponsesRequest) -> GenerationSpec:
    messages: list[dict[str, Any]] = []
    if body.instructions:
        messages.append({"role": "developer", "content": body.instructions})
    items = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") in ("user", "system", "developer", "assistant"):
            messages.append({"role": item["role"], "content": _text(item.get("content"), f"input.{i}.content")})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": _str(item, "call_id", i), "type": "function",
                "function": {"name": _str(item, "name", i), "arguments": item.get("arguments") or "{}"}}]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": _str(item, "call_id", i),
                             "content": _text(item.get("output"), f"input.{i}.output")})
        elif kind != "reasoning":
            raise ApiError(400, f"input item {i} of type {kind!r} is not supported", param=f"input.{i}")
    if not messages or all(m["role"] == "developer" for m in messages):
        raise ApiError(400, "input must hold at least one message", param="input")
    tools = [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                               "parameters": t.parameters}} for t in body.tools or []]
    return GenerationSpec(model=body.model, messages=messages, tools=tools, tool_choice=body.tool_choice,
                          reasoning_effort=body.reasoning.effort if body.reasoning else None,
                          max_tokens=body.max_output_tokens, temperature=body.temperature, top_p=body.top_p)


def _str(item: dict, key: str, i: int) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"input item {i} needs {key}", param=f"input.{i}.{key}")
    return value


def _text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise ApiError(400, f"{param} must be text or a list of text parts", param=param)


@router.post("/v1/responses")
async def create_response(body: ResponsesRequest, caller: Caller = Depends(requires(USER)),
                          svc: Services = Depends(services)):
    gen = await start_generation(svc, caller, spec_from_responses(body))
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
        self.reasoning, self.text, self.calls = [], [], []
        self.msg_id, self.reasoning_id = f"msg_{uuid.uuid4().hex}", f"rs_{uuid.uuid4().hex}"

    def add(self, delta: Delta) -> None:
        self.reasoning.append(delta.reasoning)
        self.text.append(delta.content)
        self.calls.extend(delta.tool_calls)

    def output(self) -> list[dict]:
        out: list[dict] = []
        if "".join(self.reasoning):
            out.append({"type": "reasoning", "id": self.reasoning_id, "summary": [],
                        "content": [{"type": "reasoning_text", "text": "".join(self.reasoning)}]})
        if "".join(self.text) or not self.calls:
            out.append(self.message("completed"))
        out += [_call_item(c, "completed") for c in self.calls]
        return out

    def message(self, status: str) -> dict:
        return {"type": "message", "id": self.msg_id, "status": status, "role": "assistant",
                "content": [{"type": "output_text", "text": "".join(self.text), "annotations": []}]}

    def response(self, gen: AuditedGeneration, phase: str) -> dict:
        o = gen.outcome
        incomplete = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(o.finish_reason)
        done = phase == "done"
        return {"id": self.rid, "object": "response", "created_at": self.created, "model": gen.model.name,
                "status": ("incomplete" if incomplete else "completed") if done else "in_progress",
                "incomplete_details": {"reason": incomplete} if done and incomplete else None,
                "output": self.output() if done else [], "parallel_tool_calls": False, "tool_choice": "auto",
                "tools": [], "error": None,
                "usage": {"input_tokens": o.prompt_tokens, "output_tokens": o.completion_tokens,
                          "total_tokens": o.prompt_tokens + o.completion_tokens,
                          "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens_details": {"reasoning_tokens": o.reasoning_tokens}} if done else None}


def _call_item(call, status: str) -> dict:
    return {"type": "function_call", "id": f"fc_{call.id}", "call_id": call.id, "name": call.name,
            "arguments": call.arguments if status == "completed" else "", "status": status}


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
                yield ev("response.output_item.added", output_index=msg_index, item={**acc.message("in_progress"),
                                                                                     "content": []})
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
        yield ev("response.output_item.done", output_index=msg_index, item=acc.message("completed"))
    final = acc.response(gen, "done")
    yield ev("response.incomplete" if final["status"] == "incomplete" else "response.completed", response=final)
