"""What an outsider on the site network gets from each listening port of a cluster node.

Run in the outsider's namespace: `python -m tests.cluster.probe HOST PORT... [--cert C --key K --ca CA]`.
Per port: `tls` (the handshake, TLS 1.2 so a refused client certificate fails inside it; with --cert the
client presents that certificate) and `http` (the status line of a plain GET, no token). One JSON line.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor


def tls(host: str, port: int, cert: str | None, key: str | None) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])  # gRPC servers refuse a client that does not offer HTTP/2
    if cert:
        ctx.load_cert_chain(cert, key)
    try:
        with socket.create_connection((host, port), timeout=5) as raw, ctx.wrap_socket(raw) as s:
            s.settimeout(2)
            try:
                return "handshake" if s.recv(1) else "closed after handshake"
            except TimeoutError:  # the peer keeps the connection: it took our certificate
                return "handshake"
            except (ssl.SSLError, OSError):
                return "closed after handshake"
    except ssl.SSLError as exc:
        return f"refused: {exc.reason}"
    except OSError as exc:
        return f"unreachable: {type(exc).__name__}"


def http(host: str, port: int) -> str:
    """The status line of `GET /metrics` without a token, and " metrics" when the body is Prometheus text."""
    reply = b""
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.settimeout(5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while len(reply) < 4096 and (chunk := s.recv(4096)):
                reply += chunk
    except OSError as exc:
        if not reply:
            return f"error: {type(exc).__name__}"
    status, _, body = reply.partition(b"\r\n\r\n")
    kind = " metrics" if b"# HELP " in body or b"# TYPE " in body else ""
    return status.split(b"\r\n", 1)[0].decode(errors="replace") + kind


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("ports", type=int, nargs="+")
    p.add_argument("--cert")
    p.add_argument("--key")
    a = p.parse_args()

    def answers(port: int) -> dict[str, str]:
        return {"tls": tls(a.host, port, a.cert, a.key), "http": http(a.host, port)}

    with ThreadPoolExecutor(len(a.ports)) as pool:  # a filtered port answers nothing until the timeout: at once
        print(json.dumps(dict(zip(a.ports, pool.map(answers, a.ports), strict=True))))


if __name__ == "__main__":
    main()
