"""Quota counters in the appliance's database: reserve at admission, settle at the outcome, group commit.

A request reserves what it may use (its prompt, its `max_tokens` and one request) against every quota it
counts against; at its outcome the reservation is given back and the usage its audit record holds is
added. A quota is never granted past its cap counting what is reserved, so concurrent requests on any
number of gateway replicas overshoot nothing: in-flight requests hold at most their reservations.

Each replica has one writer thread that takes every pending admission, settlement and sweep and applies
them in one transaction (like the audit writer's group commit): it creates missing counter rows, locks the
rows it touches (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: `SELECT ... FOR UPDATE` in key order, so two
replicas never deadlock), decides each admission in turn against the locked values, writes them back and
commits; only then is anyone answered. One commit (one fsync on SQLite) serves a whole batch, and a
batch that fails answers every request in it with `QuotaUnavailable` (admissions fail closed).

A replica that dies mid-request never settles: its reservations expire after `quota_reservation_ttl_s` and
any replica's writer gives them back (it looks once a minute).

Leases keep the common case off the database: when an admission leaves a quota far from its cap, the
writer also reserves for this replica a slice of what is left (1/`LEASE_SHARE` of it, at least this
request's worth) as one more `usage_reservations` row, the replica's lease on that counter. Later
admissions that fit in the replica's leases are decided in memory, with no transaction; their settlement
moves what they used from the lease to `used_*` (batched, as before) and what they did not use back into
the lease. A lease is a reservation like any other, so used + reserved never passes a cap, across any
number of replicas. The price is early refusals near a cap: a request can be refused while other replicas
hold leased budget they have not used, at most 1/`LEASE_SHARE` of what was left when each lease was taken
(an admission that does not fit its own replica's lease first gives that lease back, and near the cap no
lease is granted, so every admission there is decided against the rows). A lease is renewed by its use and
given back by `close`; a crashed replica's lease expires like its reservations.

The per-minute rate limits (token buckets, `policy.ratelimit`) are kept here too, in `rate_buckets`, by the
same writer: the gateway's `PolicyEngine.limiter` is its ledger, so every replica draws on one bucket. They
are leased the same way (`usage.rates`): far from the limit a replica holds a share of a key's buckets in
memory and admits from it with no transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Any, cast

import structlog
from sqlalchemy import Connection, Engine, and_, bindparam, delete, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from appliance.errors import ApplianceError
from appliance.policy.errors import RateLimited
from appliance.policy.ratelimit import KINDS, Buckets, charged, take
from appliance.policy.schema import Quota, RateLimit
from appliance.usage.periods import Period, Window, window
from appliance.usage.rates import LEASE_SHARE, RATE_LEASE_S, RateLease, given_back, lease_slices
from appliance.usage.tables import AMOUNTS, buckets, counters, reservations

log = structlog.get_logger()
SWEEP_EVERY_S = 60.0  # how often one replica looks for expired reservations
BATCH_MAX = 512  # operations per transaction
SETTLE_WAIT_S = 0.05  # a batch of settlements and charges only waits this long for company
IDLE_EXIT_S = 5.0  # the writer thread ends when idle this long (started again on demand)
KNOWN_MAX = 100_000  # rows remembered as existing
CounterKey = tuple[str, str, str]  # scope, quota id, period label
_COLUMNS = tuple(f"{kind}_{a}" for kind in ("used", "reserved") for a in AMOUNTS)


@dataclass(frozen=True)
class Amounts:
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0

    def of(self, name: str) -> int:
        return int(getattr(self, name))


class QuotaExceeded(ApplianceError):
    """A request that would take a quota past its cap; names the quota and when it resets."""

    def __init__(
        self,
        scope: str,
        quota: Quota,
        amount: str,
        taken: int,
        wanted: int,
        cap: int,
        resets_at: datetime,
        now: datetime,
    ) -> None:
        self.rule_id = f"quota.{quota.id}"
        self.amount = amount
        self.resets_at = resets_at
        self.retry_after = max(0.0, (resets_at - now).total_seconds())
        self.left = max(0, cap - taken)
        # Refused, never shortened (a silently shorter answer would be wrong); what is left tells the client
        # the max_tokens that would fit now.
        hint = f" (a request with max_tokens <= {self.left} fits)" if amount == "output_tokens" and self.left else ""
        super().__init__(
            f"quota {quota.id} ({scope}: {amount.replace('_', ' ')} per {quota.period}) exceeded: "
            f"{taken} of {cap} used or reserved and this request needs {wanted}; {self.left} left{hint}; "
            f"it resets at {resets_at.isoformat()}"
        )


class QuotaUnavailable(ApplianceError):
    """The counters cannot be read or written: admissions that count against a quota fail closed."""


LeaseKey = tuple[CounterKey, str]  # a counter and the id of the lease row on it


@dataclass
class _Lease:
    """This replica's lease on one counter (a `usage_reservations` row of its own, which holds `left` and
    what the admissions taken from it hold): `left` is what admissions may still take without the database."""

    id: str
    quota: Quota  # the caps it was leased under: a reload that changes them sends admissions to the writer
    left: dict[str, int]  # per capped amount
    renew_by: float  # from then on admissions go to the writer; the row lives at least a half TTL longer
    draining: bool = False  # replaced or given back: its admissions' settlements release their whole share

    def give_back(self) -> dict[str, int]:
        """What the row holds beyond the admissions in flight, taken off the lease (for the writer to release)."""
        back, self.left = self.left, dict.fromkeys(self.left, 0)
        return back


@dataclass(frozen=True)
class Reservation:
    id: str
    counters: tuple[CounterKey, ...]
    leases: tuple[_Lease, ...] = ()  # admitted from this replica's leases (one per counter): no row of its own
    held: Amounts = Amounts()  # what a leased admission took from its leases


@dataclass(kw_only=True)
class _Op:
    future: Future = field(default_factory=Future)


@dataclass(kw_only=True)
class _Reserve(_Op):
    wanted: dict[CounterKey, tuple[Quota, datetime]]
    want: Amounts
    moment: datetime
    returned: dict[LeaseKey, dict[str, int]]  # this replica's leased budget on these counters, given back
    current: dict[CounterKey, str]  # the lease a grant tops up (a new one is made for the other counters)


@dataclass(kw_only=True)
class _Settle(_Op):
    reservation: Reservation
    used: Amounts
    released: dict[LeaseKey, dict[str, int]] = field(default_factory=dict)  # leased, lease no longer live
    consumed: dict[LeaseKey, dict[str, int]] = field(default_factory=dict)  # leased, live: its row holds it


@dataclass(kw_only=True)
class _Return(_Op):
    returned: dict[LeaseKey, dict[str, int]]


@dataclass(kw_only=True)
class _Sweep(_Op):
    pass


@dataclass(kw_only=True)
class _Take(_Op):
    key_id: str
    limit: RateLimit
    tokens: int
    returned: dict[str, float] = field(default_factory=dict)  # this replica's rate lease on the key, given back


@dataclass(kw_only=True)
class _Refund(_Op):
    key_id: str
    limit: RateLimit
    returned: dict[str, float]


@dataclass(kw_only=True)
class _Charge(_Op):
    key_id: str
    limit: RateLimit
    tokens: int


class QuotaLedger:
    def __init__(self, engine: Engine, zone: tzinfo, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._engine, self._zone, self._ttl_s, self._clock = engine, zone, ttl_s, clock
        self._last_sweep = float("-inf")
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._lock = threading.Lock()  # the writer's start and every lease's figures
        self._writer: threading.Thread | None = None
        self._known: set[tuple] = set()  # counter and bucket rows known to exist (only the writer uses it)
        self._leases: dict[CounterKey, _Lease] = {}
        self._owed: dict[LeaseKey, dict[str, int]] = {}  # replaced leases' budget, released with the next op
        self._rates: dict[str, RateLease] = {}  # key id -> this replica's share of its rate buckets

    # -- the API: futures for asyncio callers, blocking calls for everyone else -------------------------
    def reserve_future(self, quotas: Iterable[tuple[str, Quota]], want: Amounts) -> Future:
        """A future of the `Reservation` (None when no quota applies), or of `QuotaExceeded`."""
        now = self._clock()
        wanted: dict[CounterKey, tuple[Quota, datetime]] = {}
        for scope, quota in quotas:
            w = _window(int(now // 60), quota.period, self._zone)
            wanted[(scope, quota.id, w.label)] = (quota, w.resets_at)
        if not wanted:
            return _done(None)
        with self._lock:
            leased = self._from_leases(wanted, want, now)
            if leased is not None:
                return _done(leased)
            returned, current = self._take_back(wanted)
        moment = datetime.fromtimestamp(now, UTC)
        return self._submit(_Reserve(wanted=wanted, want=want, moment=moment, returned=returned, current=current))

    def _from_leases(self, wanted: dict[CounterKey, tuple[Quota, datetime]], want: Amounts, now: float) -> Any:
        """An admission decided in memory: every counter has a live lease under the same caps with room."""
        leases = []
        for key, (quota, _) in wanted.items():
            lease = self._leases.get(key)
            if lease is None or lease.draining or now >= lease.renew_by or lease.quota != quota:
                return None
            if any(left < want.of(a) for a, left in lease.left.items()):
                return None
            leases.append(lease)
        for lease in leases:
            for a in lease.left:
                lease.left[a] -= want.of(a)
        return Reservation("", tuple(wanted), tuple(leases), want)

    def _take_back(
        self, wanted: dict[CounterKey, tuple[Quota, datetime]]
    ) -> tuple[dict[LeaseKey, dict[str, int]], dict[CounterKey, str]]:
        """For an admission the writer decides: this replica's unused leased budget on its counters (so it
        counts as free), and the leases a grant may top up (live, under the same caps)."""
        returned: dict[LeaseKey, dict[str, int]] = {}
        current: dict[CounterKey, str] = {}
        for key, (quota, _) in wanted.items():
            for owed in [k for k in self._owed if k[0] == key]:
                returned[owed] = self._owed.pop(owed)
            lease = self._leases.get(key)
            if lease is not None:
                returned[(key, lease.id)] = lease.give_back()
                if not lease.draining and lease.quota == quota:
                    current[key] = lease.id
        return returned, current

    def _granted(self, batch: _Batch) -> None:
        """After a commit: leases granted or topped up, and leases whose row is gone (expired) retired."""
        granted, gone, now = batch.granted, batch.gone, self._clock()
        renew_by = now + self._ttl_s / 2
        with self._lock:
            for key_id, (limit, shares) in batch.rates_granted.items():
                rate = self._rates.get(key_id)
                if rate is not None and rate.limit == limit:  # another admission's grant landed first
                    for kind, share in shares.items():
                        rate.left[kind] += share
                else:  # (under another limit, a lease's rest is dropped: spent, never over-granted)
                    self._rates[key_id] = rate = RateLease(limit, dict(shares), 0.0)
                rate.renew_by = now + RATE_LEASE_S
            for key, lease_id in gone:
                lease = self._leases.get(key)
                if lease is not None and lease.id == lease_id:
                    lease.draining = True
                    del self._leases[key]
            for key, (lease_id, quota, slices) in granted.items():
                lease = self._leases.get(key)
                if lease is not None and lease.id == lease_id:
                    for a, amount in slices.items():
                        lease.left[a] += amount
                    lease.renew_by = renew_by
                    continue
                if lease is not None:  # under other caps: its row keeps its admissions in flight, the rest is owed
                    lease.draining = True
                    self._owed[(key, lease.id)] = lease.give_back()
                self._leases[key] = _Lease(lease_id, quota, dict(slices), renew_by)

    async def reserve_async(self, quotas: Iterable[tuple[str, Quota]], want: Amounts) -> Reservation | None:
        """`reserve_future` awaited; a caller cancelled while it waits (its client left) gives back what
        the writer reserved for it all the same."""
        future = self.reserve_future(quotas, want)
        if future.done():  # decided in memory: no hand-off to the loop
            return future.result()
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(self._give_back)
            raise

    def _give_back(self, future: Future) -> None:
        if not future.cancelled() and future.exception() is None and future.result() is not None:
            self.settle_future(future.result(), Amounts())

    def settle_future(self, reservation: Reservation, used: Amounts) -> Future:
        """Give the reservation back (unless it expired meanwhile) and count what was used. A leased one
        hands what it did not use back to its live lease in memory; the writer moves what it used from the
        lease row to `used_*`."""
        released: dict[LeaseKey, dict[str, int]] = {}
        consumed: dict[LeaseKey, dict[str, int]] = {}
        if reservation.leases:
            now, held = self._clock(), reservation.held
            with self._lock:
                for key, lease in zip(reservation.counters, reservation.leases, strict=True):
                    if lease.draining or now >= lease.renew_by:  # its row may be gone: the writer checks
                        released[(key, lease.id)] = {a: held.of(a) for a in lease.left}
                        continue
                    spent = consumed[(key, lease.id)] = {a: min(used.of(a), held.of(a)) for a in lease.left}
                    for a, amount in spent.items():
                        lease.left[a] += held.of(a) - amount
        return self._submit(_Settle(reservation=reservation, used=used, released=released, consumed=consumed))

    def reserve(self, quotas: Iterable[tuple[str, Quota]], want: Amounts) -> Reservation | None:
        return self.reserve_future(quotas, want).result()

    def settle(self, reservation: Reservation, used: Amounts) -> None:
        self.settle_future(reservation, used).result()

    def take_future(self, key_id: str, limit: RateLimit, tokens: int) -> Future:
        """Per-minute limits: a future of taking one request and `tokens` from the key's buckets (None), or of
        `RateLimited`; done at once when this replica's lease on them holds it."""
        if limit.requests_per_minute is None and limit.tokens_per_minute is None:
            return _done(None)
        now = self._clock()
        with self._lock:
            lease = self._rates.get(key_id)
            if lease is not None and lease.admits(limit, tokens, now):
                return _done(None)
            returned = self._rates.pop(key_id).left if lease is not None else {}
        return self._submit(_Take(key_id=key_id, limit=limit, tokens=tokens, returned=returned))

    def acquire(self, key_id: str, limit: RateLimit, tokens: int) -> None:
        """`take_future`, waited for: with `charge`, the ledger is a `policy.Limiter`."""
        self.take_future(key_id, limit, tokens).result()

    def charge(self, key_id: str, limit: RateLimit, tokens: int) -> None:
        """Tokens used beyond what `acquire` took: paid from this replica's lease while it holds them, the rest
        queued, not waited for (it cannot be refused)."""
        if limit.tokens_per_minute is None or tokens <= 0:
            return
        with self._lock:
            lease = self._rates.get(key_id)
            if lease is not None and lease.limit == limit:
                tokens = lease.pay(tokens)
        if tokens > 0:
            self._submit(_Charge(key_id=key_id, limit=limit, tokens=tokens))

    def release_stale(self) -> int:
        """Give back every reservation past its expiry (its request's replica died); returns how many rows."""
        return self._submit(_Sweep()).result()

    def close(self) -> None:
        """Give this replica's leases back and commit what is queued (settlements in flight) before the
        database goes away."""
        with self._lock:
            returned = {(key, lease.id): lease.give_back() for key, lease in self._leases.items()}
            returned |= self._owed
            for lease in self._leases.values():
                lease.draining = True
            rates = [_Refund(key_id=k, limit=r.limit, returned=r.left) for k, r in self._rates.items()]
            self._leases, self._owed, self._rates = {}, {}, {}
        if returned:
            self._submit(_Return(returned=returned))
        for refund in rates:
            self._submit(refund)
        with contextlib.suppress(QuotaUnavailable):
            self.release_stale()

    def counters(self, scope: str) -> dict[tuple[str, str], dict[str, int]]:
        """(quota id, period) -> used_* and reserved_* of one scope (key:<id> or group:<name>)."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(counters).where(counters.c.scope == scope)).mappings().all()
        return {(r["quota_id"], r["period"]): {c: r[c] for c in _COLUMNS} for r in rows}

    # -- the writer -------------------------------------------------------------------------------------
    def _submit(self, op: _Op) -> Future:
        with self._lock:
            self._queue.put(op)
            if self._writer is None:
                self._writer = threading.Thread(target=self._run, name="quota-writer", daemon=True)
                self._writer.start()
        return op.future

    def _run(self) -> None:
        while True:
            try:
                ops = [self._queue.get(timeout=IDLE_EXIT_S)]
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._writer = None
                        return
                continue
            deadline = time.monotonic() + SETTLE_WAIT_S
            while len(ops) < BATCH_MAX:
                try:
                    ops.append(self._queue.get_nowait())
                except queue.Empty:
                    # settlements and token charges alone wait a moment for company (nobody waits on
                    # them): one commit then serves them and the next admissions
                    wait = deadline - time.monotonic()
                    if wait <= 0 or not all(isinstance(op, _Settle | _Charge | _Refund) for op in ops):
                        break
                    try:
                        ops.append(self._queue.get(timeout=wait))
                    except queue.Empty:
                        break
            self._commit(ops)

    def _commit(self, ops: list[_Op]) -> None:
        # A waiter that gave up before its turn is skipped; from here on nobody can cancel (an admission
        # whose caller leaves now is given back by `reserve_async`).
        ops = [op for op in ops if op.future.set_running_or_notify_cancel()]
        if not ops:
            return
        try:
            with _write(self._engine) as conn:
                batch = _Batch(conn, self._clock(), self._ttl_s, self._known)
                results = batch.apply(ops, self._sweep_due())
            self._granted(batch)
        except Exception as exc:  # noqa: BLE001 - every waiter hears of it; the writer carries on
            log.error("quota batch failed", operations=len(ops), error=str(exc)[:300])
            failure = exc if isinstance(exc, QuotaUnavailable) else QuotaUnavailable(f"quota counters: {exc}")
            with self._lock:  # leased budget these ops gave back is still held by its rows: the next op releases it
                for op in ops:
                    for lease_key, amounts in _released(op).items():
                        owed = self._owed.setdefault(lease_key, dict.fromkeys(amounts, 0))
                        for a, amount in amounts.items():
                            owed[a] = owed.get(a, 0) + amount
            for op in ops:
                op.future.set_exception(failure)
            return
        if len(self._known) > KNOWN_MAX:  # old periods' rows: forget them rather than grow without end
            self._known.clear()
        self._known.update(batch.seen)
        for op, result in zip(ops, results, strict=True):
            if isinstance(result, QuotaExceeded | RateLimited):
                op.future.set_exception(result)
            else:
                op.future.set_result(result)

    def _sweep_due(self) -> bool:
        now = self._clock()
        if now - self._last_sweep < SWEEP_EVERY_S:
            return False
        self._last_sweep = now
        return True


class _Batch:
    """One transaction's work: the locked counter values, changed in memory, written back once."""

    def __init__(self, conn: Connection, now: float, ttl_s: float, known: set[tuple]) -> None:
        self.conn, self.now, self.ttl_s, self.known = conn, now, ttl_s, known
        self.seen: set[tuple] = set()  # rows that exist once this batch commits
        self.state: dict[CounterKey, dict[str, int]] = {}
        self.new_reservations: list[dict[str, Any]] = []
        self.before: dict[CounterKey, dict[str, int]] = {}
        self.buckets: dict[tuple[str, str], tuple[float, float] | None] = {}
        self.buckets_before: dict[tuple[str, str], tuple[float, float] | None] = {}
        self.leases: dict[LeaseKey, dict[str, int]] = {}  # this replica's lease rows touched (locked)
        self.leases_before: dict[LeaseKey, dict[str, int]] = {}
        self.granted: dict[CounterKey, tuple[str, Quota, dict[str, int]]] = {}  # lease id, caps, slices
        self.gone: set[LeaseKey] = set()  # lease rows expected but expired (swept)
        self.consumed: dict[LeaseKey, dict[str, int]] = {}  # relative updates of unlocked live lease rows
        self.rates_granted: dict[str, tuple[RateLimit, dict[str, float]]] = {}  # key id -> limit, shares

    def apply(self, ops: list[_Op], sweep: bool) -> list[Any]:
        if not sweep and all(isinstance(op, _Settle) and op.reservation.leases and not op.released for op in ops):
            return self._settle_leased(cast(list[_Settle], ops))
        settles = [op for op in ops if isinstance(op, _Settle)]
        reserves = [op for op in ops if isinstance(op, _Reserve)]
        sweeping = sweep or any(isinstance(op, _Sweep) for op in ops)
        given_back = self._take_reservations([op for op in settles if not op.reservation.leases], sweeping)
        lease_keys = {k for op in ops for k in _released(op)} | {
            (k, i) for op in reserves for k, i in op.current.items()
        }
        self._lock_leases(sorted(lease_keys))
        keys = {k for op in reserves for k in op.wanted} | {k for k, _ in lease_keys}
        keys |= {k for op in settles for k in op.reservation.counters} | {k for k, _ in given_back}
        self._lock(sorted(keys))
        # Settlements first, whole (reservation back and usage added together), then what leases give back,
        # then admissions in turn: an admission never sees a reservation given back without its usage.
        for key, amounts in given_back:
            for a in AMOUNTS:
                self.state[key][f"reserved_{a}"] -= amounts[a]
        for op in settles:
            for key in op.reservation.counters:
                for a in AMOUNTS:
                    self.state[key][f"used_{a}"] += op.used.of(a)
        for each in ops:
            for lease_key, amounts in _released(each).items():
                self._release(lease_key, amounts)
        for op in settles:
            for lease_key, amounts in op.consumed.items():
                self._consume(lease_key, amounts)
        expired = sum(1 for _, amounts in given_back if amounts["expired"])
        self._lock_buckets(
            sorted({(op.key_id, kind) for op in ops if isinstance(op, _Take | _Charge | _Refund) for kind in KINDS})
        )
        results = [self._apply_one(op, expired) for op in ops]
        self._write_back()
        return results

    def _settle_leased(self, settles: list[_Settle]) -> list[None]:
        """Settlements of admissions taken from live leases, alone in a batch (the common case far from every
        cap): what they used moves from the lease rows to `used_*` by relative updates summed per row, with
        no row read or locked first. Rows are written in the order every batch locks them in (lease rows,
        then counters by key), so two replicas never deadlock; a counter row that is gone is made again."""
        for op in settles:
            for key in op.reservation.counters:  # `state` holds what changes here, not the rows' values
                change = self.state.setdefault(key, dict.fromkeys(_COLUMNS, 0))
                for a in AMOUNTS:
                    change[f"used_{a}"] += op.used.of(a)
            for lease_key, amounts in op.consumed.items():
                self._consume(lease_key, amounts)
        self._write_consumed()
        self.conn.execute(
            _ADD_USAGE[self.conn.dialect.name],
            [
                {"scope": k[0], "quota_id": k[1], "period": k[2]}
                | {f"used_{a}": change[f"used_{a}"] for a in AMOUNTS}
                | {f"reserved_{a}": 0 for a in AMOUNTS}
                | {f"spent_{a}": -change[f"reserved_{a}"] for a in AMOUNTS}
                for k, change in sorted(self.state.items())
            ],
        )
        return [None] * len(settles)

    def _write_consumed(self) -> None:
        if self.consumed:
            self.conn.execute(
                _CONSUME_LEASE,
                [
                    {"k_reservation": i, "k_scope": k[0], "k_quota_id": k[1], "k_period": k[2]} | spent
                    for (k, i), spent in sorted(self.consumed.items())
                ],
            )

    def _lock_leases(self, keys: list[LeaseKey]) -> None:
        """This replica's lease rows named by these ops, locked; one that is not there expired (swept)."""
        found = {
            ((row["scope"], row["quota_id"], row["period"]), row["reservation"]): {a: row[a] for a in AMOUNTS}
            for start in range(0, len(keys), 500)
            for row in self.conn.execute(
                _LOCK_LEASES, {"keys": [(i, *k) for k, i in keys[start : start + 500]]}
            ).mappings()
        }
        self.gone = set(keys) - set(found)
        self.leases, self.leases_before = found, {k: dict(v) for k, v in found.items()}

    def _consume(self, lease_key: LeaseKey, amounts: dict[str, int]) -> None:
        """What a settled leased admission used leaves its lease row (now in `used_*`). A live lease's row is
        there and holds it (it holds what its admissions in flight hold), so it needs no reading: the batch's
        settlements on one lease add up to one relative update, unless this batch has the row locked already."""
        row, sign = self.leases.get(lease_key), -1
        if row is None:  # what to subtract, summed over the batch
            row, sign = self.consumed.setdefault(lease_key, dict.fromkeys(AMOUNTS, 0)), 1
        for a, amount in amounts.items():
            self.state[lease_key[0]][f"reserved_{a}"] -= amount
            row[a] += sign * amount

    def _release(self, lease_key: LeaseKey, amounts: dict[str, int]) -> None:
        """Leased budget back to the counter, never more than the lease row still holds."""
        row = self.leases.get(lease_key)
        if row is None:  # expired: the sweep gave it back already
            return
        for a, amount in amounts.items():
            freed = max(0, min(row[a], amount))
            row[a] -= freed
            self.state[lease_key[0]][f"reserved_{a}"] -= freed

    def _apply_one(self, op: _Op, expired: int) -> Any:
        if isinstance(op, _Reserve):
            return self._reserve(op)
        if isinstance(op, _Take):
            mine = self._given_back(op.key_id, op.limit, op.returned)
            try:
                taken = take(mine, op.limit, op.tokens, self.now)
            except RateLimited as exc:
                return exc
            slices = None if op.key_id in self.rates_granted else lease_slices(taken, op.tokens)
            if slices is not None:  # far from empty: this replica leases a share of what is left
                taken = {kind: (level - slices[kind], stamp) for kind, (level, stamp) in taken.items()}
                self.rates_granted[op.key_id] = (op.limit, slices)
            self.buckets.update({(op.key_id, kind): bucket for kind, bucket in taken.items()})
        elif isinstance(op, _Refund):
            self._given_back(op.key_id, op.limit, op.returned)
        elif isinstance(op, _Charge):
            key = (op.key_id, "rate.tokens")
            self.buckets[key] = charged(self.buckets[key], op.limit, op.tokens, self.now)
        return expired if isinstance(op, _Sweep) else None

    def _given_back(self, key_id: str, limit: RateLimit, returned: dict[str, float]) -> Buckets:
        """A rate lease's rest back in the key's buckets; the buckets that exist (a missing one is full)."""
        for kind, amount in returned.items():
            self.buckets[(key_id, kind)] = given_back(self.buckets[(key_id, kind)], limit, kind, amount, self.now)
        return {kind: bucket for kind in KINDS if (bucket := self.buckets[(key_id, kind)]) is not None}

    def _lock_buckets(self, keys: list[tuple[str, str]]) -> None:
        """The rate buckets of these keys, created when missing (NULL: full), locked in key order."""
        for row in self._locked_rows(_CREATE_BUCKETS, _LOCK_BUCKETS, keys, ("key_id", "kind")):
            level, stamp = row["level"], row["stamp"]
            self.buckets[(row["key_id"], row["kind"])] = None if level is None else (level, stamp)
        self.buckets_before = dict(self.buckets)

    def _locked_rows(self, create: dict[str, Any], lock: Any, keys: list[tuple], names: tuple[str, ...]) -> list:
        """Lock and read the rows of `keys` (in key order), creating the missing ones. Rows are never
        deleted, so a row this replica has seen is not created again (one statement less per batch); should
        one be gone anyway (a restored database), all are created and read again."""
        fresh = [k for k in keys if k not in self.known]
        for _ in range(2):
            if fresh:
                self.conn.execute(create[self.conn.dialect.name], [dict(zip(names, k, strict=True)) for k in fresh])
            rows = [
                row
                for start in range(0, len(keys), 500)  # bounded IN lists
                for row in self.conn.execute(lock, {"keys": keys[start : start + 500]}).mappings()
            ]
            if len(rows) == len(keys):
                break
            fresh = keys
        self.seen.update(keys)
        return rows

    def _take_reservations(self, settles: list[_Settle], sweep: bool) -> list[tuple[CounterKey, dict[str, Any]]]:
        """Delete the reservations being settled (and, when sweeping, the expired ones); what they held."""
        ids = [op.reservation.id for op in settles]
        if not ids and not sweep:
            return []
        statement = (_TAKE_BOTH if sweep else _TAKE_IDS) if ids else _TAKE_EXPIRED
        rows = self.conn.execute(statement, {"ids": ids, "now": self.now}).mappings()
        settled = set(ids)
        return [
            (
                (row["scope"], row["quota_id"], row["period"]),
                {**{a: row[a] for a in AMOUNTS}, "expired": row["reservation"] not in settled},
            )
            for row in rows
        ]

    def _lock(self, keys: list[CounterKey]) -> None:
        """Create the missing counter rows, then lock them all (in key order) and read them."""
        for row in self._locked_rows(_CREATE, _LOCK, keys, ("scope", "quota_id", "period")):
            self.state[(row["scope"], row["quota_id"], row["period"])] = {c: row[c] for c in _COLUMNS}
        self.before = {key: dict(values) for key, values in self.state.items()}

    def _reserve(self, op: _Reserve) -> Reservation | QuotaExceeded:
        keys = sorted(op.wanted)
        for key in keys:
            quota, resets_at = op.wanted[key]
            for a in AMOUNTS:
                cap = getattr(quota, a)
                taken = self.state[key][f"used_{a}"] + self.state[key][f"reserved_{a}"]
                if cap is not None and taken + op.want.of(a) > cap:
                    return QuotaExceeded(key[0], quota, a, taken, op.want.of(a), cap, resets_at, op.moment)
        rid = uuid.uuid4().hex
        for key in keys:
            for a in AMOUNTS:
                self.state[key][f"reserved_{a}"] += op.want.of(a)
            self.new_reservations.append(self._row(rid, key, {a: op.want.of(a) for a in AMOUNTS}))
            self._lease(op, key)
        return Reservation(rid, tuple(keys))

    def _lease(self, op: _Reserve, key: CounterKey) -> None:
        """Far from the cap (each capped amount has at least `LEASE_SHARE` times this request's worth left),
        lease this replica 1/`LEASE_SHARE` of what is left, once per counter and batch."""
        quota = op.wanted[key][0]
        capped = [a for a in AMOUNTS if getattr(quota, a) is not None]
        values = self.state[key]
        slices = {a: (getattr(quota, a) - values[f"used_{a}"] - values[f"reserved_{a}"]) // LEASE_SHARE for a in capped}
        if key in self.granted or not capped or any(slices[a] < max(op.want.of(a), 1) for a in capped):
            return
        lease_id = op.current.get(key)
        if lease_id is None or (key, lease_id) not in self.leases:
            lease_id = uuid.uuid4().hex
            self.leases[(key, lease_id)] = dict.fromkeys(AMOUNTS, 0)
        row = self.leases[(key, lease_id)]
        for a, amount in slices.items():
            row[a] += amount
            values[f"reserved_{a}"] += amount
        self.granted[key] = (lease_id, quota, slices)

    def _row(self, rid: str, key: CounterKey, amounts: dict[str, int]) -> dict[str, Any]:
        return {
            "reservation": rid,
            "scope": key[0],
            "quota_id": key[1],
            "period": key[2],
            "expires_at": self.now + self.ttl_s,
            **amounts,
        }

    def _write_back(self) -> None:
        changed = [
            {"k_scope": k[0], "k_quota_id": k[1], "k_period": k[2], **v}
            for k, v in sorted(self.state.items())
            if v != self.before[k]
        ]
        if changed:
            self.conn.execute(_WRITE_BACK, changed)
        for (key, lease_id), row in sorted(self.leases.items()):
            if (key, lease_id) not in self.leases_before:
                self.new_reservations.append(self._row(lease_id, key, row))
        leases = [
            {f"k_{c}": v for c, v in zip(("reservation", "scope", "quota_id", "period"), (i, *k), strict=True)}
            | self._row(i, k, row)
            for (k, i), row in sorted(self.leases.items())
            if (k, i) in self.leases_before and row != self.leases_before[(k, i)]
        ]
        self._write_consumed()
        emptied = [lease for lease in leases if not any(lease[a] for a in AMOUNTS)]
        if emptied:
            self.conn.execute(_DROP_LEASE, emptied)
        if len(emptied) < len(leases):
            self.conn.execute(_WRITE_LEASE, [lease for lease in leases if any(lease[a] for a in AMOUNTS)])
        if self.new_reservations:
            self.conn.execute(_RESERVE, self.new_reservations)
        refilled = [
            {"k_key_id": k[0], "k_kind": k[1], "level": b[0], "stamp": b[1]}
            for k, b in sorted(self.buckets.items())
            if b is not None and b != self.buckets_before[k]
        ]
        if refilled:
            self.conn.execute(_WRITE_BUCKETS, refilled)


# Built once: the hot path only binds values (no statement is constructed or cache-keyed per request).
_r = reservations.c
_TAKEN = (_r.scope, _r.quota_id, _r.period, _r.reservation, *(_r[a] for a in AMOUNTS))
_BY_ID = _r.reservation.in_(bindparam("ids", expanding=True))
_EXPIRED = _r.expires_at < bindparam("now")
_TAKE_IDS = delete(reservations).where(_BY_ID).returning(*_TAKEN)
_TAKE_EXPIRED = delete(reservations).where(_EXPIRED).returning(*_TAKEN)
_TAKE_BOTH = delete(reservations).where(or_(_BY_ID, _EXPIRED)).returning(*_TAKEN)
_CREATE = {
    "sqlite": sqlite.insert(counters).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(counters).on_conflict_do_nothing(),
}
_LOCK = (
    select(counters)
    .where(tuple_(counters.c.scope, counters.c.quota_id, counters.c.period).in_(bindparam("keys", expanding=True)))
    .order_by(counters.c.scope, counters.c.quota_id, counters.c.period)
    .with_for_update()
)
_WRITE_BACK = (
    update(counters)
    .where(
        and_(
            counters.c.scope == bindparam("k_scope"),
            counters.c.quota_id == bindparam("k_quota_id"),
            counters.c.period == bindparam("k_period"),
        )
    )
    .values({c: bindparam(c) for c in _COLUMNS})
)
_RESERVE = reservations.insert()
_LEASE_PK = tuple_(_r.reservation, _r.scope, _r.quota_id, _r.period)
_LOCK_LEASES = (
    select(reservations)
    .where(_LEASE_PK.in_(bindparam("keys", expanding=True)))
    .order_by(_r.reservation, _r.scope, _r.quota_id, _r.period)
    .with_for_update()
)
_BY_LEASE = and_(*(_r[c] == bindparam(f"k_{c}") for c in ("reservation", "scope", "quota_id", "period")))
_WRITE_LEASE = update(reservations).where(_BY_LEASE).values({c: bindparam(c) for c in (*AMOUNTS, "expires_at")})
_DROP_LEASE = delete(reservations).where(_BY_LEASE)
_CONSUME_LEASE = update(reservations).where(_BY_LEASE).values({a: _r[a] - bindparam(a) for a in AMOUNTS})


def _add_usage(insert: Any) -> Any:
    """Usage added to a counter and what it used taken off its reserved amounts, in place (the row made
    when it is gone: a restored database)."""
    c = counters.c
    return insert.on_conflict_do_update(
        index_elements=[c.scope, c.quota_id, c.period],
        set_={f"used_{a}": c[f"used_{a}"] + insert.excluded[f"used_{a}"] for a in AMOUNTS}
        | {f"reserved_{a}": c[f"reserved_{a}"] - bindparam(f"spent_{a}") for a in AMOUNTS},
    )


_ADD_USAGE = {"sqlite": _add_usage(sqlite.insert(counters)), "postgresql": _add_usage(postgresql.insert(counters))}
_CREATE_BUCKETS = {
    "sqlite": sqlite.insert(buckets).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(buckets).on_conflict_do_nothing(),
}
_LOCK_BUCKETS = (
    select(buckets)
    .where(tuple_(buckets.c.key_id, buckets.c.kind).in_(bindparam("keys", expanding=True)))
    .order_by(buckets.c.key_id, buckets.c.kind)
    .with_for_update()
)
_WRITE_BUCKETS = (
    update(buckets)
    .where(and_(buckets.c.key_id == bindparam("k_key_id"), buckets.c.kind == bindparam("k_kind")))
    .values(level=bindparam("level"), stamp=bindparam("stamp"))
)


async def outcome(future: Future) -> Any:
    """A ledger future's result, awaited; at once when it is done already (decided in memory from a lease),
    which saves the event loop a wake-up from another thread."""
    return future.result() if future.done() else await asyncio.wrap_future(future)


def _done(result: Any) -> Future:
    done: Future = Future()
    done.set_result(result)
    return done


def _released(op: _Op) -> dict[LeaseKey, dict[str, int]]:
    """Leased budget an operation gives back to the counters."""
    if isinstance(op, _Reserve | _Return):
        return op.returned
    return op.released if isinstance(op, _Settle) else {}


@lru_cache(maxsize=64)
def _window(minute: int, period: Period, zone: tzinfo) -> Window:
    """`window` of one minute (unix time // 60): days and months turn on whole minutes in every zone in use,
    so one computation serves every admission of that minute."""
    return window(datetime.fromtimestamp(minute * 60, UTC), period, zone)


@contextmanager
def _write(engine: Engine) -> Iterator[Connection]:
    """A write transaction (SQLite: BEGIN IMMEDIATE) on a new connection; commits on exit. A database
    failure becomes one `QuotaUnavailable` line."""
    try:
        with engine.connect() as conn:
            conn.execution_options(immediate=True)
            with conn.begin():
                yield conn
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise QuotaUnavailable(f"quota counters unavailable: {cause}") from exc
