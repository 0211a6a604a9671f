"""Audit exports over HTTP are bounded (issue 22, defect 12b): at most `audit_export_concurrency` at once
(one more is an OpenAI-shaped 429), and an export's temporary file is closed, its disk and slot given back,
when its client hangs up or has not read it within `audit_export_deadline_s`.

A stalled client is driven at the ASGI level (the in-process transport reads a whole body at once): its
`send` never returns from the first block, as when a reader stops reading and the socket fills."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from appliance.audit import AuditEvent
from tests.api.helpers import PAGE, browser, sign_in
from tests.appliance import make_appliance

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def appliance(module_dir, signed_tiny_bundle, publisher):
    a = make_appliance(module_dir / "var", signed_tiny_bundle, publisher[1], audit_export_concurrency=1)
    for i in range(3):  # something to export
        a.services.audit.append(AuditEvent(event="admin.key_created", request_id=f"seed-{i}", status=200))
    yield a
    a.services.backend.close()
    a.services.close()


def export_files() -> list[str]:
    """The export files this process holds open (unlinked, so only an open descriptor keeps their disk)."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return [n for n in names if Path(n).name.startswith("audit-export-")]


class StalledClient:
    """An ASGI client of GET /admin/audit/export that takes the headers and the first block, then stops
    reading; `hang_up()` makes it disconnect."""

    def __init__(self, appliance) -> None:
        self.app, self.token = appliance.app, appliance.tokens["auditor"]
        self.first_block, self.gone = asyncio.Event(), asyncio.Event()
        self.status: int | None = None

    async def run(self) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/admin/audit/export",
            "raw_path": b"/admin/audit/export",
            "query_string": b"format=jsonl",
            "root_path": "",
            "client": ("10.0.0.5", 5000),
            "server": ("appliance", 80),
            "headers": [(b"authorization", f"Bearer {self.token}".encode())],
        }
        sent_request = False

        async def receive():
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self.gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message.get("body"):
                self.first_block.set()
                await asyncio.Event().wait()  # never reads on

        await self.app(scope, receive, send)

    def hang_up(self) -> None:
        self.gone.set()


async def test_one_export_too_many_is_a_429_and_a_hang_up_frees_file_and_slot(appliance):
    before = export_files()
    stalled = StalledClient(appliance)
    task = asyncio.create_task(stalled.run())
    waiting = asyncio.create_task(stalled.first_block.wait())
    await asyncio.wait([task, waiting], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    assert not task.done(), task.exception()
    assert stalled.status == 200 and len(export_files()) == len(before) + 1
    async with appliance.client("auditor") as c:
        refused = await c.get("/admin/audit/export")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_exports"
        assert refused.json()["error"]["type"] == "rate_limit_error"
    async with browser(appliance) as page:  # the admin page's export shares the bound
        await sign_in(appliance, page, "auditor")
        assert (await page.get(f"{PAGE}/audit/export")).status_code == 429
        stalled.hang_up()
        await asyncio.wait_for(task, 60)
        assert export_files() == before
        assert (await page.get(f"{PAGE}/audit/export")).status_code == 200
    async with appliance.client("auditor") as c:
        assert (await c.get("/admin/audit/export")).status_code == 200


async def test_an_export_not_read_within_the_deadline_is_cut_off(appliance, monkeypatch):
    monkeypatch.setattr(appliance.services.exports, "deadline_s", 0.5)
    before = export_files()
    stalled = StalledClient(appliance)  # never hangs up: only the deadline ends it
    await asyncio.wait_for(stalled.run(), 60)
    assert stalled.first_block.is_set() and export_files() == before
    async with appliance.client("auditor") as c:
        assert (await c.get("/admin/audit/export")).status_code == 200  # the slot was given back
