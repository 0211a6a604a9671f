"""Helpers the API tests share: reading an SSE body, a request's audit records, the admin page's forms."""

from __future__ import annotations

import asyncio
import json
import re

import httpx

from appliance.audit import AuditFilter
from appliance.tls import attest

PAGE = "/admin/ui"


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


def browser(appliance) -> httpx.AsyncClient:
    """A client with no key: the page signs in with a form and keeps cookies."""
    return appliance.client(None)


def peer(appliance, subject: str | None) -> dict[str, str]:
    """The header the TLS front adds for a connection that presented `subject` (none: no header)."""
    if subject is None:
        return {}
    secret = attest.load_secret(appliance.settings.keys_dir, create=True)  # as the gate makes it
    assert secret is not None
    return {"x-appliance-peer": attest.header_value(secret, attest.Peer("10.0.0.9", subject)).decode()}


async def token_of(c: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None) -> str:
    response = await c.get(f"{PAGE}{path}", headers=headers or {})
    assert response.status_code == 200, response.text
    return re.search(r'name="csrf_token" value="([^"]+)"', response.text).group(1)


async def sign_in(appliance, c: httpx.AsyncClient, role: str, subject: str | None = None) -> None:
    token = await token_of(c, "/signin", peer(appliance, subject))
    response = await c.post(
        f"{PAGE}/signin", data={"key": appliance.tokens[role], "csrf_token": token}, headers=peer(appliance, subject)
    )
    assert response.status_code == 303 and response.headers["location"].endswith("/audit"), response.text


async def hang_up_mid_stream(app, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """Drive the ASGI app as a client that sends `body`, then hangs up 0.2 s into the answer: httpx's transport
    cannot hang up mid-body, which is what the disconnect paths need."""
    sent = []

    async def receive():
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(0.2)
        return {"type": "http.disconnect"}

    async def send(message):
        pass

    scope = chat_scope([(b"content-type", b"application/json"), *headers])
    await asyncio.wait_for(app(scope, receive, send), 30)


def chat_scope(headers: list[tuple[bytes, bytes]], client: tuple[str, int] = ("127.0.0.1", 1)) -> dict:
    """The ASGI scope of a POST to /v1/chat/completions, for tests that drive the app below httpx."""
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": headers,
        "client": client,
        "server": ("appliance", 80),
        "scheme": "http",
        "http_version": "1.1",
        "root_path": "",
        "asgi": {"version": "3.0"},
    }
