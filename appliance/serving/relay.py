"""Carries the API's TCP connections from the host's network namespace to Serve's proxy in Ray's private one.

A byte relay, not an HTTP proxy: it changes nothing in the stream, so streaming, keep-alive and errors are
Serve's own. A client that hangs up closes the upstream connection at once, so Serve sees the disconnect
and the engine gives the slot back. It serves loopback clients only (see `appliance.serving.netns`): for
those the source address Serve records, 127.0.0.1, is the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import structlog

log = structlog.get_logger()

CHUNK = 64 * 1024


class Relay:
    """Accepts on `listener` and joins each connection to a new one to `upstream`, in a thread of its own."""

    def __init__(self, listener: socket.socket, upstream: tuple[str, int]) -> None:
        self.listener, self.upstream = listener, upstream
        self._loop = asyncio.new_event_loop()
        self._stopped = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="api-relay", daemon=True)

    def start(self) -> None:
        """Start relaying; the thread (and so its upstream connections) lives in the caller's namespace."""
        self._thread.start()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._join, sock=self.listener, limit=CHUNK)
        async with server:
            await self._stopped.wait()

    async def _join(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream, limit=CHUNK)
        except OSError as exc:
            log.warning("api relay cannot reach the Serve proxy", error=str(exc))
            client_w.close()
            return
        pipes = [asyncio.create_task(_pipe(client_r, up_w)), asyncio.create_task(_pipe(up_r, client_w))]
        # Either side ending ends both: a half-open connection would keep a stream (and its slot) alive.
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
        for writer in (up_w, client_w):
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
