"""The Serve glue in Serve's local testing mode (no Ray processes): the LLM deployment around the real engine,
reached through `HandleBackend` exactly as a gateway replica reaches it."""

from __future__ import annotations

import pytest

from appliance.engine import FinishEvent, GenerationRequest


@pytest.fixture(scope="module")
def llm_handle(appliance):
    from ray import serve

    from appliance.serving.deployments import LLMServer

    handle = serve.run(
        LLMServer.bind(appliance.settings.model_dump(mode="json")), name="local-llm", _local_testing_mode=True
    )
    yield handle


async def test_handle_backend_streams_coalesced_chunks(llm_handle, appliance):
    from appliance.serving.handle_backend import HandleBackend
    from appliance.serving.nodes import NodeNames

    backend = HandleBackend(llm_handle, NodeNames(appliance.settings.keys_dir / "cluster"), "local-llm")
    assert [m.name for m in await backend.models()] == ["tiny"]
    assert await backend.ready()
    chunks = [
        c
        async for c in backend.generate(
            "tiny", GenerationRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=20, temperature=0)
        )
    ]
    assert isinstance(chunks[-1][-1], FinishEvent) and chunks[-1][-1].usage.completion_tokens == 20
    assert backend.stats().get("max_batch_size") == 8


async def test_health_check_runs_a_generation(llm_handle):
    await llm_handle.check_health.remote()
    described = await llm_handle.describe.remote()
    assert described["stats"]["steps"] > 0
