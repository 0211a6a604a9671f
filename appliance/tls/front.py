"""The front: terminates client TLS on the API's address (or, without a certificate, takes plain HTTP) and
relays HTTP/1.1 to Serve's proxy on 127.0.0.1, adding the attested peer header (attest.py) to every request
and dropping the headers with which a client could steer Serve's proxy (`SERVE_HINTS`). With Ray in its
private network (serving/netns.py) every API connection passes here, TLS or not.

Why our own front rather than Serve's `ssl_*` options: Serve 2.60 (uvicorn underneath) cannot ask for a
client certificate (no `ssl_cert_reqs`) and hands the application neither the certificate nor anything
derived from it, so mTLS and recording the client's subject are impossible there.

Requests are parsed with h11 (strict: bad framing or headers over 16 KiB end the connection), so the front
knows where each request head starts on a keep-alive connection and can replace the peer header; bodies
and responses are relayed as they arrive, never buffered, so SSE streams flow through unchanged. When the
client hangs up, the upstream connection is closed at once: Serve sees the disconnect and the gateway
cancels the generation (its engine slot is freed). One front per process, on its own asyncio loop.

Idle clients cannot pile up (`FrontLimits`): the upstream connection is opened at a connection's first
request, a connection with no request in progress and no bytes either way for the idle timeout is closed
(before its first request too), a request head must arrive whole within the header timeout, and past the
caps per client address and in total a new connection is answered 503 and closed. The front also states
the scheme the client used (`x-forwarded-proto`, which Serve's uvicorn believes from loopback) after
removing every forwarding header the client sent, so no client can claim plain HTTP over TLS or the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import h11
import structlog
from cryptography import x509

from appliance.config import Settings
from appliance.tls import attest
from appliance.tls.context import load_pair, server_context
from appliance.tls.listen import Listen, TlsFiles

log = structlog.get_logger()

MAX_HEAD = 16 * 1024  # the gateway's own header limit
# Per-request hints Serve's proxy obeys (meant for a load balancer in front of it): a client that sends
# `x-request-disconnect-disabled: ?1` would have its generation run on after it hangs up, and
# `x-request-timeout-seconds` would set its own timeout. Never passed on.
SERVE_HINTS = (b"x-request-disconnect-disabled", b"x-request-timeout-seconds")
READ = 64 * 1024
STALL_S = 60.0  # a request body that stops arriving this long is dropped (slow-loris; heads: FrontLimits)
HANDSHAKE_S = 10.0
FORWARDED = b"forwarded"  # RFC 7239, and every x-forwarded-* header: the front states these itself
SCHEME = b"x-forwarded-proto"


@dataclass(frozen=True)
class FrontLimits:
    """How long and how many client connections the front holds (settings `front_*`)."""

    idle_s: float
    header_s: float
    max_connections: int
    max_per_client: int

    @classmethod
    def from_settings(cls, settings: Settings) -> FrontLimits:
        return cls(
            settings.front_idle_timeout_s,
            settings.front_header_timeout_s,
            settings.front_max_connections,
            settings.front_max_connections_per_client,
        )


@dataclass
class _Link:
    """One client connection's upstream (opened at its first request) and what its timeouts look at."""

    upstream: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    activity: float  # loop time of the last byte either way
    awaiting: bool = False  # a request went upstream and no byte of an answer came back yet
    head_since: float | None = None  # loop time when the request head now arriving began

    def close(self) -> None:
        if self.upstream.done() and not self.upstream.cancelled() and self.upstream.exception() is None:
            self.upstream.result()[1].transport.abort()  # Serve sees a disconnect
        else:
            self.upstream.cancel()


class Front:
    """Accepts TLS (plain HTTP where `listen.tls` is None) on `listen.host:port`; relays to
    `listen.serve_host:serve_port`."""

    def __init__(
        self,
        listen: Listen,
        client_auth: str,
        keys_dir: Path,
        reload_seconds: float = 30.0,
        *,
        limits: FrontLimits,
        sock: socket.socket | None = None,
    ) -> None:
        """`sock`: a listening socket bound beforehand (in the host's network namespace, before the process
        entered Ray's private one: serving/netns.py); else the front binds listen.host:port itself."""
        self.sock = sock
        self.limits = limits
        self._open: dict[str, int] = {}  # client address -> connections open
        self.scheme = b"https" if listen.tls is not None else b"http"
        self.listen, self.files, self.reload_seconds = listen, listen.tls, reload_seconds
        self.ctx = server_context(self.files, client_auth) if self.files is not None else None
        self.verifies_clients = self.ctx is not None and self.ctx.verify_mode != ssl.CERT_NONE
        secret = attest.load_secret(keys_dir, create=True)
        if secret is None:
            raise OSError(f"cannot create {keys_dir / attest.SECRET_NAME}")
        self.secret = secret
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._stamp = _stamp(self.files) if self.files is not None else ()

    async def start(self) -> None:
        where = (
            {"sock": self.sock}
            if self.sock is not None
            else {"host": self.listen.host, "port": self.listen.port, "reuse_address": True}
        )
        self._server = await asyncio.start_server(
            self._connection,
            limit=READ,
            ssl=self.ctx,
            ssl_handshake_timeout=HANDSHAKE_S if self.ctx is not None else None,
            **where,
        )
        if self.files is not None:
            asyncio.get_running_loop().create_task(self._follow_rotation(self.files))

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

    async def _follow_rotation(self, files: TlsFiles) -> None:
        """Certificate rotation without a restart: a changed pair on disk is loaded for new handshakes."""
        assert self.ctx is not None
        while True:
            await asyncio.sleep(self.reload_seconds)
            stamp = _stamp(files)
            if stamp == self._stamp:
                continue
            try:
                load_pair(self.ctx, files)
            except (OSError, ssl.SSLError) as exc:  # e.g. the key written, the certificate not yet
                log.error("TLS certificate not reloaded; the previous one stays in use", error=str(exc))
                continue
            self._stamp = stamp
            log.info("TLS certificate reloaded", cert=str(files.cert))

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = str((writer.get_extra_info("peername") or ("unknown",))[0])
        if (
            sum(self._open.values()) >= self.limits.max_connections
            or self._open.get(address, 0) >= self.limits.max_per_client
        ):
            log.warning("connection refused: too many open", client=address)
            await _refuse(
                writer, b"503 Service Unavailable", "too_many_connections", "too many open connections; try again later"
            )
            return
        self._open[address] = self._open.get(address, 0) + 1
        link = _Link(asyncio.get_running_loop().create_future(), asyncio.get_running_loop().time())
        peer = attest.Peer(address, self._subject(writer))
        tasks = [
            asyncio.ensure_future(self._requests(reader, writer, link, peer)),
            asyncio.ensure_future(_relay(link, writer)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            link.close()  # the client is gone (or upstream closed): Serve sees a disconnect
            await _close(writer)
            self._open[address] -= 1
            if not self._open[address]:
                del self._open[address]

    def _subject(self, writer: asyncio.StreamWriter) -> str | None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None and self.verifies_clients else None
        return x509.load_der_x509_certificate(der).subject.rfc4514_string() if der else None

    async def _requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, peer: attest.Peer
    ) -> None:
        """Parse the client's requests; forward each head with the attested peer header and the scheme,
        relay bodies. The upstream connection is opened at the first request."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        added = (attest.HEADER, attest.header_value(self.secret, peer)), (SCHEME, self.scheme)
        chunked = False
        up: asyncio.StreamWriter | None = None
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return
            if event is h11.NEED_DATA:
                data = await self._read(reader, conn, link)
                if data is None:
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                link.head_since = None
                if up is None:
                    up = await self._open_upstream(link, writer)
                    if up is None:
                        return
                headers = [(k, v) for k, v in event.headers if not _owned(k)]
                chunked = any(k == b"transfer-encoding" for k, _ in headers)
                head = b"".join(b"%s: %s\r\n" % kv for kv in (*headers, *added))
                up.write(b"%s %s HTTP/%s\r\n%s\r\n" % (event.method, event.target, event.http_version, head))
            elif isinstance(event, h11.Data):
                assert up is not None  # h11 gives data only after a request head
                up.write(b"%x\r\n%s\r\n" % (len(event.data), event.data) if chunked else event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert up is not None
                link.awaiting = True
                if chunked:
                    up.write(b"0\r\n\r\n")
                if not _next_cycle(conn):
                    await up.drain()
                    await asyncio.Event().wait()  # no more requests (Connection: close): wait for the response
            else:  # ConnectionClosed (the client hung up) or PAUSED
                return
            if up is not None:
                await up.drain()

    async def _open_upstream(self, link: _Link, writer: asyncio.StreamWriter) -> asyncio.StreamWriter | None:
        try:
            pair = await asyncio.open_connection(self.listen.serve_host, self.listen.serve_port, limit=READ)
        except OSError:
            await _refuse(writer, b"502 Bad Gateway", "upstream_unavailable", "the appliance is not answering")
            return None
        link.upstream.set_result(pair)
        return pair[1]

    async def _read(self, reader: asyncio.StreamReader, conn: h11.Connection, link: _Link) -> bytes | None:
        """The client's next bytes, or None when the connection is to be dropped: a body that stalls
        STALL_S, a head not whole within the header timeout, or nothing in progress and no bytes either way
        for the idle timeout (re-checked when it expires: the answer to a request may have kept it busy)."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if conn.their_state is h11.SEND_BODY:
                deadline = now + STALL_S
            elif conn.trailing_data[0]:  # part of a head is here
                link.head_since = link.head_since or now
                deadline = link.head_since + self.limits.header_s
            else:
                deadline = (now if link.awaiting else link.activity) + self.limits.idle_s
            if deadline <= now:
                return None
            try:
                data = await asyncio.wait_for(reader.read(READ), deadline - now)
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                return None
            link.activity = loop.time()
            return data


def _next_cycle(conn: h11.Connection) -> bool:
    """Let h11 parse the next request: our side's response goes straight from upstream to the client, so
    h11 is told of an empty one. False when the client asked to close after this request."""
    conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
    conn.send(h11.EndOfMessage())
    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
        conn.start_next_cycle()
        return True
    return False


def _owned(name: bytes) -> bool:
    """Headers the client may not send on: the front states them itself, or they would steer Serve."""
    return name in (attest.HEADER, b"upgrade", FORWARDED, *SERVE_HINTS) or name.startswith(b"x-forwarded-")


async def _relay(link: _Link, sink: asyncio.StreamWriter) -> None:
    """Upstream bytes to the client as they arrive (an SSE event is sent the moment Serve sends it), once
    the first request has opened the upstream connection."""
    source, _ = await link.upstream
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while data := await source.read(READ):
            link.activity, link.awaiting = loop.time(), False
            sink.write(data)
            await sink.drain()


async def _refuse(writer: asyncio.StreamWriter, status: bytes, code: str, message: str) -> None:
    """An OpenAI-shaped error from the front itself, then the connection is closed."""
    body = json.dumps(
        {"error": {"message": message, "type": "service_unavailable", "param": None, "code": code}}
    ).encode()
    writer.write(
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, len(body), body)
    )
    await _close(writer)


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
