"""Next-token choice per sequence: greedy, temperature, nucleus (top_p), each with its own seeded RNG.

Every sequence owns a generator and draws exactly one number per token, so a seed reproduces the same
tokens whatever else shares the batch.
"""

from __future__ import annotations

import numpy as np

_CANDIDATES = 4096  # nucleus search looks at the top candidates first; full sort only if they fall short


class Sampler:
    def __init__(self, temperature: float, top_p: float, seed: int | None) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray) -> int:
        if self.temperature == 0:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / self.temperature
        if self.top_p < 1.0:
            order = np.argpartition(-scaled, _CANDIDATES)[:_CANDIDATES]
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
