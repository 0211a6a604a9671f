"""The engine over the tiny bundle: continuous batching, seeds, limits, cancellation."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from appliance.engine import EngineBusy, EngineError, FinishEvent, GenerationRequest, TextEvent, collect, render_prompt


def _prompt(n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, 199_998, size=n).tolist()


async def _tokens(engine, request: GenerationRequest, delay_steps: int = 0) -> tuple[int, ...]:
    """Start `request` once the engine has run `delay_steps` more decode steps (a mid-flight arrival)."""
    start = engine.stats()["steps"]
    while engine.stats()["steps"] < start + delay_steps:
        await asyncio.sleep(0.001)
    result = await collect(engine.generate(request))
    return result["finish"].token_ids


@pytest.mark.parametrize("chunk", [512, 5])
async def test_greedy_output_is_the_same_alone_and_in_a_batch_joined_mid_flight(make_engine, chunk):
    """Rows join mid-flight (prefilled in `chunk`-token pieces between decode steps) and leave (the last row
    moves into the freed slot); every row's tokens stay those it produces alone."""
    engine = make_engine(max_batch_size=4, prefill_chunk=chunk)
    requests = [
        GenerationRequest(prompt_tokens=_prompt(n, n), max_tokens=m, temperature=0)
        for n, m in ((12, 24), (3, 10), (30, 16), (7, 20), (18, 12))
    ]
    alone = [await _tokens(engine, r) for r in requests]
    together = await asyncio.gather(*[_tokens(engine, r, delay_steps=3 * i) for i, r in enumerate(requests)])
    assert list(together) == alone
    assert [len(t) for t in alone] == [24, 10, 16, 20, 12]


async def test_a_seed_reproduces_sampling(make_engine):
    """Same request, same seed: same tokens, also after other traffic has passed through the engine.

    (Across different batch mixes a sample can differ where the batch changes a logit's last bits; greedy
    output is batch-invariant, see the test above. This is the same caveat vLLM documents.)
    """
    engine = make_engine()
    request = GenerationRequest(prompt_tokens=_prompt(9, 1), max_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    first = await _tokens(engine, request)
    others = [GenerationRequest(prompt_tokens=_prompt(5, i), max_tokens=16, temperature=1.0) for i in range(3)]
    await asyncio.gather(*[_tokens(engine, r) for r in others])
    assert await _tokens(engine, request) == first
    other_seed = await _tokens(engine, GenerationRequest(prompt_tokens=_prompt(9, 1), max_tokens=16, seed=8))
    assert other_seed != first


def _open_final(engine, text: str = "hi") -> list[int]:
    """A rendered prompt that already opened the final channel, so even random weights stream text."""
    prompt = render_prompt(engine.encoding, [{"role": "user", "content": text}], [], "low")
    return prompt + engine.encoding.encode("<|channel|>final<|message|>", allowed_special="all")


async def test_cancelling_a_stream_frees_its_slot_at_once(make_engine):
    engine = make_engine(max_batch_size=1, max_queue=0)
    task = asyncio.create_task(
        collect(engine.generate(GenerationRequest(prompt_tokens=_prompt(5, 2), max_tokens=10_000, temperature=0)))
    )
    while engine.stats()["generated_tokens"] < 3:
        await asyncio.sleep(0.001)
    with pytest.raises(EngineBusy):
        await collect(engine.generate(GenerationRequest(prompt_tokens=_prompt(4, 3), max_tokens=2)))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    result = await collect(engine.generate(GenerationRequest(prompt_tokens=_prompt(4, 3), max_tokens=2)))
    assert result["finish"].finish_reason == "length"
    assert engine.stats()["running"] == 0 and engine.stats()["live_requests"] == 0


async def test_a_consumer_that_stops_reading_releases_the_request(make_engine):
    engine = make_engine(max_batch_size=1, max_queue=0)
    stream = engine.generate(GenerationRequest(prompt_tokens=_open_final(engine), max_tokens=5_000, temperature=0))
    first = await stream.__anext__()
    assert isinstance(first, TextEvent) and first.channel == "final"
    await stream.aclose()
    assert engine.stats()["live_requests"] == 0
    result = await collect(engine.generate(GenerationRequest(prompt_tokens=_prompt(4, 3), max_tokens=2)))
    assert result["finish"].usage.completion_tokens == 2


async def test_random_output_never_leaks_control_tokens(make_engine):
    engine = make_engine()
    for seed in range(3):
        result = await collect(
            engine.generate(
                GenerationRequest(prompt_tokens=_open_final(engine), max_tokens=200, temperature=1.5, seed=seed)
            )
        )
        texts = [
            result["analysis"],
            result["commentary"],
            result["final"],
            *[c.name + c.arguments for c in result["tool_calls"]],
        ]
        assert not any("<|" in t for t in texts)
        assert result["final"] and result["finish"].finish_reason in ("length", "stop", "tool_calls")


async def test_limits_and_bad_requests_fail_with_one_clear_error(make_engine):
    engine = make_engine(max_tokens_in_flight=64)
    with pytest.raises(EngineError, match="exceeds the limit of 64 tokens"):
        await collect(engine.generate(GenerationRequest(prompt_tokens=_prompt(40, 0), max_tokens=30)))
    with pytest.raises(EngineError, match="max_tokens"):
        await collect(engine.generate(GenerationRequest(prompt_tokens=[1, 2], max_tokens=0)))
    with pytest.raises(EngineError, match="role"):
        await collect(engine.generate(GenerationRequest(messages=[{"role": "wizard", "content": "x"}])))


async def test_stop_token_ids_end_generation_with_stop_and_usage_counts_tokens(make_engine):
    engine = make_engine()
    greedy = GenerationRequest(prompt_tokens=_prompt(6, 4), max_tokens=8, temperature=0)
    tokens = await _tokens(engine, greedy)
    stop_at = tokens[3]
    result = await collect(
        engine.generate(
            GenerationRequest(prompt_tokens=_prompt(6, 4), max_tokens=8, temperature=0, stop_token_ids=[stop_at])
        )
    )
    finish: FinishEvent = result["finish"]
    assert finish.finish_reason == "stop"
    assert finish.token_ids == tokens[: tokens.index(stop_at) + 1]
    assert finish.usage.prompt_tokens == 6 and finish.usage.completion_tokens == len(finish.token_ids)


async def test_health_generates_one_token_and_stats_show_occupancy(make_engine):
    engine = make_engine(max_batch_size=3, max_queue=5)
    await engine.health()
    stats = engine.stats()
    assert stats["max_batch_size"] == 3 and stats["max_queue"] == 5 and stats["steps"] >= 1


async def test_admission_waits_for_kv_memory_and_accounts_for_it(make_engine):
    """A budget that holds one sequence's reservation: the second request waits, then runs, same tokens."""
    probe = make_engine()
    layout = probe._scheduler.layout
    request = GenerationRequest(prompt_tokens=_prompt(10, 5), max_tokens=20, temperature=0)
    alone = await _tokens(probe, request)
    assert probe.stats()["kv_bytes_in_use"] == 0 and probe.stats()["kv_budget_bytes"] > 0
    engine = make_engine(kv_budget_bytes=layout.bytes_for(30) + 1)
    seen: list[dict[str, int]] = []

    async def watch() -> None:
        while True:
            seen.append(engine.stats())
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    both = await asyncio.gather(_tokens(engine, request), _tokens(engine, request))
    watcher.cancel()
    assert list(both) == [alone, alone]
    assert max(s["running"] + s["prefilling"] for s in seen) == 1
    assert any(s["waiting"] == 1 for s in seen)
    assert max(s["kv_bytes_in_use"] for s in seen) <= layout.bytes_for(30)
    assert max(s["kv_bytes_reserved"] for s in seen) == layout.bytes_for(30)
    assert engine.stats()["kv_bytes_in_use"] == 0
