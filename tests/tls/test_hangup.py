"""Streams pass the front unbuffered, and a client that hangs up mid-stream reaches the app at once: the
generation is cancelled (a `cancelled` record) and the model's stream closed (its engine slot freed).

The app is the real gateway app served by uvicorn (no Ray: the front is what is tested), over the
scripted model stand-in of tests/api, slowed so that the stream is still running when the client leaves.
"""

from __future__ import annotations

import time

import httpx

from appliance.engine import FinishEvent, TextEvent, Usage
from appliance.tls import certs
from tests.api.scripted import ScriptedBackend
from tests.appliance import make_appliance
from tests.tls.conftest import running_front
from tests.ui.server import LiveServer


def test_a_client_that_hangs_up_frees_its_generation(tmp_path, signed_tiny_bundle, publisher):
    a = make_appliance(tmp_path / "var", signed_tiny_bundle, publisher[1])
    a.services.backend.close()
    a.services.backend = slow = ScriptedBackend(
        [[TextEvent("final", "word ")]] * 600 + [[FinishEvent("stop", Usage(5, 600, 0))]], delay=0.05
    )
    cert, key = certs.self_signed(["localhost"], ["127.0.0.1"])
    certs.install(tmp_path / "tls", cert, key)
    pem = tmp_path / "tls" / certs.CERT_NAME
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    try:
        with (
            LiveServer(a.app) as server,
            running_front(a.settings.keys_dir, server.port, pem, tmp_path / "tls" / certs.KEY_NAME) as url,
        ):
            with httpx.Client(verify=str(pem), timeout=60) as c:
                with c.stream(
                    "POST",
                    url + "/v1/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {a.tokens['user']}", "x-request-id": "gone"},
                ) as r:
                    lines = r.iter_lines()
                    for _ in range(3):  # events arrive one by one while the model is still producing
                        assert next(lines).startswith("data: ") and next(lines) == ""
            deadline = time.monotonic() + 20  # the whole stream would take 30 s
            while len(a.services.audit.request_records("gone")) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            records = a.services.audit.request_records("gone")
            assert [rec.event for rec in records] == ["request", "cancelled"]
            assert slow.closed == 1 and records[0].source == "127.0.0.1"
    finally:
        a.services.close()
