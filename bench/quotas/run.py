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
     input-token quota too (the prompt is then tokenised at admission); the least of three interleaved
     runs. Per-minute rate limits are on in all three (in the database); a fourth run has neither.

    .venv/bin/python bench/quotas/run.py [--seconds 5] [--requests 300]

Results go to bench/results/quotas.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
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


def gateway_cpu(root: Path, quotas: str | None, requests: int) -> float:
    """CPU ms of this process per short chat completion through the whole audited path; `quotas` is the
    role's `quotas:` line (None: none; "": no rate limits either)."""
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
    app = create_app(services)

    async def go() -> float:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://a", headers={"Authorization": f"Bearer {token}"}
        ) as c:
            body = {"model": "tiny", "max_tokens": 64, "messages": [{"role": "user", "content": "Say ok."}]}
            for _ in range(20):  # warm: imports, vocabulary, connection pool
                assert (await c.post("/v1/chat/completions", json=body)).status_code == 200
            cpu = time.process_time()
            for _ in range(requests):
                r = await c.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
            return (time.process_time() - cpu) * 1000 / requests

    try:
        return asyncio.run(go())
    finally:
        services.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    lines = [
        f"quotas bench: {os.cpu_count()} cores (shared), {args.seconds:.0f} s per admission run, "
        f"{args.requests} requests per gateway run"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": f"sqlite:///{tmp}/bench.db"}
        pg = os.environ.get("APPLIANCE_TEST_PG_URL")
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
        runs: dict[str, list[float]] = {"bare": [], "off": [], "output": [], "input": []}
        for round_ in range(3):  # interleaved, the least of three: other work on shared cores only adds
            for label, quotas in (
                ("bare", ""),
                ("off", None),
                ("output", QUOTAS % ""),
                ("input", QUOTAS % ", input_tokens: 1000000000"),
            ):
                runs[label].append(gateway_cpu(Path(tmp) / f"{label}{round_}", quotas, args.requests))
        cpu = {label: min(values) for label, values in runs.items()}
    lines.append(
        f"2. gateway CPU per short request (SQLite): quotas off {cpu['off']:.2f} ms, on (day + month, "
        f"output tokens) {cpu['output']:.2f} ms -> +{cpu['output'] - cpu['off']:.2f} ms; with an "
        f"input-token quota too {cpu['input']:.2f} ms -> +{cpu['input'] - cpu['off']:.2f} ms "
        f"(goal <= +0.5 ms); neither quotas nor rate limits (no database work at admission) "
        f"{cpu['bare']:.2f} ms"
    )
    print(lines[-1])
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
