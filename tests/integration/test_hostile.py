"""Soak: normal clients stream answers from the real Ray Serve app (demo model) while hostile ones attack.

Bounded in count and time, loopback only. The hostile side sends negative and huge seeds, lone surrogates and
NULs in every string field, bodies just over each limit, bad keys in bursts, requests abandoned at random
points (before the body, mid-body, before the first token, mid-stream) and /readyz floods. Afterwards every
normal request got its full answer or a clean retryable error, the engine holds no request, the audit
writer still commits, each normal request has exactly one request and one outcome record, the bad keys were
recorded in aggregate, and `appliance audit verify` passes.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy.orm import Session

from appliance import apikeys
from appliance.audit import AuditFilter, AuditLog
from appliance.bundles.metadata import BundleMetadata
from appliance.db import make_engine
from tests.conftest import run_cli
from tests.integration.conftest import deployed

pytestmark = pytest.mark.slow

NORMAL_CLIENTS, NORMAL_REQUESTS = 3, 4
OUTCOMES = {"completion", "cancelled", "error"}


@pytest.fixture(scope="module")
def hostile_served(ray_session, module_dir, demo_bundle, demo_key):
    data = module_dir / "var"
    with deployed(
        data,
        demo_bundle,
        demo_key.public_key(),
        ray_session,
        engine_max_batch_size=4,
        engine_max_queue=4,
        auth_failure_burst=5,
        auth_failure_rate=0.5,
        auth_failure_window_s=2,
    ) as a:
        with Session(make_engine(a.settings.database_url)) as session:
            a.tokens["hostile"], _ = apikeys.create_key(session, "hostile", "user")
        a.model = BundleMetadata.read(demo_bundle).name
        yield a


def _normal(a, client: int) -> list[tuple[str, str]]:
    """(request id, result) for each streamed request: 'ok', 'retryable' or what went wrong."""
    out = []
    for i in range(NORMAL_REQUESTS):
        rid = f"normal-{client}-{i}"
        try:
            with httpx.stream(
                "POST",
                f"{a.base_url}/v1/chat/completions",
                timeout=120,
                headers={"Authorization": f"Bearer {a.tokens['admin']}", "x-request-id": rid},
                json={
                    "model": a.model,
                    "stream": True,
                    "max_tokens": 24,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": "What is the capital of France?"}],
                },
            ) as r:
                if r.status_code in (429, 503):
                    out.append((rid, "retryable"))
                    continue
                if r.status_code != 200:
                    out.append((rid, f"status {r.status_code}: {r.read()[:200]!r}"))
                    continue
                body = "".join(r.iter_text())
        except httpx.HTTPError as exc:
            out.append((rid, f"transport {exc!r}"))
            continue
        if body.rstrip().endswith("data: [DONE]"):
            out.append((rid, "ok"))
        elif "event: error" in body and any(c in body for c in ("engine_busy", "engine_unavailable")):
            out.append((rid, "retryable"))
        else:
            out.append((rid, f"cut body {body[-200:]!r}"))
    return out


def _hostile_bodies(model: str) -> list[tuple[str, str]]:
    """(raw JSON, what it tests): every string field with a lone surrogate or a NUL, odd seeds, limits."""
    msg = [{"role": "user", "content": "hi"}]
    base = {"model": model, "messages": msg, "max_tokens": 4}
    cases = [({**base, "seed": s}, f"seed {s}") for s in (-1, -(2**63), 2**63 - 1, 2**63, 2**64, -(2**70))]
    for bad in ("x\ud800", "x\udfff y", "nul\x00"):
        cases += [
            ({**base, "model": bad}, "model"),
            ({**base, "messages": [{"role": "user", "content": bad}]}, "content"),
            ({**base, "messages": [{"role": "user", "content": "x", "name": bad}]}, "name"),
            ({**base, "stop": [bad]}, "stop"),
            (
                {
                    **base,
                    "tools": [
                        {"type": "function", "function": {"name": "f", "description": bad, "parameters": {bad: bad}}}
                    ],
                },
                "tool",
            ),
            (
                {
                    **base,
                    "messages": [
                        *msg,
                        {
                            "role": "assistant",
                            "tool_calls": [
                                {"id": bad, "type": "function", "function": {"name": bad, "arguments": bad}}
                            ],
                        },
                        {"role": "tool", "tool_call_id": bad, "content": bad},
                    ],
                },
                "tool call",
            ),
        ]
    cases += [
        ({**base, "messages": [{"role": "user", "content": "a" * 200_001}]}, "input_chars + 1"),
        ({**base, "messages": [{"role": "user", "content": "a"}] * 257}, "messages + 1"),
        ({**base, "messages": [{"role": "user", "content": "a" * (4 * 1024 * 1024)}]}, "body + 1"),
    ]
    return [(json.dumps(body), what) for body, what in cases]


def _hostile_json(a, stop: threading.Event) -> Counter:
    seen: Counter = Counter()
    bodies = _hostile_bodies(a.model)
    with httpx.Client(
        base_url=a.base_url,
        timeout=60,
        headers={"Authorization": f"Bearer {a.tokens['hostile']}", "content-type": "application/json"},
    ) as c:
        while not stop.is_set():
            for raw, what in bodies:
                r = c.post("/v1/chat/completions", content=raw)
                seen[r.status_code] += 1
                assert r.status_code < 500, (what, r.status_code, r.text[:300])
            r = c.get("/v1/models", headers={"x-big": "a" * 17_000})
            assert r.status_code == 431
    return seen


def _bad_keys(a, stop: threading.Event) -> Counter:
    seen: Counter = Counter()
    with httpx.Client(base_url=a.base_url, timeout=30) as c:
        while not stop.is_set():
            for _ in range(20):
                r = c.post(
                    "/v1/chat/completions",
                    headers={"Authorization": "Bearer sk-wrong"},
                    json={"model": a.model, "messages": [{"role": "user", "content": "x"}]},
                )
                seen[r.status_code] += 1
                assert r.status_code in (401, 429), r.text
            time.sleep(0.5)
    return seen


def _readyz_flood(a, stop: threading.Event) -> Counter:
    seen: Counter = Counter()
    with httpx.Client(base_url=a.base_url, timeout=30) as c:
        while not stop.is_set():
            seen[c.get("/readyz").status_code] += 1
            time.sleep(0.005)
    return seen


def _abandon(a, stop: threading.Event) -> Counter:
    """Requests the client gives up at a random point, on raw sockets."""
    port = int(a.base_url.rsplit(":", 1)[1])
    body = json.dumps(
        {
            "model": a.model,
            "stream": True,
            "max_tokens": 48,
            "messages": [{"role": "user", "content": "Tell me about Paris."}],
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.tokens['hostile']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    rng = random.Random(7)
    seen: Counter = Counter()
    while not stop.is_set():
        point = rng.choice(["headers", "before body", "mid body", "before first token", "mid stream"])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            if point == "headers":
                s.sendall(head[: len(head) // 2])
            elif point == "before body":
                s.sendall(head)
            elif point == "mid body":
                s.sendall(head + body[: len(body) // 2])
            else:
                s.sendall(head + body)
                if point == "mid stream":
                    s.recv(4096)
                    s.recv(64)
            time.sleep(rng.random() * 0.3)
        seen[point] += 1
    return seen


def _live_requests(a) -> int:
    from ray import serve

    handle = serve.get_deployment_handle("llm", app_name="appliance")
    return int(handle.describe.remote().result()["stats"].get("live_requests", 0))


def test_normal_clients_survive_hostile_ones(hostile_served):
    a = hostile_served
    stop = threading.Event()
    with ThreadPoolExecutor(NORMAL_CLIENTS + 4) as pool:
        attackers = [pool.submit(f, a, stop) for f in (_hostile_json, _bad_keys, _readyz_flood, _abandon)]
        normals = [pool.submit(_normal, a, i) for i in range(NORMAL_CLIENTS)]
        results = [r for f in normals for r in f.result(timeout=600)]
        stop.set()
        attacks = [f.result(timeout=120) for f in attackers]
    bad = [(rid, what) for rid, what in results if what not in ("ok", "retryable")]
    assert not bad, bad
    assert sum(what == "ok" for _, what in results) >= len(results) // 2, results
    hostile, keys, ready, abandoned = attacks
    assert hostile[400] and hostile[413] and hostile[403], hostile
    assert keys[401] and keys[429], keys
    assert ready[200], ready
    assert len(abandoned) >= 3, abandoned

    deadline = time.monotonic() + 30
    while _live_requests(a) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _live_requests(a) == 0

    after = _normal(a, 99)  # the engine and the audit writer still serve
    assert all(what == "ok" for _, what in after), after

    time.sleep(3)  # one aggregation window: the gateway writes the throttled bad keys' count
    with AuditLog.from_settings(a.settings) as log:
        deadline = time.monotonic() + 30
        while True:
            failures = log.query(AuditFilter(event="auth_failure"), limit=10_000).records
            aggregated = [r for r in failures if r.detail.get("aggregated") == "true"]
            if aggregated or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert aggregated and sum(int(r.detail["count"]) for r in aggregated) <= keys[429]
        assert len(failures) < keys[401] + keys[429]  # not one record per bad request
        records = log.query(AuditFilter(), limit=10_000).records
    by_request: dict[str, Counter] = {}
    for r in records:
        if r.request_id and r.request_id.startswith("normal-"):
            by_request.setdefault(r.request_id, Counter())[r.event] += 1
    for rid, what in [*results, *after]:
        events = by_request.get(rid, Counter())
        if what == "ok":
            assert events["request"] == 1 and events["completion"] == 1, (rid, events)
        assert sum(events[e] for e in OUTCOMES) == events["request"], (rid, events)
    verify = run_cli(
        "audit",
        "verify",
        env={
            "APPLIANCE_DATABASE_URL": a.settings.database_url,
            "APPLIANCE_AUDIT_KEY_PATH": str(a.settings.audit_key_path),
        },
        data_dir=a.settings.data_dir,
    )
    assert verify.returncode == 0, verify.stderr


def _hang_up_after_first_chunk(a, rid: str, headers: str = "") -> None:
    port = int(a.base_url.rsplit(":", 1)[1])
    body = json.dumps(
        {
            "model": a.model,
            "stream": True,
            "max_tokens": 1500,
            "temperature": 1.5,
            "seed": 7,
            "messages": [{"role": "user", "content": "Tell me a long story."}],
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.tokens['hostile']}\r\n"
        f"Content-Type: application/json\r\nx-request-id: {rid}\r\n{headers}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head + body)
        got = b""
        while b"data:" not in got:
            got += s.recv(4096)


@pytest.mark.parametrize("headers", ["", "x-request-disconnect-disabled: ?1\r\n"], ids=["plain", "serve-hint"])
def test_a_client_that_hangs_up_mid_stream_frees_its_slot(hostile_served, headers):
    """Through Serve's real proxy, even with the header that tells Serve not to watch for disconnects: the
    generation stops (its outcome is `cancelled`, not a completion) and the engine slot is given back."""
    rid = f"hang-{len(headers)}"
    _hang_up_after_first_chunk(hostile_served, rid, headers)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        events = [r.event for r in hostile_served.services.audit.request_records(rid)]
        if len(events) == 2 and not _live_requests(hostile_served):
            break
        time.sleep(0.2)
    assert events == ["request", "cancelled"]
    assert _live_requests(hostile_served) == 0
