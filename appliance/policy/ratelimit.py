"""Request and token rate limits per API key: token buckets that refill continuously.

A bucket holds up to one minute's allowance, so a key may burst its whole per-minute budget and then
proceeds at the steady rate. Token charges may drive a bucket below zero (a long completion is paid for
after the fact); the key then waits until the debt is repaid.

The bucket arithmetic (`take`, `refilled`) is shared: `RateLimiter` keeps buckets in this process's memory
(one replica, tests), and the gateway keeps them in the database (`usage.SharedLimiter`), so every replica
draws on the same buckets. Either is a `Limiter`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from appliance.policy.errors import RateLimited
from appliance.policy.schema import RateLimit

Buckets = dict[str, tuple[float, float]]  # rule id (rate.requests, rate.tokens) -> (level, stamp)
KINDS = ("rate.requests", "rate.tokens")


class Limiter(Protocol):
    def acquire(self, key_id: str, limit: RateLimit, tokens: int) -> None: ...

    def charge(self, key_id: str, limit: RateLimit, tokens: int) -> None: ...


def per_minute(limit: RateLimit, kind: str) -> int | None:
    return limit.requests_per_minute if kind == "rate.requests" else limit.tokens_per_minute


def refilled(bucket: tuple[float, float] | None, allowance: int, now: float) -> float:
    """A bucket's level at `now` (a missing bucket is full)."""
    level, stamp = bucket if bucket is not None else (float(allowance), now)
    return min(float(allowance), level + (now - stamp) * allowance / 60.0)


def needs(tokens: int) -> dict[str, int]:
    """What one admission takes from each bucket."""
    return {"rate.requests": 1, "rate.tokens": tokens}


def take(buckets: Buckets, limit: RateLimit, tokens: int, now: float) -> Buckets:
    """The buckets after one request and `tokens` tokens, or raise `RateLimited` (nothing taken)."""
    taken = {}
    for rule_id, amount in needs(tokens).items():
        allowance = per_minute(limit, rule_id)
        if allowance is None:
            continue
        level = refilled(buckets.get(rule_id), allowance, now)
        need = min(amount, allowance)  # an oversized request waits for a full bucket, then runs
        if level < need:
            raise RateLimited(rule_id, (need - level) * 60.0 / allowance)
        taken[rule_id] = (level - amount, now)
    return taken


def charged(bucket: tuple[float, float] | None, limit: RateLimit, tokens: int, now: float) -> tuple[float, float]:
    """The token bucket after `tokens` more were used (it may go below zero)."""
    return refilled(bucket, limit.tokens_per_minute or 0, now) - tokens, now


class RateLimiter:
    """Buckets in this process's memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # (key, kind) -> (level, stamp)

    def acquire(self, key_id: str, limit: RateLimit, tokens: int) -> None:
        """Take one request and `tokens` tokens from `key_id`'s buckets, or raise `RateLimited`."""
        with self._lock:
            mine = {kind: self._buckets[(key_id, kind)] for kind in KINDS if (key_id, kind) in self._buckets}
            for kind, bucket in take(mine, limit, tokens, self._clock()).items():
                self._buckets[(key_id, kind)] = bucket

    def charge(self, key_id: str, limit: RateLimit, tokens: int) -> None:
        """Add tokens used beyond what `acquire` took (e.g. the completion's real length)."""
        if limit.tokens_per_minute is None or tokens <= 0:
            return
        with self._lock:
            key = (key_id, "rate.tokens")
            self._buckets[key] = charged(self._buckets.get(key), limit, tokens, self._clock())
