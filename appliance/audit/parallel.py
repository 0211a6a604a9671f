"""Verification spread over processes: each walks its ranges of seq (hashing is CPU-bound and holds the GIL)
with its own database connection; `verify_chain` joins the stretches in order, so the verdict and its message
are those of one pass.

The workers are forked (they start at once, with everything imported); each drops the connections it
inherited and opens its own. Every range ends at the head of the caller's snapshot, so records appended
meanwhile are not read; a prune between the snapshot and a worker's read is noticed by the caller
(`AuditLog.verify` then verifies again in one snapshot).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from appliance.audit.chain import Claims, Stretch, StretchSource, walk
from appliance.audit.models import AuditRecordRow

SPAN = 25_000  # records per task: small enough to balance the workers and move the progress bar
RowReader = Callable[[Connection, tuple[int, int] | None], Iterable[Sequence[Any]]]  # rows (with seq in a range)
_worker: tuple[Engine, RowReader] | None = None  # a worker's own engine, and how it reads


def rows_for(
    engine: Engine, conn: Connection, read: RowReader, workers: int
) -> Iterable[Sequence[Any]] | StretchSource:
    """What `verify_chain` takes for the log `conn` reads: its rows, walked in this process, or a
    `StretchSource` over `workers` processes when there is more than one task's worth of records."""
    first, last, count = conn.execute(
        select(func.min(AuditRecordRow.seq), func.max(AuditRecordRow.seq), func.count())
    ).one()
    return stretches(engine, read, first, last, workers) if workers > 1 and count > SPAN else read(conn, None)


def stretches(engine: Engine, read: RowReader, first: int, last: int, workers: int) -> StretchSource:
    """A `StretchSource` walking records `first..last` of `engine`'s log, read by `read`, in `workers`
    processes."""

    def source(claims: Claims, covered: int) -> Iterator[Stretch]:
        ranges = [(lo, min(lo + SPAN - 1, last)) for lo in range(first, last + 1, SPAN)]
        jobs = ((lo, hi, {s: c for s, c in claims.items() if lo <= s <= hi}, covered) for lo, hi in ranges)
        with multiprocessing.get_context("fork").Pool(workers, _start, (engine, read)) as pool:
            yield from pool.imap(_walk_range, jobs)  # in order; leaving early terminates the pool

    return source


def _start(inherited: Engine, read: RowReader) -> None:
    global _worker
    inherited.dispose(close=False)  # the parent's connections stay the parent's
    _worker = inherited, read


def _walk_range(job: tuple[int, int, Claims, int]) -> Stretch:
    lo, hi, claims, covered = job
    assert _worker is not None
    engine, read = _worker
    with engine.connect() as conn, conn.begin():
        return walk(read(conn, (lo, hi)), claims, covered)
