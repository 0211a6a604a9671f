"""Many writers, one ordered chain: 8 processes appending at once leave no gap, duplicate or fork."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from appliance.audit import AuditLog
from tests.audit.conftest import request_event

PROCESSES, THREADS, PER_PROCESS = 8, 4, 40


def _writer(database_url: str, key_path: str, worker: int) -> list[int]:
    """One process: its own AuditLog, several threads appending so group commit is in play too."""
    with AuditLog(database_url, Path(key_path), checkpoint_every=25, checkpoint_seconds=3600) as log:
        with ThreadPoolExecutor(THREADS) as pool:
            events = [request_event(worker * 1000 + i) for i in range(PER_PROCESS)]
            return [r.seq for r in pool.map(log.append, events)]


def test_eight_processes_one_chain(database_url: str, key_path: Path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        results = pool.starmap(_writer, [(database_url, str(key_path), w) for w in range(PROCESSES)])
    seqs = sorted(s for result in results for s in result)
    assert seqs == list(range(1, PROCESSES * PER_PROCESS + 1))
    with AuditLog(database_url, key_path) as log:
        report = log.verify()
        assert report.ok, report.problems
        assert report.records == PROCESSES * PER_PROCESS and report.checkpoints >= 1
        ids = {r.request_id for r in log.query(limit=1000).records}
    assert ids == {f"req-{w * 1000 + i}" for w in range(PROCESSES) for i in range(PER_PROCESS)}
