"""Every parameter of OpenAI's Chat Completions and Responses create calls: honoured, or refused by name.

One table per route, read by three parties: the request models (schemas.py) refuse what the table refuses
and anything it does not name, the tests compare it with the installed `openai` package's own parameter
lists (a new SDK parameter fails them until it is decided here), and docs/api-parameters.md is rendered
from it (`markdown_table`), so the documented decision cannot drift from the enforced one.

A refused parameter is still accepted with a value that asks for nothing (null, or the default named in
`accepts`): an SDK or framework that always sends `store: false` or `n: 1` keeps working, and any value
that asks for something the appliance would not do is a 400 `unsupported_parameter` naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from appliance.api.errors import ApiError


@dataclass(frozen=True)
class Param:
    """How the appliance treats one request parameter."""

    honoured: bool
    how: str  # honoured: what it does here; refused: why
    accepts: tuple[Any, ...] = ()  # refused: the values that ask for nothing (null is always one)


def ok(how: str) -> Param:
    return Param(True, how)


def no(why: str, *accepts: Any) -> Param:
    return Param(False, why, accepts)


_SHARED = {
    "model": ok("the bundle name of an active model; 404 otherwise"),
    "stream": ok("server-sent events"),
    "temperature": ok("0 is greedy; sampled on the engine with the request's own generator"),
    "top_p": ok("nucleus sampling"),
    "tool_choice": ok(
        "`auto`; `none` (tools not shown, and the grammar forbids a call); `required` or a named "
        "function (an instruction, and the grammar allows no final answer before the call)"
    ),
    "tools": ok(
        "function tools, shown in harmony's tool section; with `strict`, or in any constrained "
        "request, a call's arguments are constrained to the tool's `parameters` schema"
    ),
    "parallel_tool_calls": ok(
        "a gpt-oss turn ends at its first call (`<|call|>` stops it), so a response "
        "holds at most one call: `false` holds, `true` allows it"
    ),
    "metadata": ok("up to 16 string pairs, stored in the request's audit record"),
    "user": ok("the end user the application acts for, stored in the request's audit record"),
    "safety_identifier": ok("the end user the application acts for, stored in the request's audit record"),
    "service_tier": no("one tier serves every request", "auto", "default"),
    "prompt_cache_key": no("no prompt cache to route by"),
    "prompt_cache_retention": no("no prompt cache"),
    "prompt_cache_options": no("no prompt cache"),
    "moderation": no("moderation is the appliance's own policy, set by its operator, not per request"),
}

CHAT: dict[str, Param] = {
    **_SHARED,
    "messages": ok(
        "system, developer, user, assistant (with tool calls and reasoning) and tool messages; text content only"
    ),
    "max_tokens": ok("completion token limit (within the policy's limit)"),
    "max_completion_tokens": ok("completion token limit, preferred over max_tokens"),
    "n": ok("only 1 (other values are refused)"),
    "seed": ok("reproducible sampling per request, whatever shares the batch"),
    "stop": ok("up to 4 strings that end the final answer"),
    "stream_options": ok("`include_usage`"),
    "reasoning_effort": ok("low, medium or high, in harmony's system message"),
    "presence_penalty": ok("subtracted from the logits of every token already generated"),
    "frequency_penalty": ok("subtracted from a token's logit once per time it was generated"),
    "logit_bias": ok("added to the logits of the named token ids (-100..100) before sampling"),
    "response_format": ok(
        "`text`, `json_object` or `json_schema` (name, description, schema, strict): shown "
        "to the model as harmony's response format and enforced by the grammar on the final "
        "channel; a schema that cannot be enforced is a 400 naming the keyword"
    ),
    "store": no("chat completions are not stored (stored Responses are: /v1/responses)", False),
    "logprobs": ok(
        "log probabilities of the final answer's tokens (never of the reasoning or of tool calls), "
        "streamed with the text they belong to; a span the output filter rewrote is one entry "
        "with the shown text, logprob -9999 and no alternatives; none for an answer the filter stopped"
    ),
    "top_logprobs": ok("0 to 20 most likely alternatives per entry; needs `logprobs: true`"),
    "audio": no("text output only"),
    "modalities": no("text output only", ["text"]),
    "prediction": no("no predicted-output decoding"),
    "functions": no("deprecated by OpenAI: use tools"),
    "function_call": no("deprecated by OpenAI: use tool_choice"),
    "verbosity": no("gpt-oss has no verbosity setting"),
    "web_search_options": no("the appliance has no network to search"),
}

RESPONSES: dict[str, Param] = {
    **_SHARED,
    "input": ok("a string, or message, function_call, function_call_output and reasoning items; text only"),
    "instructions": ok("a developer message ahead of the input"),
    "max_output_tokens": ok("output token limit (within the policy's limit)"),
    "reasoning": ok("`effort` low, medium or high; a summary is refused"),
    "text": ok("`format` `text`, `json_object` or `json_schema`, as chat's `response_format`; `verbosity` is refused"),
    "max_tool_calls": ok("any value >= 1 holds: a response ends at its first call"),
    "stream_options": no("no stream obfuscation", {"include_obfuscation": False}),
    "include": ok(
        "`message.output_text.logprobs` only: the answer's log probabilities, as chat's `logprobs` "
        "(encrypted reasoning and sources are refused by name)"
    ),
    "top_logprobs": ok("0 to 20 most likely alternatives per entry; needs `message.output_text.logprobs` in `include`"),
    "store": ok(
        "default true: the response is kept in the appliance's database for its key only (GET, "
        "input_items, DELETE, `previous_response_id`) for `responses_retention_days`; where the site turns "
        "storage off (`responses_store: false`) it defaults to false and true is a 400"
    ),
    "previous_response_id": ok(
        "continues a stored response of the same key: its chain's input and output items go before the "
        "input (instructions are not carried over; reasoning before the last user message is dropped, as "
        "harmony requires); 404 for an unknown, expired, deleted or another key's id; 400 when storage is off"
    ),
    "conversation": no("conversations are not stored: send the whole conversation as input"),
    "background": no("no background responses", False),
    "background_options": no("no background responses"),
    "prompt": no("no stored prompt templates"),
    "truncation": no("an input over the context is refused, never truncated", "disabled"),
    "context_management": no("an input over the context is refused, never compacted"),
    "access_programs": no("no hosted tools or programs"),
    "image": no("text output only"),
}


def refused(table: dict[str, Param], body: dict[str, Any]) -> dict[str, Any]:
    """`body` if every key is a parameter the table honours or a refused one with a value that asks for
    nothing (those removed); otherwise the 400 that names the first offending key."""
    kept = {}
    for key, value in body.items():
        param = table.get(key)
        if param is None:
            raise ApiError(400, f"Unrecognized request argument supplied: {key}", code="unknown_parameter", param=key)
        if param.honoured:
            kept[key] = value
        elif value is not None and value not in param.accepts:
            raise ApiError(400, f"{key} is not supported: {param.how}", code="unsupported_parameter", param=key)
    return kept


def markdown_table(table: dict[str, Param]) -> str:
    """The table as docs/api-parameters.md shows it: one row per parameter, sorted."""
    rows = ["| Parameter | Decision | How / why |", "|---|---|---|"]
    for name in sorted(table):
        p = table[name]
        also = ", ".join(json.dumps(v) for v in p.accepts)
        decision = "honoured" if p.honoured else "refused" + (f" (accepted: null, {also})" if also else "")
        rows.append(f"| `{name}` | {decision} | {p.how} |")
    return "\n".join(rows)
