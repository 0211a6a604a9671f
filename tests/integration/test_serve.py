"""The appliance on a real Ray Serve: the openai SDK over HTTP, and a load test with the LLM replica killed."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

from appliance.audit import AuditFilter

MSG = [{"role": "user", "content": "Hello"}]


def test_openai_sdk_over_http(served):
    client = openai.OpenAI(api_key=served.tokens["user"], base_url=f"{served.base_url}/v1", max_retries=0)
    done = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=5)
    assert done.usage.completion_tokens == 5
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=MSG, max_tokens=5, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage.completion_tokens == 5
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert httpx.get(f"{served.base_url}/readyz").status_code == 200
    assert httpx.get(f"{served.base_url}/v1/models").status_code == 401


def _stream_one(base_url: str, token: str, i: int) -> str:
    """'ok' for a full answer, 'error' for a clean error event or status; anything else is a failure."""
    try:
        with httpx.stream(
            "POST",
            f"{base_url}/v1/chat/completions",
            timeout=120,
            headers={"Authorization": f"Bearer {token}", "x-request-id": f"load-{i}" if i >= 0 else "after"},
            json={"model": "tiny", "messages": MSG, "max_tokens": 32, "stream": True},
        ) as r:
            if r.status_code != 200:
                return "error" if "error" in json.loads(r.read()) else f"bad status {r.status_code}"
            body = "".join(r.iter_text())
    except httpx.HTTPError as exc:
        return f"transport {exc!r}"
    if body.rstrip().endswith("data: [DONE]"):
        return "ok"
    if "event: error" in body:
        return "error"
    return f"cut body: {body[-200:]!r}"


def test_load_with_replica_killed(served):
    total, clients = 300, 16
    from ray import serve

    handle = serve.get_deployment_handle("llm", app_name="appliance")
    pid = handle.describe.remote().result()["pid"]
    outcomes: list[str] = []
    started = threading.Event()

    def killer() -> None:
        started.wait()
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)

    t = threading.Thread(target=killer)
    t.start()
    with ThreadPoolExecutor(clients) as pool:
        futures = []
        for i in range(total):
            futures.append(pool.submit(_stream_one, served.base_url, served.tokens["admin"], i))
            if i == clients:
                started.set()
        outcomes = [f.result() for f in futures]
    t.join()
    counts = Counter(o if o in ("ok", "error") else "bad" for o in outcomes)
    assert counts["bad"] == 0, [o for o in outcomes if o not in ("ok", "error")][:5]
    assert counts["ok"] > total / 2, counts  # requests in the restart gap are retried, not failed
    print(f"load test outcomes: {dict(counts)}")
    # The app recovered by itself: a fresh request succeeds on the restarted replica.
    assert _stream_one(served.base_url, served.tokens["admin"], -1) == "ok"
    assert handle.describe.remote().result()["pid"] != pid
    # One request record and one outcome record per request, and the chain verifies.
    recs = served.services.audit.query(AuditFilter(), limit=10_000).records
    per_request: dict[str, list[str]] = {}
    for r in recs:
        if (r.request_id or "").startswith("load-"):
            per_request.setdefault(r.request_id, []).append(r.event)
    assert len(per_request) == total
    for rid, events in per_request.items():
        assert sorted(events) in (["completion", "request"], ["error", "request"], ["cancelled", "request"]), (
            rid,
            events,
        )
    assert served.services.audit.verify().ok


def _node() -> str:
    import ray

    return next(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])


def _records(served, request_id: str) -> list:
    found = served.services.audit.query(AuditFilter(), limit=500).records
    return sorted((r for r in found if r.request_id == request_id), key=lambda r: r.seq)


def test_records_name_the_node_and_metrics_count_replicas_per_node(served):
    """On one host the node is its address (no cluster.json); the replica count comes from Serve's controller."""
    sample = f'appliance_serve_replicas{{node="{_node()}"}} 1.0'
    admin = {"Authorization": f"Bearer {served.tokens['admin']}", "x-request-id": "where-1"}
    body = {"model": "tiny", "messages": MSG, "max_tokens": 3}
    assert httpx.post(f"{served.base_url}/v1/chat/completions", headers=admin, json=body, timeout=60).status_code == 200
    done = _records(served, "where-1")
    assert [r.event for r in done] == ["request", "completion"] and done[1].detail["node"] == _node()
    for _ in range(30):  # read with the model list, at most a second old
        metrics = httpx.get(f"{served.base_url}/metrics", headers=admin, timeout=30).text
        if sample in metrics:
            break
        time.sleep(0.5)
    assert sample in metrics, metrics[-2000:]
