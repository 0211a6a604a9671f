"""The prefix cache: cached runs give the tokens uncached runs give, only within one scope, and the cache gives
way to admissions (least recently used first) instead of making them wait."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from appliance.engine import Engine, EngineError, GenerationRequest, collect
from appliance.engine.memory import prefix_limit
from appliance.engine.prefix import BLOCK
from tests.engine.test_engine import _prompt, _tokens


async def _run(engine: Engine, prompt: list[int], scope: str | None, max_tokens: int = 12) -> tuple[tuple, int]:
    """(greedy tokens, cached_tokens) of one request."""
    request = GenerationRequest(prompt_tokens=prompt, max_tokens=max_tokens, temperature=0, cache_scope=scope)
    finish = (await collect(engine.generate(request)))["finish"]
    return finish.token_ids, finish.usage.cached_tokens


@pytest.mark.parametrize("chunk", [512, 20, 5])
async def test_cached_and_uncached_greedy_runs_are_identical(make_engine, chunk):
    """Growing prompts over one base (each turn extends the last, as a chat does) hit deeper and deeper blocks
    and still decode the tokens of a cold run; a request without a scope never touches the cache."""
    engine = make_engine(prefill_chunk=chunk)
    base = _prompt(120, 11)
    for n in (17, 40, 57, 100, 120):
        cold, none = await _run(engine, base[:n], None)
        warm, cached = await _run(engine, base[:n], "key-a")
        again, cached_again = await _run(engine, base[:n], "key-a")
        assert cold == warm == again and none == 0
        assert cached_again == (n - 1) // BLOCK * BLOCK
        assert cached <= cached_again
    assert engine.stats()["prefix_cache_hits"] > 0 and engine.stats()["kv_bytes_cached"] > 0


async def test_cached_rows_joining_a_batch_mid_flight_keep_their_tokens(make_engine):
    """Batch invariance with the cache: rows sharing a prefix, restored from it while others decode, produce
    what each produces alone and uncached."""
    engine = make_engine(max_batch_size=4, prefill_chunk=20)
    shared = _prompt(48, 3)
    prompts = [shared + _prompt(n, n) for n in (5, 12, 30, 2, 19)]
    alone = [(await _run(engine, p, None, 16))[0] for p in prompts]
    await _run(engine, shared + [7], "k")

    async def later(i: int, prompt: list[int]) -> tuple:
        start = engine.stats()["steps"]
        while engine.stats()["steps"] < start + 3 * i:
            await asyncio.sleep(0.001)
        return await _run(engine, prompt, "k", 16)

    together = await asyncio.gather(*[later(i, p) for i, p in enumerate(prompts)])
    assert [t for t, _ in together] == alone
    assert all(cached >= 48 for _, cached in together)


async def test_hits_ending_inside_and_past_the_sliding_window_at_20b_shapes(attention_20b):
    """Window 128, blocks of 16: hits of 48 tokens (the ring not yet full) and of 144 and 192 tokens (past
    the window, ending mid-ring) restore both layer kinds exactly: same greedy tokens as cold runs."""
    engine = Engine.from_bundle(attention_20b[1], prefill_chunk=100)
    try:
        base = np.random.default_rng(5).integers(0, 2990, size=300).tolist()
        hits = []
        for n in (60, 150, 200, 300):
            cold, _ = await _run(engine, base[:n], None, 16)
            warm, cached = await _run(engine, base[:n], "k", 16)
            hits.append(cached)
            assert warm == cold, n
        assert hits == [0, 48, 144, 192]
    finally:
        engine.close()


@pytest.mark.parametrize("hit", [48, 128, 144])
def test_a_restored_prefix_gives_the_logits_of_a_prefilled_one(attention_20b, hit):
    """At the runner: a prefix prefilled in one slot, copied out (full layers per position, windowed layers'
    state at its end) and restored into another, then continued, gives the logits of prefilling the whole
    prompt, for a prefix inside the 128 window, exactly one window, and past it."""
    from tests.engine.test_parity import _runner

    runner = _runner(attention_20b[1])
    seq = np.random.default_rng(hit).integers(0, 2990, size=hit + 40).tolist()
    cache = runner.allocate(3, 256)
    runner.prefill(cache, 0, seq[:-1], 0)
    runner.prefill(cache, 1, seq[:hit], 0)
    blocks = [cache.positions(1, start, start + BLOCK) for start in range(0, hit, BLOCK)]
    cache.restore(2, blocks, cache.window_state(1, hit))
    runner.prefill(cache, 2, seq[hit:-1], hit)
    logits = runner.step(cache, [seq[-1], seq[-1], seq[-1]], [len(seq) - 1, hit, len(seq) - 1])
    assert np.abs(logits[2] - logits[0]).max() <= 1e-4 * np.abs(logits[0]).max()
    assert logits[2].argmax() == logits[0].argmax()


async def test_another_scope_gets_no_hit_for_the_same_prompt(make_engine):
    engine = make_engine()
    prompt = _prompt(70, 8)
    first, _ = await _run(engine, prompt, "key-a")
    assert (await _run(engine, prompt, "key-a"))[1] == 64
    other, cached = await _run(engine, prompt, "key-b")
    assert cached == 0 and other == first
    assert (await _run(engine, prompt, "key-b"))[1] == 64  # its own blocks, kept apart from key-a's


async def test_the_least_recently_used_prefix_is_evicted_first(make_engine):
    probe = make_engine()
    await _run(probe, _prompt(33, 0), "k")
    per_prompt = probe.stats()["kv_bytes_cached"]
    engine = make_engine(prefix_cache=2 * per_prompt + per_prompt // 2)
    a, b, c = (_prompt(33, seed) for seed in (1, 2, 3))
    await _run(engine, a, "k")
    await _run(engine, b, "k")
    assert (await _run(engine, a, "k"))[1] == 32  # a is now more recent than b
    await _run(engine, c, "k")  # no room for three: b goes
    assert engine.stats()["kv_bytes_cached"] <= engine.stats()["prefix_cache_limit_bytes"]
    assert (await _run(engine, a, "k"))[1] == 32
    assert (await _run(engine, b, "k"))[1] == 0


async def test_under_memory_pressure_the_cache_gives_way_and_never_holds_an_admission(make_engine):
    """A budget that fits two requests' reservations and little more, a cache allowed all of it and full of
    other prefixes: a second request starts beside a long-running one (the cache is evicted, not waited for),
    and reservations plus cached blocks never exceed the budget."""
    layout = make_engine(prefix_cache=0)._scheduler.layout
    long_request = GenerationRequest(prompt_tokens=_prompt(33, 40), max_tokens=4000, temperature=0, cache_scope="k")
    short = GenerationRequest(prompt_tokens=_prompt(33, 41), max_tokens=8, temperature=0, cache_scope="k")
    budget = layout.bytes_for(4033) + layout.bytes_for(41) + layout.bytes_for(40)
    engine = make_engine(kv_budget_bytes=budget, prefix_cache=1.0)
    for seed in range(10):
        await _run(engine, _prompt(33, 100 + seed), "k", 8)
    assert engine.stats()["kv_bytes_cached"] >= 10 * layout.bytes_for(32) // 2
    seen: list[dict[str, int]] = []

    async def watch() -> None:
        while True:
            seen.append(engine.stats())
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    before = engine.stats()["generated_tokens"]
    running = asyncio.create_task(collect(engine.generate(long_request)))
    while engine.stats()["generated_tokens"] < before + 3:
        await asyncio.sleep(0.001)
    # would hang (until the long request ends) if the cache held the admission: the long one is still running
    tokens = await asyncio.wait_for(_tokens(engine, short), timeout=120)
    assert len(tokens) == 8 and not running.done()
    running.cancel()
    watcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert all(s["kv_bytes_reserved"] + s["kv_bytes_cached"] <= budget for s in seen)
    assert engine.stats()["kv_bytes_cached"] < 10 * layout.bytes_for(32) // 2


async def test_bad_cache_sizes_are_refused_by_name(tiny_bundle):
    for size in (-1, 2.5):
        with pytest.raises(EngineError, match="prefix cache size"):
            Engine.from_bundle(tiny_bundle, prefix_cache=size)


def test_the_size_is_a_fraction_or_bytes_and_refused_where_copying_is_not_built():
    assert prefix_limit(None, 1000, "cpu") == 250 and prefix_limit(None, 1000, "cuda") == 0
    assert (prefix_limit(0, 1000, "cpu"), prefix_limit(0.5, 1000, "cpu"), prefix_limit(4096, 1000, "cpu")) == (
        0,
        500,
        4096,
    )
    with pytest.raises(ValueError, match="CPU buffers only"):
        prefix_limit(0.5, 1000, "cuda")
