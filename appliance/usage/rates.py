"""Rate leases: a replica's share of a key's per-minute buckets, so most admissions need no transaction.

The buckets live in the database (`rate_buckets`), where every replica draws on them. When the writer takes
a request from a key's buckets and they stay far from empty (each limited bucket keeps at least
`LEASE_SHARE` times this request's worth), it also takes 1/`LEASE_SHARE` of what is left out of them for
this replica: that share is the replica's lease, held in memory only. Admissions that fit the lease are
decided here, and tokens charged after the fact are paid from it while it lasts; what does not fit goes to
the writer, which first gives the lease's rest back to the buckets (never above a full bucket).

What this costs: leased budget is spent from the shared buckets before it is used, so in any window a key
can be admitted at most its limit plus what the replicas' leases held at the window's start, each at most
1/`LEASE_SHARE` of a bucket (two replicas: 1/8 of a minute's allowance). Near the limit (less than
`LEASE_SHARE` requests' worth left) nothing is leased and every admission is decided against the buckets
exactly. A lease is used for `RATE_LEASE_S` at most, then given back with the next admission; a crashed
replica's lease is simply gone (the buckets refill, nothing stays reserved).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from appliance.policy.ratelimit import Buckets, needs, per_minute, refilled
from appliance.policy.schema import RateLimit

LEASE_SHARE = 16  # a replica leases at most this fraction (1/16) of what a quota or bucket has left
RATE_LEASE_S = 60.0 / LEASE_SHARE  # a rate lease is used this long at most (one lease's worth of refill)


@dataclass
class RateLease:
    limit: RateLimit  # the limit it was leased under: a reload that changes it sends admissions to the writer
    left: dict[str, float]  # per limited bucket (rate.requests, rate.tokens)
    renew_by: float

    def admits(self, limit: RateLimit, tokens: int, now: float) -> bool:
        """Take one request and `tokens` from the lease if it holds them (a lease that has run dry of any
        bucket admits nothing: the writer decides whether the key's buckets are in debt)."""
        want = needs(tokens)
        if limit != self.limit or now >= self.renew_by:
            return False
        if any(left < want[kind] or left <= 0 for kind, left in self.left.items()):
            return False
        for kind in self.left:
            self.left[kind] -= want[kind]
        return True

    def pay(self, tokens: int) -> int:
        """Tokens used after the fact, paid from the lease as far as it holds them; returns the rest."""
        if "rate.tokens" not in self.left:
            return tokens
        paid = min(float(tokens), max(0.0, self.left["rate.tokens"]))
        self.left["rate.tokens"] -= paid
        return math.ceil(tokens - paid)


def lease_slices(taken: Buckets, tokens: int) -> dict[str, float] | None:
    """The share of the buckets (just taken from) to lease, or None when they are near empty."""
    want = needs(tokens)
    slices = {kind: level / LEASE_SHARE for kind, (level, _) in taken.items()}
    if not slices or any(share < max(want[kind], 1) for kind, share in slices.items()):
        return None
    return slices


def given_back(
    bucket: tuple[float, float] | None, limit: RateLimit, kind: str, amount: float, now: float
) -> tuple[float, float] | None:
    """A bucket after a lease's unused `amount` came back: never above a full bucket."""
    allowance = per_minute(limit, kind)
    if allowance is None:
        return bucket
    return min(float(allowance), refilled(bucket, allowance, now) + amount), now
