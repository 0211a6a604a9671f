"""Typed `response.*` server-sent events of a streamed /v1/responses call, as OpenAI's Responses API sends
them (gpt-oss `responses_api/events.py` is the model). `sequence_number` is set by the stream as it sends.
The golden file tests/golden/responses_stream.json holds one whole stream."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from appliance.api.wire import FunctionCallItem, LogprobEntry, OutputMessage, OutputText, ResponseObject


class _Event(BaseModel):
    sequence_number: int = 0


class ResponseCreated(_Event):
    type: Literal["response.created"] = "response.created"
    response: ResponseObject


class ResponseInProgress(_Event):
    type: Literal["response.in_progress"] = "response.in_progress"
    response: ResponseObject


class ResponseCompleted(_Event):
    type: Literal["response.completed"] = "response.completed"
    response: ResponseObject


class ResponseIncomplete(_Event):
    type: Literal["response.incomplete"] = "response.incomplete"
    response: ResponseObject


class OutputItemAdded(_Event):
    type: Literal["response.output_item.added"] = "response.output_item.added"
    output_index: int
    item: OutputMessage | FunctionCallItem


class OutputItemDone(_Event):
    type: Literal["response.output_item.done"] = "response.output_item.done"
    output_index: int
    item: OutputMessage | FunctionCallItem


class _Part(_Event):
    item_id: str
    output_index: int
    content_index: int = 0


class ContentPartAdded(_Part):
    type: Literal["response.content_part.added"] = "response.content_part.added"
    part: OutputText


class ContentPartDone(_Part):
    type: Literal["response.content_part.done"] = "response.content_part.done"
    part: OutputText


class OutputTextDelta(_Part):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str
    logprobs: list[LogprobEntry] = Field(default_factory=list)  # this delta's entries, when included


class OutputTextDone(_Part):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str
    logprobs: list[LogprobEntry] = Field(default_factory=list)  # the whole text's entries, when included


class FunctionCallArgumentsDelta(_Event):
    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDone(_Event):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    item_id: str
    output_index: int
    arguments: str


ResponseEvent = (
    ResponseCreated
    | ResponseInProgress
    | ResponseCompleted
    | ResponseIncomplete
    | OutputItemAdded
    | OutputItemDone
    | ContentPartAdded
    | ContentPartDone
    | OutputTextDelta
    | OutputTextDone
    | FunctionCallArgumentsDelta
    | FunctionCallArgumentsDone
)
