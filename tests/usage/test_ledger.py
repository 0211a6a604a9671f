"""Quota counters in the database: concurrent admissions, restarts, day and month boundaries, expiry."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.exc import SQLAlchemyError

from appliance.db import make_engine
from appliance.policy import RateLimited
from appliance.policy.schema import Quota, RateLimit
from appliance.usage import Amounts, QuotaExceeded, QuotaLedger, QuotaUnavailable
from appliance.usage.ledger import LEASE_SHARE, _Batch
from appliance.usage.periods import site_zone
from appliance.usage.tables import counters

BERLIN = site_zone("Europe/Berlin")


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment.timestamp()


@pytest.fixture
def engines(database_url):
    made: list[Engine] = []

    def make() -> Engine:
        made.append(make_engine(database_url))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


def quota(**caps) -> Quota:
    return Quota.model_validate({"id": "lab.daily", "period": "day", **caps})


def in_threads(client, count: int) -> None:
    """`client(i)` for i in range(count), all at once, each in its own thread (concurrent gateway clients);
    the first assertion a client failed is raised here."""
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            client(i)
        except BaseException as exc:  # a thread's failure would otherwise only be printed
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]


def test_concurrent_admissions_on_two_replicas_never_pass_the_cap(engines):
    """32 clients through two ledgers (two gateway replicas, each its own engine) on one key: what is granted
    never exceeds the quota, and after every settle nothing stays reserved."""
    cap, each = 1000, 60
    replicas = [QuotaLedger(engines(), UTC, 3600) for _ in range(2)]
    scoped = [("key:k1", quota(output_tokens=cap))]
    granted, refused, lock = [], [], threading.Lock()

    def client(i: int) -> None:
        ledger = replicas[i % 2]
        for _ in range(4):
            try:
                reservation = ledger.reserve(scoped, Amounts(0, each, 1))
            except QuotaExceeded:
                with lock:
                    refused.append(i)
                continue
            assert reservation is not None
            in_flight = ledger.counters("key:k1")
            assert all(c["used_output_tokens"] + c["reserved_output_tokens"] <= cap for c in in_flight.values())
            ledger.settle(reservation, Amounts(5, each - i % 3, 1))  # some use less than they reserved
            with lock:
                granted.append(each - i % 3)

    in_threads(client, 32)
    (counter,) = replicas[0].counters("key:k1").values()
    assert counter["used_output_tokens"] == sum(granted) <= cap
    assert counter["used_requests"] == len(granted) >= cap // each
    assert refused and counter["reserved_output_tokens"] == counter["reserved_requests"] == 0


def test_counters_survive_a_restart(engines):
    scoped = [("group:lab", quota(requests=2))]
    first = QuotaLedger(engines(), UTC, 3600)
    first.settle(first.reserve(scoped, Amounts(1, 1, 1)), Amounts(1, 1, 1))
    restarted = QuotaLedger(engines(), UTC, 3600)
    restarted.reserve(scoped, Amounts(1, 1, 1))
    with pytest.raises(QuotaExceeded, match=r"quota lab\.daily \(group:lab: requests per day\)"):
        restarted.reserve(scoped, Amounts(1, 1, 1))


def test_day_and_month_boundaries_in_the_site_time_zone(engines):
    """Berlin: a day ends at local midnight (23:00 UTC in winter), a month on the 1st; the day quota starts
    afresh, the month quota does not until the month turns."""
    clock = Clock(datetime(2026, 12, 30, 22, 59, 59, tzinfo=UTC))  # 23:59:59 in Berlin
    ledger = QuotaLedger(engines(), BERLIN, 90 * 86400, clock=clock)  # nothing expires here
    day = quota(requests=1)
    month = Quota(id="lab.monthly", period="month", requests=2)
    ledger.reserve([("key:k", day), ("key:k", month)], Amounts(0, 0, 1))
    with pytest.raises(QuotaExceeded) as refused:
        ledger.reserve([("key:k", day)], Amounts(0, 0, 1))
    assert refused.value.resets_at == datetime(2026, 12, 31, tzinfo=BERLIN)
    assert refused.value.retry_after == 1.0 and "resets at 2026-12-31T00:00:00+01:00" in str(refused.value)
    clock.set(datetime(2026, 12, 30, 23, 0, 0, tzinfo=UTC))  # the next day in Berlin, the same day in UTC
    ledger.reserve([("key:k", day), ("key:k", month)], Amounts(0, 0, 1))
    clock.set(datetime(2026, 12, 31, 12, 0, tzinfo=UTC))
    with pytest.raises(QuotaExceeded, match="lab.monthly") as refused:
        ledger.reserve([("key:k", month)], Amounts(0, 0, 1))
    assert refused.value.resets_at == datetime(2027, 1, 1, tzinfo=BERLIN)
    clock.set(datetime(2026, 12, 31, 23, 0, tzinfo=UTC))  # January 1st in Berlin
    ledger.reserve([("key:k", day), ("key:k", month)], Amounts(0, 0, 1))
    assert set(ledger.counters("key:k")) == {
        ("lab.daily", "2026-12-30"),
        ("lab.daily", "2026-12-31"),
        ("lab.daily", "2027-01-01"),
        ("lab.monthly", "2026-12"),
        ("lab.monthly", "2027-01"),
    }


def test_a_crashed_replicas_reservation_expires(engines):
    clock = Clock(datetime(2026, 12, 1, 12, tzinfo=UTC))
    scoped = [("key:k", quota(output_tokens=100))]
    crashed = QuotaLedger(engines(), UTC, 600, clock=clock)
    crashed.reserve(scoped, Amounts(0, 100, 1))  # never settled: its replica died
    survivor = QuotaLedger(engines(), UTC, 600, clock=clock)
    with pytest.raises(QuotaExceeded):
        survivor.reserve(scoped, Amounts(0, 1, 1))
    clock.now += 601
    assert survivor.release_stale() == 1
    survivor.reserve(scoped, Amounts(0, 100, 1))


def test_a_settle_after_expiry_still_counts_the_usage_once(engines):
    clock = Clock(datetime(2026, 12, 1, 12, tzinfo=UTC))
    ledger = QuotaLedger(engines(), UTC, 600, clock=clock)
    reservation = ledger.reserve([("key:k", quota(output_tokens=100))], Amounts(0, 100, 1))
    clock.now += 601
    ledger.release_stale()
    ledger.settle(reservation, Amounts(3, 40, 1))
    (counter,) = ledger.counters("key:k").values()
    assert (counter["used_output_tokens"], counter["reserved_output_tokens"]) == (40, 0)


def test_a_refused_admission_reserves_nothing(engines):
    ledger = QuotaLedger(engines(), UTC, 600)
    scoped = [("key:k", quota(output_tokens=100)), ("group:g", quota(input_tokens=10))]
    with pytest.raises(
        QuotaExceeded,
        match=r"group:g: input tokens per day\) exceeded: 0 of 10 used or "
        r"reserved and this request needs 11",
    ):
        ledger.reserve(scoped, Amounts(11, 50, 1))
    assert all(c["reserved_output_tokens"] == 0 for c in ledger.counters("key:k").values())


def _client_process(url: str, cap: int, each: int, rounds: int) -> list[int]:
    """One gateway replica in its own process: reserve, settle with a little less, repeat."""
    engine = make_engine(url)
    ledger = QuotaLedger(engine, UTC, 3600)
    granted = []
    try:
        for _ in range(rounds):
            try:
                reservation = ledger.reserve([("group:lab", quota(output_tokens=cap))], Amounts(0, each, 1))
            except QuotaExceeded:
                continue
            assert reservation is not None
            ledger.settle(reservation, Amounts(0, each - 1, 1))
            granted.append(each - 1)
    finally:
        ledger.close()
        engine.dispose()
    return granted


def test_replicas_in_separate_processes_never_pass_the_cap(database_url):
    cap, each = 500, 40
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_client_process, [(database_url, cap, each, 8)] * 4)
    engine = make_engine(database_url)
    try:
        (counter,) = QuotaLedger(engine, UTC, 3600).counters("group:lab").values()
    finally:
        engine.dispose()
    granted = [g for r in results for g in r]
    assert counter["used_output_tokens"] == sum(granted) <= cap and len(granted) == cap // each
    assert counter["reserved_output_tokens"] == 0


def test_rate_buckets_are_shared_by_replicas_and_refill(engines):
    clock = Clock(datetime(2026, 12, 1, 12, tzinfo=UTC))
    first, second = (QuotaLedger(engines(), UTC, 600, clock=clock) for _ in range(2))
    limit = RateLimit(requests_per_minute=2, tokens_per_minute=100)
    first.acquire("k", limit, 0)
    second.acquire("k", limit, 0)
    with pytest.raises(RateLimited) as refused:
        first.acquire("k", limit, 0)
    assert (refused.value.rule_id, refused.value.retry_after) == ("rate.requests", 30)
    clock.now += 30
    second.acquire("k", limit, 0)
    second.charge("k", limit, 150)  # a long completion, paid after the fact: the bucket goes into debt
    second.close()  # charges are not waited for: close commits what is queued
    clock.now += 30  # 100 - 150 + 50: the bucket is empty
    with pytest.raises(RateLimited, match=r"rate\.tokens"):
        first.acquire("k", limit, 10)
    restarted = QuotaLedger(engines(), UTC, 600, clock=clock)
    with pytest.raises(RateLimited, match=r"rate\.tokens"):
        restarted.acquire("k", limit, 10)
    clock.now += 6
    restarted.acquire("k", limit, 10)


def test_a_counter_row_gone_from_under_the_ledger_is_made_again(engines):
    """Rows a replica has seen are not created again; if one vanishes anyway (a restored database), the
    admission still works instead of failing closed for ever."""
    ledger = QuotaLedger(engines(), UTC, 600)
    scoped = [("key:k", quota(requests=5))]
    ledger.settle(ledger.reserve(scoped, Amounts(0, 0, 1)), Amounts(0, 0, 1))
    with engines().begin() as conn:
        conn.execute(counters.delete())
    ledger.settle(ledger.reserve(scoped, Amounts(0, 0, 1)), Amounts(0, 0, 1))
    (counter,) = ledger.counters("key:k").values()
    assert (counter["used_requests"], counter["reserved_requests"]) == (1, 0)


def test_an_admission_whose_caller_leaves_gives_its_reservation_back(engines):
    ledger = QuotaLedger(engines(), UTC, 600)
    scoped = [("key:k", quota(output_tokens=100))]

    async def leave_at_once() -> None:
        task = asyncio.ensure_future(ledger.reserve_async(scoped, Amounts(0, 100, 1)))
        await asyncio.sleep(0)  # submitted to the writer, then the client is gone
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    for _ in range(20):
        asyncio.run(leave_at_once())
    ledger.close()  # commits what is queued
    assert all(c["reserved_output_tokens"] == 0 for c in ledger.counters("key:k").values())
    assert ledger.reserve(scoped, Amounts(0, 100, 1)) is not None


def test_far_from_the_cap_admissions_are_decided_in_memory_and_settle_to_the_rows(engines):
    """The first admission leases this replica a slice of what is left; the next ones fit in it and touch no
    database at all; their settlements still count every token, and `close` gives the lease back."""
    engine = engines()
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    ledger = QuotaLedger(engine, UTC, 3600)
    month = Quota(id="lab.monthly", period="month", requests=10_000)
    scoped = [("key:k", quota(output_tokens=1_000_000)), ("group:g", month)]
    first = ledger.reserve(scoped, Amounts(0, 100, 1))
    statements.clear()
    later = [ledger.reserve(scoped, Amounts(0, 100, 1)) for _ in range(20)]
    assert statements == []
    for reservation in [first, *later]:
        assert reservation is not None
        ledger.settle(reservation, Amounts(7, 60, 1))
    (key,) = ledger.counters("key:k").values()
    assert (key["used_output_tokens"], key["used_requests"]) == (21 * 60, 21)
    assert key["used_output_tokens"] + key["reserved_output_tokens"] <= 1_000_000
    ledger.close()
    (key,) = ledger.counters("key:k").values()
    (group,) = ledger.counters("group:g").values()
    assert (key["reserved_output_tokens"], key["reserved_requests"], group["reserved_requests"]) == (0, 0, 0)
    assert group["used_requests"] == 21


def test_leased_admissions_on_two_replicas_never_pass_the_cap(engines):
    """Far more demand than budget through two replicas that lease: never past the cap, and what is refused
    early is bounded by the other replica's lease (1/LEASE_SHARE of what was left when it was taken)."""
    cap, each = 20_000, 100
    replicas = [QuotaLedger(engines(), UTC, 3600) for _ in range(2)]
    scoped = [("key:k1", quota(output_tokens=cap))]
    granted, lock = [], threading.Lock()

    def client(i: int) -> None:
        ledger = replicas[i % 2]
        for n in range(30):
            try:
                reservation = ledger.reserve(scoped, Amounts(0, each, 1))
            except QuotaExceeded:
                continue
            assert reservation is not None
            if n % 5 == 0:
                for c in ledger.counters("key:k1").values():
                    assert c["used_output_tokens"] + c["reserved_output_tokens"] <= cap
            ledger.settle(reservation, Amounts(0, each, 1))
            with lock:
                granted.append(each)

    in_threads(client, 32)
    for ledger in replicas:
        ledger.close()
    (counter,) = replicas[0].counters("key:k1").values()
    assert counter["used_output_tokens"] == sum(granted) <= cap
    assert sum(granted) >= cap - 2 * (cap // LEASE_SHARE) - 2 * each
    assert counter["reserved_output_tokens"] == counter["reserved_requests"] == 0


def test_a_crashed_replicas_lease_expires_and_its_late_settlement_counts_once(engines):
    clock = Clock(datetime(2026, 12, 1, 12, tzinfo=UTC))
    scoped = [("key:k", quota(output_tokens=100_000))]
    crashed = QuotaLedger(engines(), UTC, 600, clock=clock)
    crashed.reserve(scoped, Amounts(0, 100, 1))  # decided by the writer, which leases a slice
    leased = crashed.reserve(scoped, Amounts(0, 100, 1))  # decided in memory
    assert leased is not None and leased.leases
    survivor = QuotaLedger(engines(), UTC, 600, clock=clock)
    (counter,) = survivor.counters("key:k").values()
    assert counter["reserved_output_tokens"] > 200
    clock.now += 601
    assert survivor.release_stale() == 2  # the reservation and the lease
    crashed.settle(leased, Amounts(0, 40, 1))  # it came back after all: the usage counts, nothing is freed twice
    (counter,) = survivor.counters("key:k").values()
    assert (counter["used_output_tokens"], counter["reserved_output_tokens"]) == (40, 0)


def test_a_lowered_cap_applies_to_a_replica_that_holds_a_lease(engines):
    """A reload that lowers a cap: the lease taken under the old caps admits nothing more; the admission is
    decided against the rows, refused, and names what is left."""
    ledger = QuotaLedger(engines(), UTC, 600)
    for _ in range(2):
        reservation = ledger.reserve([("key:k", quota(output_tokens=100_000))], Amounts(0, 64, 1))
        assert reservation is not None
        ledger.settle(reservation, Amounts(0, 64, 1))
    with pytest.raises(QuotaExceeded, match=r"128 of 150 used or reserved .* 22 left \(a request with max_tokens"):
        ledger.reserve([("key:k", quota(output_tokens=150))], Amounts(0, 64, 1))
    (counter,) = ledger.counters("key:k").values()
    assert (counter["used_output_tokens"], counter["reserved_output_tokens"]) == (128, 0)


def test_leased_budget_given_back_by_a_failed_batch_is_released_later(engines, monkeypatch):
    """A batch that fails after an admission gave back its replica's lease: the lease row still holds that
    budget, so it is owed and released by a later batch (here `close`), never left reserved."""
    ledger = QuotaLedger(engines(), UTC, 600)
    scoped = [("key:k", quota(output_tokens=100_000))]
    for _ in range(2):  # the writer leases a slice; the second fits in it
        reservation = ledger.reserve(scoped, Amounts(0, 64, 1))
        assert reservation is not None
        ledger.settle(reservation, Amounts(0, 64, 1))
    real = _Batch.apply

    def fail(self, ops, sweep):
        raise SQLAlchemyError("the database went away")

    monkeypatch.setattr(_Batch, "apply", fail)
    with pytest.raises(QuotaUnavailable):
        ledger.reserve([("key:k", quota(output_tokens=90_000))], Amounts(0, 64, 1))  # other caps: to the writer
    monkeypatch.setattr(_Batch, "apply", real)
    ledger.close()
    (counter,) = ledger.counters("key:k").values()
    assert (counter["used_output_tokens"], counter["reserved_output_tokens"]) == (128, 0)


def _row_writes(engine: Engine) -> dict[str, int]:
    """Rows each kind of statement names (an executemany counts each parameter set), and commits."""
    seen = {"UPDATE usage_reservations": 0, "UPDATE usage_counters": 0, "INSERT INTO usage_counters": 0}
    seen |= {"SELECT": 0, "commit": 0}

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        for kind in seen:
            if statement.startswith(kind):
                seen[kind] += len(parameters) if executemany else 1

    event.listen(engine, "before_cursor_execute", count)
    event.listen(engine, "commit", lambda conn: seen.__setitem__("commit", seen["commit"] + 1))
    return seen


def test_settlements_of_one_lease_cost_one_update_per_row_per_batch(engines):
    """Leased admissions settled together: the batch writes each counter row and each lease row once, however
    many settlements it carries (not one lease-row update per settlement), reads no row first, and still
    counts every token (a counter row that is gone, as after a restore, is made again)."""
    engine = engines()
    ledger = QuotaLedger(engine, UTC, 3600)
    month = Quota(id="lab.monthly", period="month", requests=10_000)
    scoped = [("key:k", quota(output_tokens=1_000_000)), ("group:g", month)]
    first = ledger.reserve(scoped, Amounts(0, 100, 1))  # the writer leases a slice of both counters
    assert first is not None
    ledger.settle(first, Amounts(0, 100, 1))
    leased = [ledger.reserve(scoped, Amounts(0, 100, 1)) for _ in range(30)]
    writes = _row_writes(engine)
    pending = [ledger.settle_future(reservation, Amounts(3, 50, 1)) for reservation in leased if reservation]
    for settled in pending:
        settled.result()
    assert len(pending) == 30 and writes["commit"] < 30  # settlements wait for company: batches
    assert writes["UPDATE usage_reservations"] <= 2 * writes["commit"]  # two lease rows
    assert writes["UPDATE usage_counters"] + writes["INSERT INTO usage_counters"] <= 2 * writes["commit"]
    assert writes["SELECT"] == 0
    (key,) = ledger.counters("key:k").values()
    (group,) = ledger.counters("group:g").values()
    assert (key["used_output_tokens"], key["used_input_tokens"], group["used_requests"]) == (100 + 30 * 50, 90, 31)
    with engine.begin() as conn:
        conn.execute(counters.delete().where(counters.c.scope == "group:g"))
    last = ledger.reserve(scoped, Amounts(0, 100, 1))
    assert last is not None and last.leases
    ledger.settle(last, Amounts(0, 10, 1))
    assert [c["used_requests"] for c in ledger.counters("group:g").values()] == [1]
    ledger.close()
    (key,) = ledger.counters("key:k").values()
    assert (key["reserved_output_tokens"], key["reserved_requests"]) == (0, 0)


def test_rate_admissions_far_from_the_limit_need_no_transaction(engines):
    """The writer leases this replica a share of the key's buckets: the admissions and token charges that fit
    it are decided in memory, so a hundred requests take a handful of transactions, not a hundred."""
    engine = engines()
    ledger = QuotaLedger(engine, UTC, 600)
    limit = RateLimit(requests_per_minute=100_000, tokens_per_minute=10_000_000)
    writes = _row_writes(engine)
    for _ in range(100):
        ledger.acquire("k", limit, 0)
        ledger.charge("k", limit, 120)
    assert writes["commit"] <= 2


def test_rate_limits_leased_by_two_replicas_are_never_exceeded(engines):
    """32 clients on two replicas at one instant (no refill): the key is never admitted past its per-minute
    limit, what the leases held comes back at close, and what is refused early is bounded by the leases."""
    clock = Clock(datetime(2026, 12, 1, 12, tzinfo=UTC))
    replicas = [QuotaLedger(engines(), UTC, 600, clock=clock) for _ in range(2)]
    limit = RateLimit(requests_per_minute=400)
    admitted, lock = [], threading.Lock()

    def client(i: int) -> None:
        for _ in range(20):
            try:
                replicas[i % 2].acquire("k", limit, 0)
            except RateLimited:
                continue
            with lock:
                admitted.append(i)

    in_threads(client, 32)
    assert 400 - 2 * 400 / LEASE_SHARE - 2 <= len(admitted) <= 400
    for ledger in replicas:
        ledger.close()  # the leases' rest goes back to the bucket
    late = QuotaLedger(engines(), UTC, 600, clock=clock)
    more = 0
    with contextlib.suppress(RateLimited):
        for _ in range(400):
            late.acquire("k", limit, 0)
            more += 1
    late.close()
    assert len(admitted) + more <= 400 and len(admitted) + more >= 398


def test_a_lowered_rate_limit_applies_to_a_replica_that_holds_a_rate_lease(engines):
    """A reload that lowers a key's limit: the lease taken under the old limit admits nothing more; its rest
    goes back to the buckets (never above the new, smaller allowance), and the new limit holds."""
    clock = Clock(datetime(2026, 12, 1, 12, tzinfo=UTC))
    ledger = QuotaLedger(engines(), UTC, 600, clock=clock)
    ledger.acquire("k", RateLimit(requests_per_minute=1600), 0)  # the writer leases about 100 requests
    ledger.acquire("k", RateLimit(requests_per_minute=1600), 0)  # from the lease
    lowered = RateLimit(requests_per_minute=10)
    for _ in range(10):
        ledger.acquire("k", lowered, 0)
    with pytest.raises(RateLimited, match=r"rate\.requests"):
        ledger.acquire("k", lowered, 0)
    ledger.close()
