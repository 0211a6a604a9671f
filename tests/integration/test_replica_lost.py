"""A model replica lost mid-stream on a real Ray (as when its node dies): the gateway's whole path (HandleBackend,
pipeline, audit) over a Serve deployment that streams slowly, its actor killed with ray.kill after the first
chunk. The stream ends in a retryable error event, the request has one outcome record naming the node, and
the next request is served by the replacement replica. The node's member name comes from cluster.json."""

from __future__ import annotations

import asyncio

import pytest

from appliance.api.backend import ModelInfo
from appliance.cluster.ca import Cluster
from appliance.engine import FinishEvent, ServedBy, TextEvent, Usage
from appliance.serving.handle_backend import HandleBackend
from appliance.serving.nodes import NodeNames
from tests.api.helpers import records
from tests.appliance import make_appliance

MSG = [{"role": "user", "content": "Hello"}]
WORKER = "10.77.0.2"


@pytest.fixture(scope="module")
def slow_app(ray_session):
    from ray import serve

    @serve.deployment(name="llm", health_check_period_s=1)
    class Slow:
        """Stands in for LLMServer: names a worker's address, then streams until it is killed."""

        async def describe(self) -> dict:
            return {"models": [ModelInfo("tiny", "1.0.0", "cpu-fp32", 0)], "stats": {}, "ready": True}

        async def generate(self, model, request):
            yield [ServedBy(WORKER), TextEvent("final", "Hello")]
            if request.max_tokens <= 2:  # a short answer: the one the replacement gives
                yield [FinishEvent("stop", Usage(5, 2, 0))]
                return
            for _ in range(400):  # ~20 s unless killed (the test client reads whole bodies, so it ends)
                await asyncio.sleep(0.05)
                yield [TextEvent("final", " again")]
            yield [FinishEvent("length", Usage(5, 401, 0))]

    handle = serve.run(Slow.bind(), name="slow", route_prefix=None)
    yield handle
    serve.delete("slow")


@pytest.fixture
def appliance(tmp_path, slow_app, signed_tiny_bundle, publisher):
    a = make_appliance(tmp_path / "var", signed_tiny_bundle, publisher[1])
    cluster = Cluster(a.settings.keys_dir / "cluster")
    cluster.init("head", ("10.77.0.1",))
    cluster.admit(cluster.sign("w1", (WORKER,))[0])
    a.services.backend.close()
    a.services.backend = HandleBackend(slow_app, NodeNames(cluster.folder), "slow")
    yield a
    a.services.close()


async def test_a_replica_killed_mid_stream_ends_in_a_retryable_error_and_one_record(appliance):
    import ray
    from ray.serve.context import _get_global_client

    replica = _get_global_client().get_serve_details()["applications"]["slow"]["deployments"]["llm"]["replicas"][0]
    body = {"model": "tiny", "messages": MSG, "max_tokens": 500, "stream": True}

    async def kill_once_streaming() -> None:
        await asyncio.sleep(3)  # the stream has begun (its first chunk comes at once), 20 s of it remain
        ray.kill(ray.get_actor(replica["actor_name"], namespace="serve"))

    async with appliance.client("admin") as c:
        killer = asyncio.create_task(kill_once_streaming())
        r = await c.post("/v1/chat/completions", json=body, headers={"x-request-id": "lost-1"})
        await killer
        assert r.status_code == 200 and "Hello" in r.text  # mid-stream: its first chunk had been sent
        assert "event: error" in r.text and '"code":"engine_unavailable"' in r.text and "[DONE]" not in r.text
        recs = records(appliance, "lost-1")
        assert [x.event for x in recs] == ["request", "error"] and recs[1].detail["node"] == "w1"
        assert recs[1].status == 503

        again = await c.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2})
        assert again.status_code == 200, again.text  # retried until the replacement replica took it
        assert again.json()["choices"][0]["message"]["content"] == "Hello"
        assert records(appliance, again.headers["x-request-id"])[1].detail["node"] == "w1"
    assert appliance.services.audit.verify().ok
