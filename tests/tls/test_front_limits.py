"""Idle and slow clients cannot hold the front: real sockets against the real front (plain HTTP, the same
code as behind TLS), relaying to a small echo server that counts the connections it is given.

The front's timeouts are shortened to a fraction of a second; the tests only wait for what must happen.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.tls.front import Front, FrontLimits
from appliance.tls.listen import Listen
from tests.integration.conftest import free_port

REQUEST = (
    b"GET /x HTTP/1.1\r\nhost: a\r\nx-forwarded-proto: https\r\nforwarded: proto=https\r\n"
    b"x-forwarded-for: 10.9.9.9\r\n\r\n"
)


class _Echo(socketserver.ThreadingTCPServer):
    """Answers each request head with its own bytes as the body (keep-alive), counting connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.accepted = 0
        super().__init__(("127.0.0.1", 0), _EchoHandler)


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        assert isinstance(self.server, _Echo)
        self.server.accepted += 1
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = self.request.recv(65536)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            self.request.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(head), head))


@contextmanager
def front(tmp_path: Path, **limits: float) -> Iterator[tuple[int, _Echo]]:
    echo = _Echo()
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    port = free_port()
    settings = {"idle_s": 0.3, "header_s": 0.3, "max_connections": 100, "max_per_client": 100, **limits}
    f = Front(
        Listen("127.0.0.1", port, "127.0.0.1", echo.server_address[1], None),
        "off",
        tmp_path,
        limits=FrontLimits(**settings),
    )  # type: ignore[arg-type]
    f.start_in_thread()
    try:
        yield port, echo
    finally:
        f.stop()
        echo.shutdown()
        echo.server_close()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return s


def exchange(s: socket.socket) -> bytes:
    """One request and its whole answer (the echo's body is the head the front sent upstream)."""
    s.sendall(REQUEST)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, body = buf.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += s.recv(65536)
    return body


def closed_by_front(s: socket.socket) -> bool:
    """True when the front ends the connection (EOF or reset) before the 10 s socket timeout."""
    try:
        return s.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_clients_are_closed_without_an_upstream_connection(tmp_path):
    with front(tmp_path, header_s=60) as (port, echo):
        idle = connect(port)  # never sends a byte
        assert closed_by_front(idle)
        assert echo.accepted == 0  # it never opened a connection to Serve

        kept = connect(port)
        exchange(kept)
        exchange(kept)  # keep-alive works, on one upstream connection
        assert echo.accepted == 1
        assert closed_by_front(kept)  # and, idle after its answers, it is closed too
        idle.close()
        kept.close()


def test_a_head_that_never_ends_is_dropped(tmp_path):
    with front(tmp_path, idle_s=60) as (port, echo):
        slow = connect(port)
        slow.sendall(b"GET / HTTP/1.1\r\nhost: a\r\n")  # and no more
        assert closed_by_front(slow) and echo.accepted == 0
        slow.close()


def test_connections_are_capped_per_client_and_in_total(tmp_path):
    with front(tmp_path, max_per_client=2, max_connections=3) as (port, _):
        first = [connect(port), connect(port)]
        for s in first:
            exchange(s)  # the front holds both
        refused = connect(port)
        assert refused.recv(65536).startswith(b"HTTP/1.1 503 ") and closed_by_front(refused)
        other = connect(port, "127.0.0.2")  # another client still gets in, up to the total
        exchange(other)
        over = connect(port, "127.0.0.3")
        assert over.recv(65536).startswith(b"HTTP/1.1 503 ")
        first[0].close()  # a place is free again once the front has seen the hang-up
        deadline = time.monotonic() + 10
        while True:
            again = connect(port)
            try:
                assert exchange(again).startswith(b"GET /x")
                break
            except (AssertionError, ConnectionError, IndexError):
                again.close()
                assert time.monotonic() < deadline
        for s in (first[1], refused, other, over, again):
            s.close()


def test_the_front_states_the_scheme_and_drops_the_clients_forwarding_headers(tmp_path):
    with front(tmp_path) as (port, _):
        s = connect(port)
        head = exchange(s).lower()
        s.close()
    assert b"x-forwarded-proto: http\r\n" in head + b"\r\n" and head.count(b"x-forwarded-proto") == 1
    assert b"forwarded:" not in head.replace(b"x-forwarded-proto", b"") and b"10.9.9.9" not in head
