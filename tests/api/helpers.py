"""Helpers the API tests share: reading an SSE body, and a request's audit records."""

from __future__ import annotations

import json

from appliance.audit import AuditFilter


def sse_events(text: str) -> list:
    out = []
    for block in text.strip().split("\n\n"):
        data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
        if data:
            out.append(data[0] if data[0] == "[DONE]" else json.loads(data[0]))
    return out


def records(appliance, request_id: str) -> list:
    page = appliance.services.audit.query(AuditFilter(), limit=200)
    return sorted((r for r in page.records if r.request_id == request_id), key=lambda r: r.seq)
