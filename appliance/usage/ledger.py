"""Quota counters in the appliance's database: reserve at admission, settle at the outcome.

A request reserves what it may use (its prompt and its `max_tokens`, and one request) against every quota
it counts against, in one short transaction that first locks the counter rows (SQLite: `BEGIN IMMEDIATE`;
PostgreSQL: `SELECT ... FOR UPDATE`, rows in key order so two admissions never deadlock). A quota is never
granted past its cap counting what is reserved, so concurrent requests on any number of gateway replicas
overshoot a quota by at most what their reservations leave unused, never more. At the outcome the
reservation is given back and the usage the audit record holds is added. A replica that dies mid-request
never settles: its reservations expire after `quota_reservation_ttl_s` and any admission sweeps them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from sqlalchemy import Connection, Engine, and_, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from appliance.errors import ApplianceError
from appliance.policy.schema import Quota
from appliance.usage.periods import window
from appliance.usage.tables import AMOUNTS, counters, reservations

SWEEP_EVERY_S = 60.0  # how often one replica looks for expired reservations
CounterKey = tuple[str, str, str]  # scope, quota id, period label


@dataclass(frozen=True)
class Amounts:
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0

    def of(self, name: str) -> int:
        return int(getattr(self, name))


class QuotaExceeded(ApplianceError):
    """A request that would take a quota past its cap; names the quota and when it resets."""

    def __init__(self, scope: str, quota: Quota, amount: str, taken: int, wanted: int, cap: int,
                 resets_at: datetime, now: datetime) -> None:
        self.rule_id = f"quota.{quota.id}"
        self.resets_at = resets_at
        self.retry_after = max(0.0, (resets_at - now).total_seconds())
        super().__init__(f"quota {quota.id} ({scope}: {amount.replace('_', ' ')} per {quota.period}) exceeded: "
                         f"{taken} of {cap} used or reserved and this request needs {wanted}; it resets at "
                         f"{resets_at.isoformat()}")


class QuotaUnavailable(ApplianceError):
    """The counters cannot be read or written: admissions that count against a quota fail closed."""


@dataclass(frozen=True)
class Reservation:
    id: str
    counters: tuple[CounterKey, ...]


class QuotaLedger:
    def __init__(self, engine: Engine, zone: tzinfo, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._engine, self._zone, self._ttl_s, self._clock = engine, zone, ttl_s, clock
        self._last_sweep = float("-inf")
        self._sweep_lock = threading.Lock()

    def reserve(self, quotas: Iterable[tuple[str, Quota]], want: Amounts) -> Reservation | None:
        """Reserve `want` against every quota, or raise `QuotaExceeded` and reserve nothing."""
        now = self._clock()
        moment = datetime.fromtimestamp(now, UTC)
        wanted: dict[CounterKey, tuple[Quota, datetime]] = {}
        for scope, quota in quotas:
            w = window(moment, quota.period, self._zone)
            wanted[(scope, quota.id, w.label)] = (quota, w.resets_at)
        if not wanted:
            return None
        self._sweep_if_due(now)
        keys = sorted(wanted)
        rid = uuid.uuid4().hex
        with _write(self._engine) as conn:
            rows = _lock_counters(conn, keys)
            for key in keys:
                quota, resets_at = wanted[key]
                for amount in AMOUNTS:
                    cap = getattr(quota, amount)
                    taken = rows[key][f"used_{amount}"] + rows[key][f"reserved_{amount}"]
                    if cap is not None and taken + want.of(amount) > cap:
                        raise QuotaExceeded(key[0], quota, amount, taken, want.of(amount), cap, resets_at, moment)
            for key in keys:
                conn.execute(update(counters).where(_counter(key)).values(
                    {f"reserved_{a}": counters.c[f"reserved_{a}"] + want.of(a) for a in AMOUNTS}))
            conn.execute(reservations.insert(), [
                {"reservation": rid, "scope": s, "quota_id": q, "period": p, "expires_at": now + self._ttl_s,
                 **{a: want.of(a) for a in AMOUNTS}} for s, q, p in keys])
        return Reservation(rid, tuple(keys))

    def settle(self, reservation: Reservation, used: Amounts) -> None:
        """Give the reservation back (unless it expired meanwhile) and count what was used."""
        with _write(self._engine) as conn:
            held = {(r.scope, r.quota_id, r.period): r._mapping for r in conn.execute(
                delete(reservations).where(reservations.c.reservation == reservation.id)
                .returning(reservations.c.scope, reservations.c.quota_id, reservations.c.period,
                           *(reservations.c[a] for a in AMOUNTS)))}
            for key in sorted(reservation.counters):
                back = held.get(key)
                conn.execute(update(counters).where(_counter(key)).values({
                    **{f"used_{a}": counters.c[f"used_{a}"] + used.of(a) for a in AMOUNTS},
                    **({f"reserved_{a}": counters.c[f"reserved_{a}"] - back[a] for a in AMOUNTS} if back else {})}))

    def release_stale(self) -> int:
        """Give back every reservation past its expiry (its request's replica died); returns how many rows."""
        now = self._clock()
        with _write(self._engine) as conn:
            stale = conn.execute(select(reservations).where(reservations.c.expires_at < now)
                                 .order_by(reservations.c.scope, reservations.c.quota_id, reservations.c.period)
                                 .with_for_update()).mappings().all()
            for row in stale:
                key = (row["scope"], row["quota_id"], row["period"])
                conn.execute(update(counters).where(_counter(key)).values(
                    {f"reserved_{a}": counters.c[f"reserved_{a}"] - row[a] for a in AMOUNTS}))
            if stale:
                conn.execute(delete(reservations).where(reservations.c.expires_at < now))
        return len(stale)

    def counters(self, scope: str) -> dict[tuple[str, str], dict[str, int]]:
        """(quota id, period) -> used_* and reserved_* of one scope (key:<id> or group:<name>)."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(counters).where(counters.c.scope == scope)).mappings().all()
        return {(r["quota_id"], r["period"]): {k: v for k, v in r.items() if k.startswith(("used_", "reserved_"))}
                for r in rows}

    def _sweep_if_due(self, now: float) -> None:
        with self._sweep_lock:
            if now - self._last_sweep < SWEEP_EVERY_S:
                return
            self._last_sweep = now
        self.release_stale()


def _counter(key: CounterKey):
    scope, quota_id, period = key
    return and_(counters.c.scope == scope, counters.c.quota_id == quota_id, counters.c.period == period)


def _lock_counters(conn: Connection, keys: list[CounterKey]) -> dict[CounterKey, dict[str, int]]:
    """Create the missing counter rows, then lock them all (in key order) and read them."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(insert(counters).on_conflict_do_nothing(),
                 [{"scope": s, "quota_id": q, "period": p} for s, q, p in keys])
    pk = tuple_(counters.c.scope, counters.c.quota_id, counters.c.period)
    rows = conn.execute(select(counters).where(pk.in_(keys)).order_by(counters.c.scope, counters.c.quota_id,
                                                                      counters.c.period).with_for_update())
    return {(r["scope"], r["quota_id"], r["period"]): dict(r) for r in rows.mappings()}


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
