"""Request and token rate limits per API key: token buckets that refill continuously.

A bucket holds up to one minute's allowance, so a key may burst its whole per-minute budget and then
proceeds at the steady rate. Token charges may drive a bucket below zero (a long completion is paid for
after the fact); the key then waits until the debt is repaid.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from appliance.policy.errors import RateLimited
from appliance.policy.schema import RateLimit


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # (key, kind) -> (level, stamp)

    def acquire(self, key_id: str, limit: RateLimit, tokens: int) -> None:
        """Take one request and `tokens` tokens from `key_id`'s buckets, or raise `RateLimited`."""
        wanted = (("rate.requests", limit.requests_per_minute, 1), ("rate.tokens", limit.tokens_per_minute, tokens))
        with self._lock:
            now = self._clock()
            levels = {}
            for rule_id, per_minute, amount in wanted:
                if per_minute is None:
                    continue
                level = self._level(key_id, rule_id, per_minute, now)
                need = min(amount, per_minute)  # an oversized request waits for a full bucket, then runs
                if level < need:
                    raise RateLimited(rule_id, (need - level) * 60.0 / per_minute)
                levels[rule_id] = level - amount
            for rule_id, level in levels.items():
                self._buckets[(key_id, rule_id)] = (level, now)

    def charge(self, key_id: str, limit: RateLimit, tokens: int) -> None:
        """Add tokens used beyond what `acquire` took (e.g. the completion's real length)."""
        if limit.tokens_per_minute is None or tokens <= 0:
            return
        with self._lock:
            now = self._clock()
            level = self._level(key_id, "rate.tokens", limit.tokens_per_minute, now)
            self._buckets[(key_id, "rate.tokens")] = (level - tokens, now)

    def _level(self, key_id: str, kind: str, per_minute: int, now: float) -> float:
        level, stamp = self._buckets.get((key_id, kind), (float(per_minute), now))
        return min(float(per_minute), level + (now - stamp) * per_minute / 60.0)
