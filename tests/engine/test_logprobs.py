"""Log probabilities in the engine: the sampler's scores, and entries aligned through every rewrite of the text."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.engine import Engine, GenerationRequest, TextEvent, sampling
from appliance.engine.grammar import TokenMask
from appliance.engine.logprobs import REPLACED, Aligner
from appliance.engine.sampling import Sampler, _largest
from appliance.engine.sampling import score as real_score
from appliance.engine.types import Alternative, TokenLogprob
from appliance.policy.detectors import Finding
from appliance.policy.redact import redacted

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def log_softmax(row: np.ndarray) -> np.ndarray:
    row = row.astype(np.float64)
    return row - row.max() - np.log(np.exp(row - row.max()).sum())


def test_scores_are_the_log_softmax_of_the_row_sampled_from():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=1000).astype(np.float32) * 4
    token, score = Sampler(0, 1.0, None, logprobs=5, logit_bias={3: 50}).pick(logits.copy())
    shifted = logits.copy()
    shifted[3] += 50
    reference = log_softmax(shifted)
    assert token == 3 and score is not None
    assert score.logprob == pytest.approx(reference[3], abs=1e-5) and score.logprob <= 0
    assert [i for i, _ in score.top] == list(np.argsort(-reference)[:5])
    assert [lp for _, lp in score.top] == pytest.approx(sorted(reference, reverse=True)[:5], abs=1e-5)
    assert Sampler(0, 1.0, None).pick(logits.copy())[1] is None  # rows that did not ask are not scored


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([-np.inf, -3.0, 0.0, 0.5, 2.0]), min_size=1, max_size=9000), st.integers(1, 20))
def test_the_top_k_is_a_stable_sort_even_over_a_row_of_ties(values, k):
    row = np.array(values, np.float32)  # an untrained model's rows hold few distinct values
    assert list(_largest(row, k)) == list(np.argsort(-row, kind="stable")[:k])


@pytest.mark.parametrize("shape", ["allowed", "forbidden"])
def test_a_masked_row_scores_only_the_tokens_it_allows(shape):
    logits = np.arange(100, dtype=np.float32)
    allowed = np.array([5, 17, 42])
    forbidden = np.setdiff1d(np.arange(100), allowed)
    mask = TokenMask(allowed=allowed) if shape == "allowed" else TokenMask(forbidden=forbidden)
    token, score = Sampler(0, 1.0, None, logprobs=20).pick(logits.copy(), mask)
    assert token == 42 and score is not None
    assert [i for i, _ in score.top] == [42, 17, 5]  # fewer than asked: the forbidden are never alternatives
    assert score.logprob == pytest.approx(log_softmax(logits[allowed])[2], abs=1e-6)


# --- the alignment of entries with rewritten text -------------------------------------------------------------

PIECES = st.text(alphabet="ab @.<|>", min_size=1, max_size=4)


@st.composite
def rewrites(draw):
    """Tokens, spans a filter redacts (merged when they overlap) and the points it releases at (never inside
    a span, as the filter never releases part of a value)."""
    tokens = draw(st.lists(PIECES, min_size=1, max_size=25))
    text = "".join(tokens)
    spans = []
    for _ in range(draw(st.integers(0, 4))):
        start = draw(st.integers(0, len(text) - 1))
        spans.append((start, draw(st.integers(start + 1, len(text)))))
    inside = {i for a, b in spans for i in range(a + 1, b)}
    cuts = sorted({c for c in draw(st.lists(st.integers(0, len(text)), max_size=8)) if c not in inside})
    return tokens, spans, [*cuts, len(text)]


@settings(max_examples=300, deadline=None)
@given(rewrites(), st.booleans())
def test_entries_concatenate_to_the_rewritten_text_and_never_show_what_was_changed(case, cut_short):
    tokens, spans, cuts = case
    text = "".join(tokens)
    raw = [TokenLogprob(t, -0.5, (Alternative(t, t.encode(), -0.5),)) for t in tokens]
    aligner = Aligner()
    aligner.add(raw)
    shown, sent, entries, edits, start = "", "", [], [], 0
    for end in cuts[:-1] if cut_short else cuts:
        findings = [Finding("pii.x", max(a, start) - start, b - start) for a, b in spans if start <= a and b <= end]
        out, made = redacted(text[start:end], findings)
        moved = [(a + start, b + start, r) for a, b, r in made]
        piece, aligned = aligner.release(end, out, moved)
        assert "".join(e.token for e in aligned) == piece  # each release: its text and exactly its entries
        shown, sent, entries, edits, start = shown + out, sent + piece, entries + aligned, edits + moved, end
    rest, aligned = aligner.close()  # the stream ends (or is stopped): nothing released is lost
    sent, entries = sent + rest, entries + aligned
    assert sent == shown and "".join(e.token for e in entries) == shown
    offsets = np.cumsum([0, *map(len, tokens)])
    originals = {(offsets[i], t): raw[i] for i, t in enumerate(tokens)}
    at = 0
    for e in entries:  # an entry kept as the model wrote it is that token, at its place, touching no edit
        if e.logprob != REPLACED:
            raw_at = raw_offset(at, edits)
            assert originals.get((raw_at, e.token)) is e
            assert not any(a < raw_at + len(e.token) and raw_at < b for a, b, _ in edits)
        else:
            assert e.top == ()
        at += len(e.token)


def raw_offset(at: int, edits: list) -> int:
    """Where shown offset `at` (outside any replacement) stands in the raw text."""
    shift = 0
    for a, b, replacement in edits:
        if a + shift >= at:
            break
        shift += len(replacement) - (b - a)
    return at - shift


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab<|>", max_size=30), st.lists(st.tuples(st.integers(0, 30), st.integers(1, 8)), max_size=4))
def test_redaction_edits_rebuild_the_redacted_text(text, spans):
    findings = [Finding("pii.x", a, min(a + n, len(text))) for a, n in spans if a < len(text)]
    out, edits = redacted(text, findings)
    rebuilt, pos = "", 0
    for a, b, replacement in edits:
        assert pos <= a < b
        rebuilt, pos = rebuilt + text[pos:a] + replacement, b
    assert rebuilt + text[pos:] == out


# --- the engine --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_engine(demo_bundle):
    engine = Engine.from_bundle(demo_bundle, max_batch_size=8)
    yield engine
    engine.close()


async def answer(engine: Engine, **options) -> tuple[str, list[TokenLogprob], bool]:
    text, entries, others = "", [], False
    async for event in engine.generate(GenerationRequest(**({"messages": FRANCE, "temperature": 0} | options))):
        if isinstance(event, TextEvent) and event.channel == "final":
            text, entries = text + event.text, entries + list(event.logprobs or ())
        elif isinstance(event, TextEvent):
            others = others or event.logprobs is not None
    return text, entries, others


async def test_a_stop_string_cuts_the_entries_with_the_text(demo_engine):
    text, entries, reasoning_scored = await answer(demo_engine, logprobs=2)
    assert text == "The capital of France is Paris." and not reasoning_scored
    assert "".join(e.token for e in entries) == text
    for stop, shown in ((" of", "The capital"), ("aris", "The capital of France is P")):
        cut, kept, _ = await answer(demo_engine, logprobs=2, stop=[stop])
        assert cut == shown and "".join(e.token for e in kept) == cut
    assert kept[-1].token == " P" and kept[-1].logprob == REPLACED  # " Paris" was cut: its shown part


async def test_rows_with_and_without_logprobs_share_a_batch_independently(demo_engine, monkeypatch):
    scored = []
    monkeypatch.setattr(sampling, "score", lambda *a: scored.append(a[2]) or real_score(*a))
    asks = [None, 0, 5, None, 20, None, 3, None]
    together = await asyncio.gather(
        *(answer(demo_engine, logprobs=k, temperature=0.8, seed=i) for i, k in enumerate(asks))
    )
    alone = [await answer(demo_engine, logprobs=None, temperature=0.8, seed=i) for i in range(len(asks))]
    assert [t for t, _, _ in together] == [t for t, _, _ in alone]
    assert set(scored) == {0, 5, 20, 3}  # only the rows that asked were scored: the others pay nothing
    for k, (text, entries, _) in zip(asks, together):
        assert entries == [] if k is None else ("".join(e.token for e in entries) == text)
        assert all(len(e.top) == k for e in entries)
