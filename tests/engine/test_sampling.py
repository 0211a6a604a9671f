"""Logit bias and the presence and frequency penalties, in the sampler and through the real engine."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.engine import EngineError, GenerationRequest, collect
from appliance.engine.grammar import TokenMask
from appliance.engine.sampling import Sampler


def test_frequency_and_presence_penalties_count_what_this_sequence_generated():
    logits = np.array([3.0, 2.5, 1.0, 0.0], np.float32)
    plain = Sampler(0, 1.0, None)
    assert [plain(logits) for _ in range(3)] == [0, 0, 0]
    freq = Sampler(0, 1.0, None, frequency_penalty=0.4)
    assert [freq(logits) for _ in range(4)] == [0, 0, 1, 0]  # 3.0 - 0.8 < 2.5; then 2.5 - 0.4 < 2.2
    presence = Sampler(0, 1.0, None, presence_penalty=2.5)
    assert [presence(logits) for _ in range(3)] == [0, 1, 2]  # each token once, then a fresh one
    assert logits.tolist() == [3.0, 2.5, 1.0, 0.0]  # the engine's row is never written


@pytest.mark.parametrize("temperature", [0, 0.7])
def test_logit_bias_forces_and_forbids_tokens_for_every_sampler(temperature):
    logits = np.zeros(8000, np.float32)
    logits[7] = 50
    forced = Sampler(temperature, 0.9, 1, logit_bias={7: -100, 321: 100})
    assert {forced(logits) for _ in range(20)} == {321}


@pytest.mark.parametrize(("temperature", "top_p"), [(0, 1.0), (0.8, 1.0), (1.0, 0.9)])
def test_a_mask_gives_the_same_draw_as_a_row_with_the_rest_at_minus_infinity(temperature, top_p):
    """Choosing among the allowed ids (how a JSON mask is applied) is the masked row's draw, for every
    sampler and seed; a short list of forbidden ids (free text) is the same too."""
    logits = np.random.default_rng(5).standard_normal(201_088).astype(np.float32)
    allowed = np.sort(np.random.default_rng(6).choice(201_088, 300, replace=False))
    masked = np.full_like(logits, -np.inf)
    masked[allowed] = logits[allowed]
    forbidden = np.setdiff1d(np.arange(201_088), allowed)
    for seed in range(5):
        draws = []
        for mask in (None, TokenMask(allowed=allowed), TokenMask(forbidden=forbidden)):
            sampler = Sampler(temperature, top_p, seed)
            draws.append([sampler(masked if mask is None else logits.copy(), mask) for _ in range(4)])
        assert draws[0] == draws[1] == draws[2]
        assert set(draws[0]) <= set(allowed.tolist())


async def test_logit_bias_through_the_engine(make_engine):
    engine = make_engine(max_batch_size=2)
    prompt = list(range(1000, 1012))
    forced = await collect(
        engine.generate(GenerationRequest(prompt_tokens=prompt, max_tokens=6, temperature=0, logit_bias={4321: 100}))
    )
    assert forced["finish"].token_ids == (4321,) * 6
    with pytest.raises(EngineError, match="logit_bias"):
        await collect(engine.generate(GenerationRequest(prompt_tokens=prompt, max_tokens=2, logit_bias={10**7: 1})))


async def test_a_frequency_penalty_breaks_a_forced_repetition(make_engine):
    engine = make_engine(max_batch_size=2)
    prompt = list(range(2000, 2010))
    biased = GenerationRequest(prompt_tokens=prompt, max_tokens=8, temperature=0, logit_bias={4321: 5.0})
    assert (await collect(engine.generate(biased)))["finish"].token_ids == (4321,) * 8
    biased.frequency_penalty = 2.0
    tokens = (await collect(engine.generate(biased)))["finish"].token_ids
    assert tokens[0] == 4321 and tokens.count(4321) < 8
