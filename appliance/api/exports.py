"""Audit exports as HTTP responses (the API's and the admin page's): bounded in number and in time.

An export is written whole to an unnamed temporary file (unlinked at once: nothing is left behind whatever
the client does), then streamed in blocks. The file holds disk until it is closed, so each replica runs at
most `audit_export_concurrency` exports at once (one more is a 429) and closes an export's file when the
client hangs up or has not read it all within `audit_export_deadline_s`: a slow or stalled reader can hold
neither the disk nor a slot for longer.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO

import structlog
from fastapi.responses import StreamingResponse

from appliance.api.errors import ApiError
from appliance.audit import AuditFilter, AuditLog

BLOCK = 1 << 20
log = structlog.get_logger()


class Exports:
    """The exports running in this process, at most `limit` of them, each ending within `deadline_s`."""

    def __init__(self, limit: int, deadline_s: float) -> None:
        self.limit, self.deadline_s = limit, deadline_s
        self.running = 0

    async def response(
        self,
        audit: AuditLog,
        fmt: str,
        filters: AuditFilter | None = None,
        filename: str = "audit",
        record: Callable[[], Awaitable[int]] | None = None,
    ) -> StreamingResponse:
        """The export as a download; ApiError 429 when `limit` exports are already running here. `record`
        writes the export's own record once the slot is taken (an export refused here is not recorded) and
        returns its seq, which the export then includes."""
        if self.running >= self.limit:  # checked and taken with no await between: one event loop
            raise ApiError(
                429,
                f"{self.limit} audit exports are already running on this gateway; retry when one has finished",
                code="too_many_exports",
            )
        self.running += 1
        try:
            own = await record() if record is not None else None
            handle = await asyncio.to_thread(_written, audit, fmt, filters, own)
        except BaseException:
            self.release()
            raise
        return _Download(
            self,
            handle,
            media_type="application/x-ndjson" if fmt == "jsonl" else "text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}.{fmt}"'},
        )

    def release(self) -> None:
        """One export has ended (its file closed)."""
        self.running -= 1


def _written(audit: AuditLog, fmt: str, filters: AuditFilter | None, also: int | None) -> IO[bytes]:
    """The export (with record `also`, its own) in an open, already unlinked temporary file."""
    fd, name = tempfile.mkstemp(prefix="audit-export-", suffix=f".{fmt}")
    os.close(fd)
    try:
        audit.export(fmt, Path(name), None, filters, also)
        return open(name, "rb")
    finally:
        os.unlink(name)


class _Download(StreamingResponse):
    """Streams the file; whatever ends it (done, hung up, past the deadline) closes the file and frees the slot."""

    def __init__(self, exports: Exports, handle: IO[bytes], **kwargs) -> None:
        super().__init__(_blocks(handle), **kwargs)
        self._exports, self._handle = exports, handle

    async def __call__(self, scope, receive, send) -> None:
        try:
            async with asyncio.timeout(self._exports.deadline_s):
                await super().__call__(scope, receive, send)
        except TimeoutError:  # the response is cut short: the client sees an incomplete body
            log.warning("audit export cut off: not read within the deadline", deadline_s=self._exports.deadline_s)
        finally:
            self._handle.close()
            self._exports.release()


def _blocks(handle: IO[bytes]) -> Iterator[bytes]:
    while not handle.closed and (block := handle.read(BLOCK)):
        yield block
