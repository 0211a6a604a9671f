"""Group commit: one writer thread per process turns every pending append into one durable transaction.

With `synchronous=FULL` a commit costs an fsync (~0.2 ms here), so one commit per record caps a log near
5k records/s while 32 records per commit reach ~58k/s (measured on this kind of machine). Callers therefore
hand their event to this thread and wait on a future; the thread takes whatever is queued, chains it onto
the head under the write lock, commits, and only then answers. After a batch (and after a second with no
appends) it signs the head when one is due, so no record stays uncovered by a signature for much more than
`checkpoint_seconds` (checkpoints.py verifies before it signs). A failed
transaction fails every caller in it, and the next batch starts again from the head in the database.

The thread outlives every caller: a caller that gives up (cancelled, timed out) leaves its future to be
settled anyway, settling never raises, and an unexpected error in a batch is logged, never fatal. One
record that cannot be stored does not take its batch down: a failed batch is retried record by record, so
only the record at fault fails (a database outage still fails each of them).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, insert
from sqlalchemy.exc import OperationalError

from appliance.audit import checkpoints, store
from appliance.audit.chain import CHAIN_COLUMNS, Checkpoint, canonical, flatten, link
from appliance.audit.errors import AuditTampered, AuditUnavailable, first_line
from appliance.audit.events import AuditEvent
from appliance.audit.models import AuditRecordRow
from appliance.audit.witness import Witness
from appliance.signing.keys import PrivateKey

MAX_BATCH = 1024
log = structlog.get_logger(__name__)
_Item = tuple[AuditEvent, Future[dict[str, Any]]]  # a record to write and the caller waiting for it


class ChainWriter:
    """The thread that owns appends for one process."""

    def __init__(
        self,
        engine: Engine,
        key: PrivateKey,
        checkpoint_every: int,
        checkpoint_seconds: float,
        witness: Witness | None = None,
    ) -> None:
        self._engine, self._key, self._witness = engine, key, witness
        self._every, self._seconds = checkpoint_every, checkpoint_seconds
        self._refused: str | None = None  # why the last checkpoint was refused (logged once per reason)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()  # None: stop
        self._closed = False
        self._conn: Connection | None = None  # kept across batches; dropped on any error
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def submit(self, event: AuditEvent) -> Future[dict[str, Any]]:
        """Queue `event`; the future yields its committed column values (the record is built by the caller,
        keeping the writer's locked section short)."""
        if self._closed:
            raise AuditUnavailable("the audit log is closed")
        future: Future[dict[str, Any]] = Future()
        self._queue.put((event, future))
        return future

    def close(self) -> None:
        """Finish what is queued, then leave a checkpoint at the head so a later cut tail shows."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)  # stop
        self._thread.join()
        self._checkpoint_if_due(force=True)
        self._drop_connection()

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._seconds)
            except queue.Empty:
                self._checkpoint_if_due()
                continue
            batch: list[_Item] = []
            stop = False
            while True:
                if item is None:
                    stop = True
                    break
                batch.append(item)
                if len(batch) >= MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            try:
                if batch:
                    self._commit_isolated(batch)
            except BaseException as exc:  # noqa: BLE001 - the writer never dies: its callers hear it
                log.error("audit writer batch failed", error=first_line(exc))
                for _, future in batch:
                    _settle(future, error=AuditUnavailable(f"audit record not written: {first_line(exc)}"))
            if stop:
                return

    def _commit_isolated(self, batch: list[_Item]) -> None:
        """Commit `batch` in one transaction; if that fails, record by record so only the culprits fail."""
        error = self._commit(batch)
        if error is None or len(batch) == 1:
            return
        for i, item in enumerate(batch):
            error = self._commit([item])
            if isinstance(error.__cause__ if error else None, OperationalError):
                for _, future in batch[i + 1 :]:  # the database itself is down: no point trying the rest
                    _settle(future, error=error)
                return

    def _ordered(self) -> AbstractContextManager[None]:
        """The witness's lock, taken before the database's: a checkpoint this transaction signs reaches the
        witness file before any later one (witness.order holds the file to that)."""
        return self._witness.ordered() if self._witness is not None else nullcontext()

    def _commit(self, batch: list[_Item]) -> AuditUnavailable | None:
        """One transaction for `batch`; settles every future when it succeeds (or when it is a single record),
        returns the error otherwise."""
        with self._ordered():
            return self._commit_ordered(batch)

    def _commit_ordered(self, batch: list[_Item]) -> AuditUnavailable | None:
        try:
            with store.locked(self._connection()) as conn:
                seq, head = store.read_head(conn)
                ts = store.now_ts()
                rows = []
                for event, _ in batch:
                    seq += 1
                    values = flatten(event, seq, ts)
                    values["prev_hash"] = head
                    head = values["hash"] = link(head, canonical([values[c] for c in CHAIN_COLUMNS]))
                    rows.append(values)
                conn.execute(insert(AuditRecordRow), rows)
                checkpoint = self._sign_if_due(conn, seq, head, ts)
        except Exception as exc:  # noqa: BLE001 - any failure means "not durable": the callers hear it
            self._drop_connection()
            error = AuditUnavailable(f"audit record not written: {first_line(exc)}")
            error.__cause__ = exc
            if len(batch) == 1:
                _settle(batch[0][1], error=error)
            return error
        if checkpoint is not None and self._witness is not None:
            self._witness.append(checkpoint)
        for (_, future), values in zip(batch, rows):
            _settle(future, values)
        return None

    def _sign_if_due(self, conn: Connection, seq: int, head: str, ts: str, force: bool = False) -> Checkpoint | None:
        """Inside the write transaction: sign the head when N records or T seconds (about one) have passed
        since the last checkpoint (always at close). A refusal (the log does not verify) is logged once and
        leaves the transaction, and the records in it, as they are."""
        last = store.last_checkpoint(conn)
        if seq <= (last.seq if last else 0) or not (
            force or store.checkpoint_due(conn, seq, self._every, self._seconds)
        ):
            return None
        try:
            return checkpoints.sign_head(conn, self._key, self._witness, "periodic", seq, head, ts)
        except AuditTampered as exc:
            if self._refused != str(exc):
                self._refused = str(exc)
                log.error("audit checkpoint refused", error=str(exc))
            return None

    def _checkpoint_if_due(self, force: bool = False) -> None:
        """The T-seconds rule when no appends arrive (and the closing checkpoint when `force`)."""
        with self._ordered():
            self._checkpoint_ordered(force)

    def _checkpoint_ordered(self, force: bool) -> None:
        try:
            with store.locked(self._connection()) as conn:
                seq, head = store.read_head(conn)
                checkpoint = self._sign_if_due(conn, seq, head, store.now_ts(), force)
        except Exception as exc:  # noqa: BLE001 - the next append reports the outage to its caller
            self._drop_connection()
            log.warning("audit checkpoint failed", error=first_line(exc))
            return
        if checkpoint is not None and self._witness is not None:
            self._witness.append(checkpoint)

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _drop_connection(self) -> None:
        """Forget the connection after a failure, so the next batch starts on a fresh one."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.invalidate()
                conn.close()
            except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is gone either way
                pass


def _settle(
    future: Future[dict[str, Any]], result: dict[str, Any] | None = None, error: BaseException | None = None
) -> None:
    """Answer a caller's future; one whose caller gave up (cancelled) or was already answered is left alone."""
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result or {})
    except Exception:  # noqa: BLE001 - cancelled in between (InvalidStateError): nobody is waiting
        pass
