"""Admin page benchmark: server time per page on a 1,000,000-record audit log, and export throughput.

The log is built directly with bulk inserts of valid chained records (the same canonical form and hash as
the writer; signed checkpoints every 1000), spread over 30 days, 50 principals, 3 models, every event and
action, so each filter has real work. Then the appliance's own app (in-process through httpx's ASGI
transport: server time, no network) serves each view repeatedly, signed in like a browser.

Peers, side by side on the same database: the page's own SQL run bare with the stdlib driver (what the
page adds over its query), and OFFSET paging of the same depth (what a page without a cursor pays).
Writes bench/results/ui.txt. Usage: .venv/bin/python bench/ui/run.py [--records 1000000] [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from appliance import apikeys
from appliance.api.app import create_app
from appliance.api.services import Services
from appliance.audit import signer
from appliance.audit.chain import CHAIN_COLUMNS, GENESIS, ROW_COLUMNS, canonical, json_text, link
from appliance.audit.store import TS_FORMAT
from appliance.config import Settings
from appliance.db import make_engine, upgrade

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results" / "ui.txt"
INSERT = f"INSERT INTO audit_records ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join('?' * len(ROW_COLUMNS))})"
CP_INSERT = "INSERT INTO audit_checkpoints (kind, seq, head_hash, ts, key_id, signature) VALUES (?, ?, ?, ?, ?, ?)"
EVENTS = ("request", "completion", "request", "completion", "denial", "error", "auth_failure", "admin.key_created")
WORDS = ("invoice", "weather", "contract", "password", "travel", "salary", "roadmap", "recipe")


def build(settings: Settings, records: int) -> None:
    """`records` chained rows and their checkpoints, inserted in bulk with the stdlib driver."""
    upgrade(settings.database_url)
    key = signer.load_or_create(settings.audit_key_path)
    conn = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"))
    conn.execute("PRAGMA synchronous=OFF")
    start = datetime.now(UTC) - timedelta(days=30)
    step = timedelta(days=30) / records
    prev, batch, cps = GENESIS, [], []
    empty_list, empty_map = json_text([]), json_text({})
    for seq in range(1, records + 1):
        i = seq // 2  # request/outcome pairs share a request id
        event = EVENTS[seq % len(EVENTS)]
        action = (
            ("deny" if event == "denial" else "redact" if i % 5 == 0 else "allow")
            if event in ("request", "completion", "denial")
            else None
        )
        ts = (start + step * seq).strftime(TS_FORMAT)
        flat = [
            seq,
            ts,
            event,
            f"req_{i:010d}",
            f"key{i % 50:013d}",
            f"analyst-{i % 50}",
            "admin" if event.startswith("admin.") else "user",
            "10.1.2.3",
            "POST /v1/chat/completions",
            f"gpt-oss-{('20b', '120b', 'mini')[i % 3]}",
            "2026.11.0",
            f"rev{i // 100_000:02d}" + "0" * 58,
            action,
            json_text(["pii.email"]) if action == "redact" else empty_list,
            json_text({"pii.email": 1}) if action == "redact" else empty_map,
            "redacted",
            f"please summarise the {WORDS[i % 8]} number {i} for [EMAIL]",
            812,
            230,
            95,
            1234,
            {"denial": 403, "error": 500, "auth_failure": 401}.get(event, 200),
            None,
            json_text({"finish_reason": "stop"}) if event == "completion" else empty_map,
        ]
        assert len(flat) == len(CHAIN_COLUMNS)
        digest = link(prev, canonical(flat))
        batch.append((*flat, prev, digest))
        prev = digest
        if seq % 1000 == 0 or seq == records:
            cp = signer.sign_checkpoint(key, "periodic", seq, digest, ts)
            cps.append((cp.kind, cp.seq, cp.head_hash, cp.ts, cp.key_id, cp.signature))
        if len(batch) == 50_000 or seq == records:
            conn.executemany(INSERT, batch)
            conn.executemany(CP_INSERT, cps)
            conn.commit()
            batch, cps = [], []
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()


class Backend:
    """No model: the admin page never generates."""

    async def models(self) -> list:
        return []

    async def ready(self) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        return {}


async def measure(svc: Services, token: str, records: int, runs: int, db: Path) -> list[str]:
    app = create_app(svc)
    lines = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://appliance") as client:
        form = await client.get("/admin/ui/signin")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        signed = await client.post("/admin/ui/signin", data={"key": token, "csrf_token": csrf})
        assert signed.status_code == 303, signed.text

        async def timed(url: str) -> tuple[float, float]:
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                r = await client.get(url)
                times.append(time.perf_counter() - t)
                assert r.status_code == 200, (url, r.status_code, r.text[:300])
            return statistics.median(times) * 1000, statistics.quantiles(times, n=20)[18] * 1000

        raw = sqlite3.connect(db)
        cols = ", ".join(ROW_COLUMNS)

        def bare(where: str = "1=1", args: tuple = (), offset: int | None = None, cursor: int | None = None) -> float:
            sql = f"SELECT {cols} FROM audit_records WHERE {where}"
            if cursor is not None:
                sql += f" AND seq < {cursor}"
            sql += " ORDER BY seq DESC LIMIT 50" + (f" OFFSET {offset}" if offset else "")
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                raw.execute(sql, args).fetchall()
                times.append(time.perf_counter() - t)
            return statistics.median(times) * 1000

        mid = (datetime.now(UTC) - timedelta(days=15)).strftime("%Y-%m-%dT%H:%M:%S")
        day = (datetime.now(UTC) - timedelta(days=14)).strftime("%Y-%m-%dT%H:%M:%S")
        deep = records - 10_000
        cases = [
            ("first page", "", "1=1", ()),
            ("10,000 records deep (keyset)", f"cursor={deep + 1}", f"seq < {deep + 1}", ()),
            (
                "filter: time range (1 day; peer: naive SQL)",
                f"since={mid}&until={day}",
                "ts >= ? AND ts < ?",
                (mid + ".000000Z", day + ".000000Z"),
            ),
            ("filter: principal", "principal=analyst-7", "principal_name = ?", ("analyst-7",)),
            ("filter: event", "event=denial", "event = ?", ("denial",)),
            ("filter: admin changes", "event=admin.*", "event LIKE 'admin.%'", ()),
            ("filter: action", "action=redact", "action = ?", ("redact",)),
            ("filter: model", "model=gpt-oss-120b", "model = ?", ("gpt-oss-120b",)),
            (
                "filter: policy revision",
                f"policy_revision=rev03{'0' * 58}",
                "policy_revision = ?",
                (f"rev03{'0' * 58}",),
            ),
            ("filter: status", "status=500", "status = ?", (500,)),
            ("filter: text (common)", "text=contract", "content LIKE ?", ("%contract%",)),
            ("filter: text (rare)", "text=number 4242 ", "content LIKE ?", ("%number 4242 %",)),
            (
                "filter: principal + action, deep",
                f"principal=analyst-6&action=deny&cursor={deep}",
                "principal_name = ? AND action = ?",
                ("analyst-6", "deny"),
            ),
        ]
        lines.append(f"{'view':44} {'p50 ms':>8} {'p95 ms':>8} {'bare SQL p50':>13} {'ratio':>6}")
        for name, query, where, args in cases:
            p50, p95 = await timed(f"/admin/ui/audit?{query}")
            peer = bare(where, args, cursor=(deep + 1) if "deep" in name else None)
            lines.append(f"{name:44} {p50:8.1f} {p95:8.1f} {peer:12.1f}  {p50 / max(peer, 1e-3):5.1f}x")
        offset = bare(offset=10_000)
        lines.append(
            f"{'peer: OFFSET 10000 (no cursor), bare':44} {'':8} {'':8} {offset:12.1f}  "
            f"(keyset page above is {offset / max(bare(cursor=deep + 1), 1e-3):.1f}x faster bare)"
        )
        for name, url in (
            ("record detail", f"/admin/ui/audit/{records // 2}"),
            ("chart (24 h, SVG)", "/admin/ui/audit/chart.svg"),
            ("chart (1 day filter)", f"/admin/ui/audit/chart.svg?since={mid}&until={day}"),
            ("integrity panel", "/admin/ui/integrity"),
        ):
            p50, p95 = await timed(url)
            lines.append(f"{name:44} {p50:8.1f} {p95:8.1f}")

        for fmt in ("jsonl", "csv"):
            t = time.perf_counter()
            size = 0
            async with client.stream("GET", f"/admin/ui/audit/export?format={fmt}") as r:
                async for block in r.aiter_bytes():
                    size += len(block)
            wall = time.perf_counter() - t
            lines.append(
                f"export {fmt} (all {records:,}): {wall:.1f} s, {records / wall:,.0f} records/s, "
                f"{size / wall / 1e6:.0f} MB/s"
            )
        t = time.perf_counter()
        n = sum(1 for _ in raw.execute(f"SELECT {cols} FROM audit_records ORDER BY seq"))
        scan = time.perf_counter() - t
        lines.append(
            f"peer: bare full scan {n / scan:,.0f} records/s (export costs {n / scan / (records / wall):.1f}x a scan)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--keep", type=Path, help="Build the database in this folder once and reuse it.")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-ui-"))
    settings = Settings(data_dir=root, policy_dir=REPO / "policies")
    db = root / "appliance.db"
    if not db.exists():
        t = time.perf_counter()
        build(settings, args.records)
        print(f"built {args.records:,} records in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    with make_engine(settings.database_url).connect() as conn:
        from sqlalchemy.orm import Session

        with Session(conn) as session:
            token, _ = apikeys.create_key(session, "bench", "auditor")
    svc = Services.from_settings(settings, Backend())
    try:
        lines = asyncio.run(measure(svc, token, args.records, args.runs, db))
    finally:
        svc.close()
    header = (
        f"ui bench: {args.records:,} audit records, SQLite WAL, server time in-process (ASGI), "
        f"{args.runs} runs per view, goal p95 < 100 ms"
    )
    text = "\n".join([header, *lines]) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
