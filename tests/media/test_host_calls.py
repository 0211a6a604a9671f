"""The installer's calls to the appliance it just started never go through a proxy from the environment."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from appliance.media import host


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_) -> None:
        pass


def test_an_http_proxy_in_the_environment_is_not_used(monkeypatch):
    proxy = socket.create_server(("127.0.0.1", 0))  # would see the request (and its API key) if used
    proxy.settimeout(0.5)
    api = HTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    try:
        for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
            monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.getsockname()[1]}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        answer, _ = host._call(f"http://127.0.0.1:{api.server_port}", "/v1/models", "ak-secret")
        assert answer == {"ok": True}
        try:
            proxy.accept()[0].close()
            reached = True
        except TimeoutError:
            reached = False
        assert not reached
    finally:
        api.shutdown()
        proxy.close()
