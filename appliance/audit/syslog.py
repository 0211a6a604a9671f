"""Syslog to a SIEM collector: RFC 5424 messages, octet-counted (RFC 5425 over TLS, RFC 6587 over TCP).

Each message's MSG is one line of a JSONL export (a record as `AuditRecord` JSON, a checkpoint as
`{"checkpoint": {...}}`), so what a collector keeps is an export it can check with the appliance's own
`appliance audit verify --file`, or with any SHA-256 and Ed25519 code (docs/architecture.md has the format).

Syslog has no acknowledgement of its own. `CollectorLink.drained` waits until the collector's TCP stack has
acknowledged every byte sent (the socket's send queue is empty, `SIOCOUTQ`); the forwarder also requires the
connection to stay open a moment longer before it counts a message delivered (a collector that stops closes
it, and what it had not read yet is sent again).
"""

from __future__ import annotations

import fcntl
import json
import select
import socket
import ssl
import struct
import termios
import time

from appliance.audit.chain import Checkpoint
from appliance.audit.events import AuditRecord
from appliance.config import SyslogCollector

PRI = 13 * 8 + 6  # facility 13 "log audit", severity 6 "informational"
APP_NAME = "appliance"
CONNECT_TIMEOUT_S = 10.0


def frame(hostname: str, ts: str, msgid: str, body: str) -> bytes:
    """One RFC 5424 message (no structured data; the MSG is ASCII JSON, so needs no BOM), octet-counted:
    `LEN SP MSG`."""
    data = f"<{PRI}>1 {ts} {hostname} {APP_NAME} - {msgid} - {body}".encode("ascii")
    return b"%d %s" % (len(data), data)


def record_message(hostname: str, record: AuditRecord) -> bytes:
    body = record.model_dump_json()
    if not body.isascii():  # \u escapes: the MSG stays ASCII whatever a prompt held, and parses to the same JSON
        body = json.dumps(json.loads(body), separators=(",", ":"))
    return frame(hostname, record.ts, "audit", body)


def checkpoint_message(hostname: str, cp: Checkpoint) -> bytes:
    return frame(hostname, cp.ts, "checkpoint", json.dumps({"checkpoint": cp.to_json()}, separators=(",", ":")))


def syslog_hostname(configured: str | None) -> str:
    """RFC 5424 HOSTNAME: printable ASCII without spaces, at most 255 characters (`-` when there is none)."""
    name = "".join(c for c in (configured or socket.gethostname()) if "!" <= c <= "~")[:255]
    return name or "-"


class CollectorLink:
    """One connection to a collector: TLS checked against the site CA (and the collector's name), or TCP."""

    def __init__(self, collector: SyslogCollector) -> None:
        raw = socket.create_connection((collector.host, collector.port), timeout=CONNECT_TIMEOUT_S)
        try:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self.sock: socket.socket = _wrap(raw, collector) if collector.transport == "tls" else raw
        except BaseException:
            raw.close()
            raise
        self._fd = self.sock.fileno()  # the TLS socket took over the descriptor

    def send(self, data: bytes, timeout: float) -> None:
        self.sock.settimeout(timeout)
        self.sock.sendall(data)

    def drained(self, timeout: float) -> None:
        """Return once the collector's TCP stack has acknowledged every byte sent; OSError if the connection
        breaks or `timeout` passes first (a collector that stopped reading)."""
        deadline = time.monotonic() + timeout
        while _unacknowledged(self._fd) > 0:
            self.check_open()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the collector acknowledged nothing for {timeout:g} s")
            time.sleep(0.005)

    def check_open(self) -> None:
        """OSError if the collector closed or reset the connection (it never sends anything else; TLS
        session tickets it may send are read and dropped)."""
        while select.select([self.sock], [], [], 0)[0]:
            self.sock.settimeout(0)
            try:
                if not self.sock.recv(4096):
                    raise ConnectionResetError("the collector closed the connection")
            except (ssl.SSLWantReadError, BlockingIOError):
                return

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _wrap(raw: socket.socket, collector: SyslogCollector) -> socket.socket:
    assert collector.ca_file is not None  # SyslogCollector requires it for tls
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(collector.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if collector.client_cert is not None:
        ctx.load_cert_chain(str(collector.client_cert), str(collector.client_key))
    return ctx.wrap_socket(raw, server_hostname=collector.server_name or collector.host)


def _unacknowledged(fd: int) -> int:
    """Bytes in the socket's send queue that the peer has not acknowledged (Linux SIOCOUTQ)."""
    queued: int = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    return queued
