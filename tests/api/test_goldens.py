"""Golden: a full `/v1/responses` event stream (ids and times normalised), text and a tool call."""

from __future__ import annotations

import json
import re

from tests.api.helpers import sse_events
from tests.api.scripted import answer, tool_call
from tests.goldens import check_golden


def _normalised(events: list) -> str:
    text = json.dumps(events, indent=1, sort_keys=True, ensure_ascii=False)
    text = re.sub(r'"(resp|msg|rs|fc)_[0-9a-f]{32}"', r'"\1_ID"', text)
    return re.sub(r'"(created_at|created)": \d+', r'"\1": 0', text) + "\n"


async def test_responses_event_stream(client, scripted):
    scripted.chunks = answer("Paris is the capital.")[:2] + tool_call("get_weather", '{"city":"Paris"}')
    r = await client.post(
        "/v1/responses",
        json={
            "model": "tiny",
            "input": "Weather in Paris?",
            "stream": True,
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        },
    )
    assert r.status_code == 200
    check_golden("responses_stream.json", _normalised(sse_events(r.text)))
