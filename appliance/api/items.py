"""Responses items and chat-shaped messages, one conversion each way.

Requests arrive as Responses input items; the audited path and the engine (engine/harmony.py) take
chat-shaped messages. A stored response keeps its input as items (what GET .../input_items lists) and its
output as the response object; a chained request turns both back into messages with `messages_of`, so
continuing a stored response is exactly sending its items again.
"""

from __future__ import annotations

import uuid
from typing import Any

from appliance.engine.types import content_text
from appliance.errors import InvalidRequest

_INPUT_ROLES = ("user", "system", "developer", "assistant")


def messages_of(items: list[dict[str, Any]], where: str = "input") -> list[dict[str, Any]]:
    """Chat-shaped messages for Responses items. A reasoning item's text goes with the assistant message
    that follows it (harmony's analysis before that message); one with no text, as a client that was never
    shown the reasoning sends it back, is left out."""
    messages: list[dict[str, Any]] = []
    reasoning = ""
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "reasoning":
            parts = item.get("content")
            reasoning = "".join(
                p["text"]
                for p in (parts if isinstance(parts, list) else [])
                if isinstance(p, dict) and p.get("type") == "reasoning_text" and isinstance(p.get("text"), str)
            )
            continue
        if kind == "message" and item.get("role") in _INPUT_ROLES:
            message = {"role": item["role"], "content": content_text(item.get("content"), f"{where}.{i}.content")}
        elif kind == "function_call":
            call = {"name": _item_str(item, "name", i, where), "arguments": item.get("arguments") or "{}"}
            tool_call = {"id": _item_str(item, "call_id", i, where), "type": "function", "function": call}
            message = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
        elif kind == "function_call_output":
            output = content_text(item.get("output"), f"{where}.{i}.output")
            message = {"role": "tool", "tool_call_id": _item_str(item, "call_id", i, where), "content": output}
        else:
            raise InvalidRequest(f"input item {i} of type {kind!r} is not supported", f"{where}.{i}")
        if reasoning and message["role"] == "assistant":
            message["reasoning_content"] = reasoning
        reasoning = ""
        messages.append(message)
    return messages


def without_old_reasoning(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` with the reasoning of every assistant turn before the last user message left out: harmony
    keeps the chain of thought only within the turn it serves (tool calls and their results stay)."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    return [
        {k: v for k, v in m.items() if k != "reasoning_content"} if i < last_user else m for i, m in enumerate(messages)
    ]


def items_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses items (with ids, as GET .../input_items lists them) for chat-shaped messages."""
    items: list[dict[str, Any]] = []
    for m in messages:
        role, text = m["role"], content_text(m.get("content"))
        if role == "tool":
            items.append(_item("fco", "function_call_output", call_id=m["tool_call_id"], output=text))
            continue
        if role != "assistant":
            items.append(_item("msg", "message", role=role, content=[{"type": "input_text", "text": text}]))
            continue
        if m.get("reasoning_content"):
            thought = [{"type": "reasoning_text", "text": content_text(m["reasoning_content"])}]
            items.append(_item("rs", "reasoning", summary=[], content=thought))
        if text:
            answer: list[dict[str, Any]] = [{"type": "output_text", "text": text, "annotations": []}]
            items.append(_item("msg", "message", role="assistant", content=answer))
        for call in m.get("tool_calls") or []:
            fn = call["function"]
            items.append(_item("fc", "function_call", call_id=call["id"], name=fn["name"], arguments=fn["arguments"]))
    return items


def _item(prefix: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"id": f"{prefix}_{uuid.uuid4().hex}", "type": kind, **fields, "status": "completed"}


def _item_str(item: dict[str, Any], key: str, i: int, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"input item {i} needs {key}", f"{where}.{i}.{key}")
    return value
