"""Quota counters: admissions per second on SQLite and PostgreSQL, and the gateway CPU a quota adds.

  1. Admissions/s: C client threads on two gateway replicas (two ledgers, each its own engine and
     writer), each client reserving, then settling without waiting (as the gateway does), against a key
     quota and a group quota (two counter rows), 50 keys in 5 groups; and reserve-only. Each replica's
     writer commits whatever is pending as one transaction. SQLite is a file in WAL mode with
     synchronous=FULL (what the appliance runs); PostgreSQL is the local test server (`source
     scripts/postgres.sh; pg_start_if_possible`), skipped when none is running. The yardstick is the
     engine's request rate (bench/results/gateway.txt: about 30 short requests/s through the whole path).
  2. Gateway CPU per short request (in-process FastAPI app, a zero-cost engine stand-in, one client at a
     time): the pack without quotas vs with a day and a month quota per key (output tokens), vs with an
     input-token quota too (the prompt is then tokenised at admission). Per-minute rate limits are on in
     all three (in the database); a fourth gateway has neither. Other work shares the cores, so the four
     gateways live side by side and take turns in blocks of 20 requests; the report gives each one's median
     per block and the median (and quartiles) of each turn's difference to "quotas off", with its ratio
     and the load average before and after.

    .venv/bin/python bench/quotas/run.py [--seconds 5] [--requests 600] [--cpu-only]

Results go to bench/results/quotas.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from appliance import apikeys, db  # noqa: E402
from appliance.api.app import create_app  # noqa: E402
from appliance.api.backend import ModelInfo  # noqa: E402
from appliance.api.services import Services  # noqa: E402
from appliance.config import Settings  # noqa: E402
from appliance.engine import FinishEvent, TextEvent, Usage  # noqa: E402
from appliance.policy.schema import Quota  # noqa: E402
from appliance.usage import Amounts, QuotaLedger  # noqa: E402

RESULTS = REPO / "bench" / "results" / "quotas.txt"
QUOTAS = (
    "      quotas: [{id: user.daily, period: day, output_tokens: 1000000000},\n"
    "               {id: user.monthly, period: month, output_tokens: 1000000000%s}]\n"
)


def admissions(url: str, workers: int, seconds: float, settle: bool) -> float:
    """Requests admitted per second by `workers` client threads (reserve, then settle when `settle`)."""
    engines = [db.make_engine(url) for _ in range(2)]
    ledgers = [QuotaLedger(e, UTC, 3600) for e in engines]
    key_quota = Quota(id="key.daily", period="day", output_tokens=10**12, requests=10**9)
    group_quota = Quota(id="group.monthly", period="month", input_tokens=10**12, output_tokens=10**12)
    counts = [0] * workers
    pending: list = []
    stop = time.perf_counter() + seconds

    def run(i: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            key = (i * 7919 + n) % 50
            reservation = ledgers[i % 2].reserve(
                [(f"key:k{key}", key_quota), (f"group:g{key % 5}", group_quota)], Amounts(800, 256, 1)
            )
            if settle and reservation is not None:  # as the gateway does: nobody waits on a settlement
                pending.append(ledgers[i % 2].settle_future(reservation, Amounts(800, 100, 1)))
            n += 1
        counts[i] = n

    start = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for future in pending:
        future.result()
    elapsed = time.perf_counter() - start
    for ledger, e in zip(ledgers, engines, strict=True):
        ledger.close()
        e.dispose()
    return sum(counts) / elapsed


class StandIn:
    """A zero-cost engine: one short answer with its usage."""

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo("tiny", "1.0.0", "cpu-fp32", 0)]

    async def generate(self, model, request):
        yield [TextEvent("final", "ok, done")]
        yield [FinishEvent("stop", Usage(20, 3, 0))]

    async def ready(self) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


CONFIGS = {"bare": "", "off": None, "output": QUOTAS % "", "input": QUOTAS % ", input_tokens: 1000000000"}
BLOCK = 20  # requests per measured block
TAIL_S = 0.1  # idle time inside each block's window: the writers' deferred work (50 ms batches) lands in it


def gateway(root: Path, quotas: str | None) -> tuple[Services, httpx.AsyncClient]:
    """An in-process gateway whose pack has `quotas` as the role's `quotas:` line (None: none; "": no rate
    limits either), and a client holding a fresh user key."""
    pack = root / "policies"
    shutil.copytree(REPO / "policies", pack)
    access = pack / "access.yaml"
    marker = "      rate: {requests_per_minute: 60, tokens_per_minute: 60000}\n"
    rate = "" if quotas == "" else "      rate: {requests_per_minute: 100000, tokens_per_minute: 1000000000}\n"
    access.write_text(access.read_text().replace(marker, rate + (quotas or "")))
    settings = Settings(data_dir=root / "var", policy_dir=pack, hash_workers=1)
    db.upgrade(settings.database_url)
    with Session(db.make_engine(settings.database_url)) as session:
        token, _ = apikeys.create_key(session, "bench", "user")
    services = Services.from_settings(settings, StandIn())
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(services)),
        base_url="http://a",
        headers={"Authorization": f"Bearer {token}"},
    )
    return services, client


def cpu_blocks(root: Path, requests: int) -> dict[str, list[float]]:
    """CPU ms of this process per short chat completion through the whole audited path, for each of
    CONFIGS: the four gateways live side by side and take turns, `BLOCK` requests at a time in a turning
    order, so load from other work on the shared cores falls on all four alike; one value per block."""
    gateways = {label: gateway(root / label, quotas) for label, quotas in CONFIGS.items()}
    body = {"model": "tiny", "max_tokens": 64, "messages": [{"role": "user", "content": "Say ok."}]}
    per_block: dict[str, list[float]] = {label: [] for label in CONFIGS}

    async def block(client: httpx.AsyncClient, n: int) -> None:
        for _ in range(n):
            r = await client.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
        await asyncio.sleep(TAIL_S)

    async def go() -> None:
        labels = list(CONFIGS)
        for _, client in gateways.values():  # warm: imports, vocabulary, connection pools
            await block(client, BLOCK)
        for turn in range(max(1, requests // BLOCK)):
            for label in labels[turn % 4 :] + labels[: turn % 4]:
                cpu = time.process_time()
                await block(gateways[label][1], BLOCK)
                per_block[label].append((time.process_time() - cpu) * 1000 / BLOCK)
        for _, client in gateways.values():
            await client.aclose()

    try:
        asyncio.run(go())
    finally:
        for services, _ in gateways.values():
            services.close()
    return per_block


def cpu_line(runs: dict[str, list[float]], load: tuple[float, float]) -> str:
    def added(label: str) -> str:
        diffs = [on - off for on, off in zip(runs[label], runs["off"], strict=True)]
        ratios = [on / off for on, off in zip(runs[label], runs["off"], strict=True)]
        return (
            f"{statistics.median(runs[label]):.2f} ms -> {statistics.median(diffs):+.2f} ms "
            f"(x{statistics.median(ratios):.2f}; quartiles {_quartiles(diffs)})"
        )

    return (
        f"2. gateway CPU per short request (SQLite; median of {len(runs['off'])} interleaved blocks of {BLOCK}, "
        f"load average {load[0]:.1f} before, {load[1]:.1f} after): quotas off {statistics.median(runs['off']):.2f} "
        f"ms, on (day + month, output tokens) {added('output')}; with an input-token quota too {added('input')} "
        f"(goal <= +0.5 ms); neither quotas nor rate limits (no database work at admission) "
        f"{statistics.median(runs['bare']):.2f} ms"
    )


def _quartiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"{q[0]:+.2f}..{q[2]:+.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=600, help="per configuration, in blocks of 20")
    parser.add_argument("--cpu-only", action="store_true", help="part 2 alone (its line is printed, not saved)")
    args = parser.parse_args()
    lines = [
        f"quotas bench: {os.cpu_count()} cores (shared), {args.seconds:.0f} s per admission run, "
        f"{args.requests} requests per gateway run"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        urls = {} if args.cpu_only else {"sqlite": f"sqlite:///{tmp}/bench.db"}
        pg = None if args.cpu_only else os.environ.get("APPLIANCE_TEST_PG_URL")
        if pg:
            admin = create_engine(pg, isolation_level="AUTOCOMMIT", poolclass=NullPool)
            with admin.connect() as conn:
                conn.execute(text("DROP DATABASE IF EXISTS bench_quotas WITH (FORCE)"))
                conn.execute(text("CREATE DATABASE bench_quotas"))
            urls["postgresql"] = pg.rsplit("/", 1)[0] + "/bench_quotas"
        for name, url in urls.items():
            db.upgrade(url)
            for workers in (1, 8, 32):
                pair = admissions(url, workers, args.seconds, settle=True)
                only = admissions(url, workers, args.seconds, settle=False)
                lines.append(
                    f"1. {name}, {workers} client(s) on 2 replicas: {pair:.0f} admissions/s reserved and "
                    f"settled; reserve only {only:.0f}/s"
                )
                print(lines[-1], flush=True)
        if pg:
            with admin.connect() as conn:
                conn.execute(text("DROP DATABASE IF EXISTS bench_quotas WITH (FORCE)"))
        before = os.getloadavg()[0]
        runs = cpu_blocks(Path(tmp), args.requests)
    lines.append(cpu_line(runs, (before, os.getloadavg()[0])))
    print(lines[-1])
    if not args.cpu_only:
        RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
