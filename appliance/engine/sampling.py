"""Next-token choice per sequence: greedy, temperature, nucleus (top_p), each with its own seeded RNG.

Every sequence owns a generator and draws exactly one number per token, so a seed reproduces the same
tokens whatever else shares the batch. Logit bias and the presence and frequency penalties (OpenAI's
definitions: over the tokens this sequence generated) shift the row before any of the samplers reads it;
a constrained sequence's mask (grammar.Guide) then removes every token its grammar does not allow.

A sequence that asked for log probabilities also gets the log-softmax of that row (bias, penalties and
mask applied; temperature and top_p not: they only choose how to draw from it, and at temperature 0 the
drawn distribution would say nothing) at the chosen token and at its k most likely tokens. Other rows
pay nothing: the work runs only where `logprobs` is set.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from appliance.engine.grammar import TokenMask
from appliance.engine.types import GenerationRequest

_CANDIDATES = 4096  # nucleus search looks at the top candidates first; full sort only if they fall short
_SAMPLE = 4096  # entries of a row sampled to bound its top-k candidates


class Score(NamedTuple):
    """The chosen token's log probability and the k most likely tokens' (id, log probability), best first."""

    logprob: float
    top: tuple[tuple[int, float], ...]


def score(row: np.ndarray, at: int, k: int, ids: np.ndarray | None = None) -> Score:
    """Log-softmax of `row` at index `at` and at its `k` largest entries (indices mapped through `ids`
    when `row` holds only those ids). Forbidden (-inf) entries are never among the alternatives."""
    peak = float(row.max())
    log_total = peak + math.log(float(np.exp(row - peak).sum(dtype=np.float64)))  # the sum is >= 1: <= 0 below
    top: tuple[tuple[int, float], ...] = ()
    if k:
        top = tuple(
            (int(ids[i] if ids is not None else i), float(row[i]) - log_total + 0.0)
            for i in _largest(row, k)
            if row[i] > -np.inf
        )
    return Score(float(row[at]) - log_total + 0.0, top)  # + 0.0: a certain token is 0.0, not -0.0


def _largest(row: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` largest entries, largest first (ties: lower index first).

    Not `argpartition` over the row: its selection slows a hundredfold on rows with few distinct values (an
    untrained model's). A strided sample's k-th largest value bounds the candidates instead: at least k
    entries reach it, and for a real row about k * stride exceed it, so one sort of a few thousand is enough.
    """
    sample = np.sort(row[:: max(1, len(row) // _SAMPLE)])
    bound = sample[-min(k, len(sample))]
    above, ties = np.flatnonzero(row > bound), np.flatnonzero(row == bound)[:k]
    candidates = np.concatenate([above, ties])
    return candidates[np.argsort(-row[candidates], kind="stable")][:k]


class Sampler:
    def __init__(
        self,
        temperature: float,
        top_p: float,
        seed: int | None,
        *,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        logit_bias: dict[int, float] | None = None,
        logprobs: int | None = None,
    ) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.rng = np.random.default_rng(seed)
        self.presence, self.frequency = presence_penalty, frequency_penalty
        bias = logit_bias or {}
        self._bias_ids = np.fromiter(bias.keys(), np.int64, len(bias))
        self._bias = np.fromiter(bias.values(), np.float32, len(bias))
        self._counts: dict[int, int] = {}  # generated token -> times, for the penalties
        self.logprobs = logprobs  # None: not asked; k: score each token and its k best alternatives

    @classmethod
    def of(cls, request: GenerationRequest) -> Sampler:
        return cls(
            request.temperature,
            request.top_p,
            request.seed,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            logit_bias=request.logit_bias,
            logprobs=request.logprobs,
        )

    def __call__(self, logits: np.ndarray, mask: TokenMask | None = None) -> int:
        return self.pick(logits, mask)[0]

    def pick(self, logits: np.ndarray, mask: TokenMask | None = None) -> tuple[int, Score | None]:
        """The next token, and its score when this sequence asked for log probabilities."""
        row, ids = self._shifted(logits), None
        if mask is not None and mask.allowed is not None:  # choose among the allowed: as over a masked row
            row, ids = row[mask.allowed], mask.allowed
        elif mask is not None:  # the row is the engine's, read once: masked in place rather than copied (800 KB)
            row[mask.forbidden] = -np.inf
        at = self._choose(row)
        token = at if ids is None else int(ids[at])
        if self.presence or self.frequency:
            self._counts[token] = self._counts.get(token, 0) + 1
        return token, None if self.logprobs is None else score(row, at, self.logprobs, ids)

    def _shifted(self, logits: np.ndarray) -> np.ndarray:
        """The row with bias and penalties applied (a copy; the row itself is left as it was)."""
        if not len(self._bias) and not self._counts:
            return logits
        out = np.array(logits, np.float32)
        out[self._bias_ids] += self._bias
        if self._counts:
            ids = np.fromiter(self._counts.keys(), np.int64, len(self._counts))
            times = np.fromiter(self._counts.values(), np.float32, len(self._counts))
            out[ids] -= self.frequency * times + self.presence
        return out

    def _choose(self, logits: np.ndarray) -> int:
        if self.temperature == 0:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / self.temperature
        if self.top_p < 1.0:
            order = np.argpartition(-scaled, min(_CANDIDATES, len(scaled) - 1))[:_CANDIDATES]
            order = order[np.argsort(-scaled[order], kind="stable")]
            probs = np.exp(scaled[order] - scaled[order[0]])
            total = np.exp(scaled - scaled[order[0]]).sum()
            cumulative = np.cumsum(probs) / total
            if cumulative[-1] < self.top_p:
                order = np.argsort(-scaled, kind="stable")
                probs = np.exp(scaled[order] - scaled[order[0]])
                cumulative = np.cumsum(probs) / total
            keep = int(np.searchsorted(cumulative, self.top_p)) + 1
            choice = self.rng.random() * cumulative[keep - 1]
            return int(order[min(int(np.searchsorted(cumulative[:keep], choice, side="right")), keep - 1)])
        probs = np.exp(scaled - scaled.max())
        cumulative = np.cumsum(probs)
        choice = self.rng.random() * cumulative[-1]
        return int(min(int(np.searchsorted(cumulative, choice, side="right")), len(cumulative) - 1))
