"""Audit log benchmark: durable chained appends vs plain SQLite inserts of the same rows, and verify speed.

Both sides write to SQLite in WAL mode with synchronous=FULL on the same disk, in the same run:
- chained: `AuditLog.append` from W writer processes x C concurrent callers each (group commit, chain,
  checkpoints);
- plain, one row per commit: the same rows inserted by W processes with the stdlib driver, each insert its own
  durable transaction (what a logger that promises durability per record does);
- plain, 32 rows per commit: the ceiling of batching with no chain at all.
The chained side runs twice: with today's checkpoint cadence (the head signed within a second of the last
append) and with the former one (every 1,000 records or 60 s). Then a log of 1M records is built directly
(same rows, same chain, a chained checkpoint per 1,000 records, each also in the witness file) and
verified end to end in one pass and in one process per core (the same report), with where one pass's time
goes (reading rows, canonical JSON, SHA-256). Writes bench/results/audit.txt.

Usage: .venv/bin/python bench/audit/run.py [--appends 20000] [--verify-records 1000000]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import resource
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from appliance import db
from appliance.audit import AuditEvent, AuditLog
from appliance.audit.chain import CHAIN_COLUMNS, GENESIS, ROW_COLUMNS, canonical, flatten, link
from appliance.audit.log import raw_rows
from appliance.audit.store import now_ts

CALLERS = 64
RESULTS = Path(__file__).resolve().parents[1] / "results" / "audit.txt"
INSERT = f"INSERT INTO audit_records ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join('?' * len(ROW_COLUMNS))})"


def event(i: int) -> AuditEvent:
    """A typical ~500-byte completion record."""
    return AuditEvent(
        event="completion",
        request_id=f"req-{i:012d}",
        source="10.1.2.3",
        route="/v1/chat/completions",
        principal={"key_id": f"key{i % 50:04d}", "name": f"analyst-{i % 50}", "role": "user"},
        model="gpt-oss-20b",
        bundle_version="2026.11.0",
        policy_revision="9f2c" * 16,
        decision={"action": "redact", "rule_ids": ["pii.email", "secrets"], "findings": {"pii.email": 2}},
        content_mode="hash",
        content=f"sha256:{i:064x}",
        usage={"prompt_tokens": 812, "completion_tokens": 230, "reasoning_tokens": 95},
        latency_ms=1234,
        status=200,
    )


def rows(start: int, count: int, prev: str = GENESIS) -> list[tuple]:
    """`count` chained rows from seq `start`, exactly as the log would store them."""
    out, ts = [], now_ts()
    for seq in range(start, start + count):
        values = flatten(event(seq), seq, ts)
        flat = [values[c] for c in CHAIN_COLUMNS]
        digest = link(prev, canonical(flat))
        out.append((*flat, prev, digest))
        prev = digest
    return out


def _chained_writer(url: str, key: str, events: list[AuditEvent], seconds: float = 1.0) -> None:
    with (
        AuditLog(url, Path(key), checkpoint_every=1000, checkpoint_seconds=seconds) as log,
        ThreadPoolExecutor(CALLERS) as pool,
    ):
        list(pool.map(log.append, events))


def _plain_writer(path: str, batch: int, prepared: list[tuple]) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for i in range(0, len(prepared), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, prepared[i : i + batch])
        conn.execute("COMMIT")
    conn.close()


def _fresh(folder: Path, name: str) -> tuple[str, Path]:
    path = folder / f"{name}.db"
    db.upgrade(f"sqlite:///{path}")
    return f"sqlite:///{path}", path


def _in_processes(target, arg_sets: list[tuple]) -> float:
    procs = [multiprocessing.get_context("fork").Process(target=target, args=args) for args in arg_sets]
    start = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0, f"{target.__name__} failed"
    return time.perf_counter() - start


def bench_appends(folder: Path, total: int, writers: int) -> dict[str, float]:
    """Records per second for each side with `writers` processes sharing `total` records."""
    share = total // writers
    url, path = _fresh(folder, f"chained{writers}")
    events = [[event(i) for i in range(w * share, (w + 1) * share)] for w in range(writers)]
    key = folder / f"keys{writers}" / "audit.key"  # each database its own key folder, hence its own witness
    chained = _in_processes(_chained_writer, [(url, str(key), events[w]) for w in range(writers)])
    with AuditLog(url, key) as log:
        assert log.verify().ok and log.count() == share * writers
    # The checkpoint cadence before the witness work (every 1,000 records or 60 s), same code otherwise.
    url60, _ = _fresh(folder, f"chained60_{writers}")
    key60 = folder / f"keys60_{writers}" / "audit.key"
    sparse = _in_processes(_chained_writer, [(url60, str(key60), events[w], 60.0) for w in range(writers)])
    # seqs made unique per writer; the plain side does no chaining, so their order does not matter.
    prepared = [[(w * share + r[0], *r[1:]) for r in rows(1, share)] for w in range(writers)]
    result = {"chained": share * writers / chained, "chained_60s": share * writers / sparse}
    for label, batch in (("plain_1", 1), ("plain_32", 32)):
        _, plain = _fresh(folder, f"{label}_{writers}")
        seconds = _in_processes(_plain_writer, [(str(plain), batch, prepared[w]) for w in range(writers)])
        result[label] = share * writers / seconds
    return result


def build_log(url: str, path: Path, keys_dir: Path, count: int) -> int:
    """Fill the migrated database at `url` (file `path`) with `count` chained records in bulk, and sign a
    checkpoint per 1,000 in it and in the witness of `keys_dir`, as the writer leaves them; returns how many
    checkpoints. Bulk inserts of valid rows take seconds where 1M appends would take minutes."""
    conn = sqlite3.connect(path, isolation_level=None)
    prev, chunk = GENESIS, 50_000
    for start in range(1, count + 1, chunk):
        batch = rows(start, min(chunk, count - start + 1), prev)
        prev = batch[-1][-1]
        conn.execute("BEGIN")
        conn.executemany(INSERT, batch)
        conn.execute("COMMIT")
    conn.close()
    return _sign_every(url, keys_dir, 1000)


def bench_verify(folder: Path, count: int) -> dict[str, float]:
    url, path = _fresh(folder, "verify")
    keys_dir = folder / "keys-verify"
    checkpoints = build_log(url, path, keys_dir, count)
    workers = os.cpu_count() or 1
    with AuditLog(url, keys_dir / "audit.key", uncovered_grace_s=1e9) as log:
        start, cpu = time.perf_counter(), time.process_time()
        report = log.verify()
        assert report.witnessed == checkpoints, report.witnessed
        verify_s, verify_cpu = time.perf_counter() - start, time.process_time() - cpu
        assert report.ok and report.records == count, report.problems
        start, load, cpu = time.perf_counter(), os.getloadavg()[0], _cpu()
        split = log.verify(workers=workers)
        parallel_s, parallel_cpu = time.perf_counter() - start, _cpu() - cpu
        assert split == report, (split, report)
        # Where one pass's CPU goes: reading the rows as driver tuples, then canonical JSON, then SHA-256.
        start = time.process_time()
        with log.engine.connect() as c:
            rows = list(itertools.islice(raw_rows(c), 200_000))
        read_s = time.process_time() - start
        start = time.process_time()
        encoded = [(r[-2], canonical(r[:-2])) for r in rows]
        encode_s = time.process_time() - start
        start = time.process_time()
        for prev, data in encoded:
            link(prev, data)
        hash_s = time.process_time() - start
    scale = count / len(rows)
    return {
        "verify_s": verify_s,
        "verify_cpu": verify_cpu,
        "parallel_s": parallel_s,
        "parallel_cpu": parallel_cpu,
        "workers": workers,
        "load": load,
        "read_s": read_s * scale,
        "encode_s": encode_s * scale,
        "hash_s": hash_s * scale,
    }


def _cpu() -> float:
    """CPU seconds of this process and of its children that have ended (the verify workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _sign_every(url: str, folder: Path, every: int) -> int:
    """Chained checkpoints every `every` records, in the database and the witness, as the writer leaves them."""
    from appliance.audit import signer, store
    from appliance.audit.witness import Witness

    key = signer.load_or_create(folder / "audit.key")
    witness = Witness(folder, use_syslog=False)
    with AuditLog(url, folder / "audit.key") as log, store.write_transaction(log.engine) as conn:
        heads = conn.exec_driver_sql(f"SELECT seq, hash FROM audit_records WHERE seq % {every} = 0 ORDER BY seq")
        prev, count = GENESIS, 0
        for seq, head in list(heads):
            cp = signer.sign_checkpoint(key, "periodic", seq, head, now_ts(), prev)
            store.insert_checkpoint(conn, cp)
            witness.append(cp)
            prev, count = cp.digest(), count + 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--verify-records", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="Folder for the databases (default: a temp one).")
    args = parser.parse_args()
    lines = [f"audit bench: SQLite WAL synchronous=FULL, {CALLERS} concurrent callers per chained writer"]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        for writers in (1, 4) if args.appends else ():
            r = bench_appends(folder, args.appends, writers)
            lines.append(
                f"{writers} writer(s): chained {r['chained']:,.0f}/s | same with checkpoints every 60 s "
                f"{r['chained_60s']:,.0f}/s (ratio {r['chained'] / r['chained_60s']:.2f}x) | "
                f"plain 1 row/commit "
                f"{r['plain_1']:,.0f}/s (ratio {r['chained'] / r['plain_1']:.2f}x) | "
                f"plain 32 rows/commit "
                f"{r['plain_32']:,.0f}/s (ratio {r['chained'] / r['plain_32']:.2f}x)"
            )
            print(lines[-1], flush=True)
        if args.verify_records:
            v = bench_verify(folder, args.verify_records)
            lines.append(
                f"verify {args.verify_records:,} records with 1 checkpoint per 1,000 and its witness: "
                f"one pass {v['verify_s']:.1f} s wall, {v['verify_cpu']:.1f} s CPU "
                f"({args.verify_records / v['verify_s']:,.0f}/s); {v['workers']} processes "
                f"{v['parallel_s']:.1f} s wall, {v['parallel_cpu']:.1f} s CPU in all "
                f"({args.verify_records / v['parallel_s']:,.0f}/s, same report); "
                f"one pass's CPU: {v['read_s']:.1f} s reading rows, {v['encode_s']:.1f} s canonical JSON, "
                f"{v['hash_s']:.1f} s SHA-256, the rest walking (1-min load {v['load']:.1f} on {os.cpu_count()} cores)"
            )
            print(lines[-1], flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
