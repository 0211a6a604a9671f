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

The per-minute rate limits (token buckets, `policy.ratelimit`) are kept here too, in `rate_buckets`, by the
same writer: the gateway's `PolicyEngine.limiter` is its ledger, so every replica draws on one bucket.
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
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, and_, bindparam, delete, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from appliance.errors import ApplianceError
from appliance.policy.errors import RateLimited
from appliance.policy.ratelimit import KINDS, charged, take
from appliance.policy.schema import Quota, RateLimit
from appliance.usage.periods import window
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
        self.resets_at = resets_at
        self.retry_after = max(0.0, (resets_at - now).total_seconds())
        super().__init__(
            f"quota {quota.id} ({scope}: {amount.replace('_', ' ')} per {quota.period}) exceeded: "
            f"{taken} of {cap} used or reserved and this request needs {wanted}; it resets at "
            f"{resets_at.isoformat()}"
        )


class QuotaUnavailable(ApplianceError):
    """The counters cannot be read or written: admissions that count against a quota fail closed."""


@dataclass(frozen=True)
class Reservation:
    id: str
    counters: tuple[CounterKey, ...]


@dataclass(kw_only=True)
class _Op:
    future: Future = field(default_factory=Future)


@dataclass(kw_only=True)
class _Reserve(_Op):
    wanted: dict[CounterKey, tuple[Quota, datetime]]
    want: Amounts
    moment: datetime


@dataclass(kw_only=True)
class _Settle(_Op):
    reservation: Reservation
    used: Amounts


@dataclass(kw_only=True)
class _Sweep(_Op):
    pass


@dataclass(kw_only=True)
class _Take(_Op):
    key_id: str
    limit: RateLimit
    tokens: int


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
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._known: set[tuple] = set()  # counter and bucket rows known to exist (only the writer uses it)

    # -- the API: futures for asyncio callers, blocking calls for everyone else -------------------------
    def reserve_future(self, quotas: Iterable[tuple[str, Quota]], want: Amounts) -> Future:
        """A future of the `Reservation` (None when no quota applies), or of `QuotaExceeded`."""
        moment = datetime.fromtimestamp(self._clock(), UTC)
        wanted: dict[CounterKey, tuple[Quota, datetime]] = {}
        for scope, quota in quotas:
            w = window(moment, quota.period, self._zone)
            wanted[(scope, quota.id, w.label)] = (quota, w.resets_at)
        if not wanted:
            return _done()
        return self._submit(_Reserve(wanted=wanted, want=want, moment=moment))

    async def reserve_async(self, quotas: Iterable[tuple[str, Quota]], want: Amounts) -> Reservation | None:
        """`reserve_future` awaited; a caller cancelled while it waits (its client left) gives back what
        the writer reserved for it all the same."""
        future = self.reserve_future(quotas, want)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(self._give_back)
            raise

    def _give_back(self, future: Future) -> None:
        if not future.cancelled() and future.exception() is None and future.result() is not None:
            self.settle_future(future.result(), Amounts())

    def settle_future(self, reservation: Reservation, used: Amounts) -> Future:
        """Give the reservation back (unless it expired meanwhile) and count what was used."""
        return self._submit(_Settle(reservation=reservation, used=used))

    def reserve(self, quotas: Iterable[tuple[str, Quota]], want: Amounts) -> Reservation | None:
        return self.reserve_future(quotas, want).result()

    def settle(self, reservation: Reservation, used: Amounts) -> None:
        self.settle_future(reservation, used).result()

    def take_future(self, key_id: str, limit: RateLimit, tokens: int) -> Future:
        """Per-minute limits: a future of taking one request and `tokens` from the key's buckets in the
        database (None), or of `RateLimited`."""
        if limit.requests_per_minute is None and limit.tokens_per_minute is None:
            return _done()
        return self._submit(_Take(key_id=key_id, limit=limit, tokens=tokens))

    def acquire(self, key_id: str, limit: RateLimit, tokens: int) -> None:
        """`take_future`, waited for: with `charge`, the ledger is a `policy.Limiter`."""
        self.take_future(key_id, limit, tokens).result()

    def charge(self, key_id: str, limit: RateLimit, tokens: int) -> None:
        """Tokens used beyond what `acquire` took; queued, not waited for (it cannot be refused)."""
        if limit.tokens_per_minute is not None and tokens > 0:
            self._submit(_Charge(key_id=key_id, limit=limit, tokens=tokens))

    def release_stale(self) -> int:
        """Give back every reservation past its expiry (its request's replica died); returns how many rows."""
        return self._submit(_Sweep()).result()

    def close(self) -> None:
        """Commit what is queued (settlements in flight) before the database goes away."""
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
                    if wait <= 0 or not all(isinstance(op, _Settle | _Charge) for op in ops):
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
        except Exception as exc:  # noqa: BLE001 - every waiter hears of it; the writer carries on
            log.error("quota batch failed", operations=len(ops), error=str(exc)[:300])
            failure = exc if isinstance(exc, QuotaUnavailable) else QuotaUnavailable(f"quota counters: {exc}")
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

    def apply(self, ops: list[_Op], sweep: bool) -> list[Any]:
        settles = [op for op in ops if isinstance(op, _Settle)]
        sweeping = sweep or any(isinstance(op, _Sweep) for op in ops)
        given_back = self._take_reservations(settles, sweeping)
        keys = {k for op in ops if isinstance(op, _Reserve) for k in op.wanted}
        keys |= {k for op in settles for k in op.reservation.counters} | {k for k, _ in given_back}
        self._lock(sorted(keys))
        # Settlements first, whole (reservation back and usage added together), then admissions in turn:
        # an admission never sees a reservation given back without its usage.
        for key, amounts in given_back:
            for a in AMOUNTS:
                self.state[key][f"reserved_{a}"] -= amounts[a]
        for op in settles:
            for key in op.reservation.counters:
                for a in AMOUNTS:
                    self.state[key][f"used_{a}"] += op.used.of(a)
        expired = sum(1 for _, amounts in given_back if amounts["expired"])
        self._lock_buckets(
            sorted({(op.key_id, kind) for op in ops if isinstance(op, _Take | _Charge) for kind in KINDS})
        )
        results = [self._apply_one(op, expired) for op in ops]
        self._write_back()
        return results

    def _apply_one(self, op: _Op, expired: int) -> Any:
        if isinstance(op, _Reserve):
            return self._reserve(op)
        if isinstance(op, _Take):
            mine = {kind: bucket for kind in KINDS if (bucket := self.buckets[(op.key_id, kind)]) is not None}
            try:
                taken = take(mine, op.limit, op.tokens, self.now)
            except RateLimited as exc:
                return exc
            self.buckets.update({(op.key_id, kind): bucket for kind, bucket in taken.items()})
        elif isinstance(op, _Charge):
            key = (op.key_id, "rate.tokens")
            self.buckets[key] = charged(self.buckets[key], op.limit, op.tokens, self.now)
        return expired if isinstance(op, _Sweep) else None

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
            self.new_reservations.append(
                {
                    "reservation": rid,
                    "scope": key[0],
                    "quota_id": key[1],
                    "period": key[2],
                    "expires_at": self.now + self.ttl_s,
                    **{a: op.want.of(a) for a in AMOUNTS},
                }
            )
        return Reservation(rid, tuple(keys))

    def _write_back(self) -> None:
        changed = [
            {"k_scope": k[0], "k_quota_id": k[1], "k_period": k[2], **v}
            for k, v in sorted(self.state.items())
            if v != self.before[k]
        ]
        if changed:
            self.conn.execute(_WRITE_BACK, changed)
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


def _done() -> Future:
    done: Future = Future()
    done.set_result(None)
    return done


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
