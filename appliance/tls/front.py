"""The TLS front: terminates client TLS on the API's address and relays HTTP/1.1 to Serve's proxy on
127.0.0.1, adding the attested peer header (attest.py) to every request.

Why our own front rather than Serve's `ssl_*` options: Serve 2.60 (uvicorn underneath) cannot ask for a
client certificate (no `ssl_cert_reqs`) and hands the application neither the certificate nor anything
derived from it, so mTLS and recording the client's subject are impossible there.

Requests are parsed with h11 (strict: bad framing or headers over 16 KiB end the connection), so the front
knows where each request head starts on a keep-alive connection and can replace the peer header; bodies
and responses are relayed as they arrive, never buffered, so SSE streams flow through unchanged. When the
client hangs up, the upstream connection is closed at once: Serve sees the disconnect and the gateway
cancels the generation (its engine slot is freed). One front per process, on its own asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from pathlib import Path

import h11
import structlog
from cryptography import x509

from appliance.tls import attest
from appliance.tls.context import load_pair, server_context
from appliance.tls.listen import Listen, TlsFiles

log = structlog.get_logger()

MAX_HEAD = 16 * 1024  # the gateway's own header limit
READ = 64 * 1024
STALL_S = 60.0  # a request head or body that stops arriving this long is dropped (slow-loris)
HANDSHAKE_S = 10.0


class Front:
    """Accepts TLS on `listen.host:port`; relays to `listen.serve_host:serve_port`."""

    def __init__(self, listen: Listen, client_auth: str, keys_dir: Path, reload_seconds: float = 30.0,
                 sock: socket.socket | None = None) -> None:
        """`sock`: a listening socket bound beforehand (in the host's network namespace, before the process
        entered Ray's private one: serving/netns.py); else the front binds listen.host:port itself."""
        assert listen.tls is not None
        self.sock = sock
        self.listen, self.files, self.reload_seconds = listen, listen.tls, reload_seconds
        self.ctx = server_context(self.files, client_auth)
        self.verifies_clients = self.ctx.verify_mode != ssl.CERT_NONE
        secret = attest.load_secret(keys_dir, create=True)
        if secret is None:
            raise OSError(f"cannot create {keys_dir / attest.SECRET_NAME}")
        self.secret = secret
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._stamp = _stamp(self.files)

    async def start(self) -> None:
        where = {"sock": self.sock} if self.sock is not None else {"host": self.listen.host, "port": self.listen.port,
                                                                  "reuse_address": True}
        self._server = await asyncio.start_server(self._connection, ssl=self.ctx, ssl_handshake_timeout=HANDSHAKE_S,
                                                  limit=READ, **where)
        asyncio.get_running_loop().create_task(self._follow_rotation())

    def start_in_thread(self) -> threading.Thread:
        """Run the front on its own loop in a daemon thread; returns once it listens (or raises)."""
        started: list[BaseException | None] = []
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                started.append(exc)
                ready.set()
                return
            started.append(None)
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        thread = threading.Thread(target=run, name="tls-front", daemon=True)
        thread.start()
        ready.wait()
        if started[0] is not None:
            raise started[0]
        return thread

    def stop(self) -> None:
        """Stop accepting; open connections are closed with the loop."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # connections closed before the loop stops

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)

    async def _follow_rotation(self) -> None:
        """Certificate rotation without a restart: a changed pair on disk is loaded for new handshakes."""
        while True:
            await asyncio.sleep(self.reload_seconds)
            stamp = _stamp(self.files)
            if stamp == self._stamp:
                continue
            try:
                load_pair(self.ctx, self.files)
            except (OSError, ssl.SSLError) as exc:  # e.g. the key written, the certificate not yet
                log.error("TLS certificate not reloaded; the previous one stays in use", error=str(exc))
                continue
            self._stamp = stamp
            log.info("TLS certificate reloaded", cert=str(self.files.cert))

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = attest.Peer(str((writer.get_extra_info("peername") or ("unknown",))[0]), self._subject(writer))
        try:
            up_reader, up_writer = await asyncio.open_connection(self.listen.serve_host, self.listen.serve_port,
                                                                 limit=READ)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await _close(writer)
            return
        tasks = [asyncio.ensure_future(self._requests(reader, up_writer, peer)),
                 asyncio.ensure_future(_relay(up_reader, writer))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            up_writer.transport.abort()  # the client is gone (or upstream closed): Serve sees a disconnect
            await _close(writer)

    def _subject(self, writer: asyncio.StreamWriter) -> str | None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None and self.verifies_clients else None
        return x509.load_der_x509_certificate(der).subject.rfc4514_string() if der else None

    async def _requests(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, peer: attest.Peer) -> None:
        """Parse the client's requests; forward each head with the attested peer header, relay bodies."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        mark = attest.HEADER, attest.header_value(self.secret, peer)
        chunked = False
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return
            if event is h11.NEED_DATA:
                stalled = conn.their_state is h11.SEND_BODY or bool(conn.trailing_data[0])
                try:
                    data = await asyncio.wait_for(reader.read(READ), STALL_S if stalled else None)
                except (TimeoutError, ConnectionError, ssl.SSLError):
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                headers = [(k, v) for k, v in event.headers if k not in (attest.HEADER, b"upgrade")]
                chunked = any(k == b"transfer-encoding" for k, _ in headers)
                head = b"".join(b"%s: %s\r\n" % kv for kv in (*headers, mark))
                up.write(b"%s %s HTTP/%s\r\n%s\r\n" % (event.method, event.target, event.http_version, head))
            elif isinstance(event, h11.Data):
                up.write(b"%x\r\n%s\r\n" % (len(event.data), event.data) if chunked else event.data)
            elif isinstance(event, h11.EndOfMessage):
                if chunked:
                    up.write(b"0\r\n\r\n")
                if not _next_cycle(conn):
                    await up.drain()
                    await asyncio.Event().wait()  # no more requests (Connection: close): wait for the response
            else:  # ConnectionClosed (the client hung up) or PAUSED
                return
            await up.drain()


def _next_cycle(conn: h11.Connection) -> bool:
    """Let h11 parse the next request: our side's response goes straight from upstream to the client, so
    h11 is told of an empty one. False when the client asked to close after this request."""
    conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
    conn.send(h11.EndOfMessage())
    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
        conn.start_next_cycle()
        return True
    return False


async def _relay(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Upstream bytes to the client as they arrive (an SSE event is sent the moment Serve sends it)."""
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while data := await source.read(READ):
            sink.write(data)
            await sink.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 5)


def _stamp(files: TlsFiles) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in (files.cert, files.key):
        try:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((0, 0, 0))
    return tuple(out)
