"""Every audit record and checkpoint to each SIEM collector: at least once, records in seq order, from a
cursor kept in the database (`audit_forward_cursors`, migration 0007).

One `Forwarder` thread per collector, in the one `appliance audit forward run` process of the appliance
(its own systemd unit): it reads committed rows from the database, so no request and no audit writer ever
waits for a collector, and the backlog is bounded only by the database. Each round sends the records after
the cursor (a batch), then the checkpoints signed since the checkpoint cursor whose record was sent, waits
until the collector's TCP stack acknowledged them, and moves the cursor once the connection has stayed open
`confirm_s` after that. Any failure drops the connection; the next one starts again from the stored cursor,
so what was in flight is sent again (duplicates, never gaps), after a restart too.

Checkpoints are followed by their signing time (with kind and seq to break ties), not by seq: a prune's
anchor or a restore's checkpoint names an old seq but is new. A host clock stepped back would hide the
checkpoints signed until it catches up (the witness has the same rule: keep the host on NTP).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, Engine, insert, select, tuple_, update
from sqlalchemy.exc import SQLAlchemyError

from appliance.audit import store
from appliance.audit.chain import ROW_COLUMNS, Checkpoint, unflatten
from appliance.audit.errors import AuditUnavailable, first_line
from appliance.audit.models import AuditCheckpointRow, AuditForwardCursorRow, AuditRecordRow
from appliance.audit.syslog import CollectorLink, checkpoint_message, record_message, syslog_hostname
from appliance.config import SyslogCollector

log = structlog.get_logger()
IDLE_S = 0.2  # how often an idle forwarder looks for new rows (and checks its connection)
SEND_TIMEOUT_S = 30.0  # a collector that takes no bytes for this long is treated as down
RETRY_S = (1.0, 10.0)  # reconnect backoff: first wait, longest wait
_CURSORS = AuditForwardCursorRow.__table__
_ROW = [getattr(AuditRecordRow, c) for c in ROW_COLUMNS]
_CP = (
    AuditCheckpointRow.kind,
    AuditCheckpointRow.seq,
    AuditCheckpointRow.head_hash,
    AuditCheckpointRow.ts,
    AuditCheckpointRow.key_id,
    AuditCheckpointRow.signature,
    AuditCheckpointRow.prev_checkpoint,
)


@dataclass(frozen=True)
class Position:
    """What a collector has been sent and kept: records up to `seq`, checkpoints up to `checkpoint`
    (signing time, kind, seq)."""

    seq: int = 0
    checkpoint: tuple[str, str, int] = ("", "", 0)


@dataclass(frozen=True)
class CollectorState:
    """One collector as `forward status` and `/metrics` show it."""

    name: str
    delivered_seq: int
    head_seq: int
    delivered_at: str | None
    attempted_at: str | None
    error: str | None

    @property
    def lag(self) -> int:
        return max(self.head_seq - self.delivered_seq, 0)


def states(engine: Engine, names: list[str]) -> list[CollectorState]:
    """Each named collector's cursor against the head (a collector never fed: delivered 0)."""
    try:
        with engine.connect() as conn:
            head, _ = store.read_head(conn)
            rows = {r.collector: r for r in conn.execute(select(_CURSORS))} if names else {}
    except SQLAlchemyError as exc:
        raise AuditUnavailable(f"audit database unavailable: {first_line(exc)}") from exc
    out = []
    for name in names:
        row = rows.get(name)
        out.append(
            CollectorState(
                name,
                row.seq if row else 0,
                head,
                row.delivered_at if row else None,
                row.attempted_at if row else None,
                row.error if row else None,
            )
        )
    return out


def undelivered(conn: Connection, names: list[str], cut: int) -> list[tuple[str, int]]:
    """(collector, delivered seq) of each named collector not yet delivered record `cut`: a prune up to
    `cut` would leave it a gap."""
    stmt = select(_CURSORS.c.collector, _CURSORS.c.seq).where(_CURSORS.c.collector.in_(names))
    found: dict[str, int] = {name: seq for name, seq in conn.execute(stmt)}
    return [(name, found.get(name, 0)) for name in names if found.get(name, 0) < cut]


def load_position(conn: Connection, name: str) -> Position:
    """The stored cursor of `name`, made (at the start of the log) the first time."""
    row = conn.execute(select(_CURSORS).where(_CURSORS.c.collector == name)).first()
    if row is None:
        conn.execute(
            insert(AuditForwardCursorRow).values(
                collector=name, seq=0, checkpoint_ts="", checkpoint_kind="", checkpoint_seq=0
            )
        )
        return Position()
    return Position(row.seq, (row.checkpoint_ts, row.checkpoint_kind, row.checkpoint_seq))


def save_position(engine: Engine, name: str, pos: Position) -> None:
    ts, kind, seq = pos.checkpoint
    with engine.begin() as conn:
        conn.execute(
            update(AuditForwardCursorRow)
            .where(AuditForwardCursorRow.collector == name)
            .values(
                seq=pos.seq,
                checkpoint_ts=ts,
                checkpoint_kind=kind,
                checkpoint_seq=seq,
                delivered_at=store.now_ts(),
                error=None,
            )
        )


def save_error(engine: Engine, name: str, error: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(AuditForwardCursorRow)
            .where(AuditForwardCursorRow.collector == name)
            .values(attempted_at=store.now_ts(), error=error[:512])
        )


def next_batch(conn: Connection, pos: Position, limit: int, host: str) -> tuple[list[bytes], Position]:
    """(messages, the position once they are kept) after `pos`: up to `limit` records
    in seq order, then the checkpoints signed since `pos` whose record is among those sent, in signing
    order (stopping at the first whose record is not sent yet, so none is skipped)."""
    rows = (
        conn.execute(select(*_ROW).where(AuditRecordRow.seq > pos.seq).order_by(AuditRecordRow.seq).limit(limit))
        .mappings()
        .all()
    )
    out = [record_message(host, unflatten(r)) for r in rows]
    seq = rows[-1]["seq"] if rows else pos.seq
    order = (AuditCheckpointRow.ts, AuditCheckpointRow.kind, AuditCheckpointRow.seq)
    checkpoint = pos.checkpoint
    for row in conn.execute(select(*_CP).where(tuple_(*order) > tuple_(*checkpoint)).order_by(*order).limit(limit)):
        cp = Checkpoint(*row)
        if cp.seq > seq:
            break
        out.append(checkpoint_message(host, cp))
        checkpoint = (cp.ts, cp.kind, cp.seq)
    return out, Position(seq, checkpoint)


class Forwarder(threading.Thread):
    """Feeds one collector until `stop` is set; never raises (failures are logged, stored, and retried)."""

    def __init__(
        self,
        engine: Engine,
        collector: SyslogCollector,
        stop: threading.Event,
        *,
        batch: int,
        confirm_s: float,
        hostname: str,
    ) -> None:
        super().__init__(name=f"audit-forward-{collector.name}", daemon=True)
        self.engine, self.collector, self.stop = engine, collector, stop
        self.batch, self.confirm_s, self.hostname = batch, confirm_s, hostname
        self.delivered = False  # this connection has moved the cursor

    def run(self) -> None:
        wait = RETRY_S[0]
        while not self.stop.is_set():
            self.delivered = False
            try:
                self._feed()
                return
            except Exception as exc:  # noqa: BLE001 - one collector's failure, whatever it is, is retried
                wait = RETRY_S[0] if self.delivered else wait  # a link that worked starts the backoff afresh
                error = first_line(exc) or type(exc).__name__
                log.warning("audit forwarding interrupted", collector=self.collector.name, error=error)
                try:
                    save_error(self.engine, self.collector.name, error)
                except SQLAlchemyError:
                    pass
            self.stop.wait(wait)
            wait = min(wait * 2, RETRY_S[1])

    def _feed(self) -> None:
        """One connection: send from the stored cursor until `stop` or a failure (raised)."""
        with self.engine.connect() as conn:
            with conn.execution_options(immediate=True).begin():  # SQLite: the write lock before the read
                pos = load_position(conn, self.collector.name)
        link = CollectorLink(self.collector)
        log.info("audit forwarding connected", collector=self.collector.name, from_seq=pos.seq + 1)
        sent: deque[tuple[float, Position]] = deque()  # acknowledged, waiting out confirm_s
        try:
            while not self.stop.is_set():
                with self.engine.connect() as conn, conn.begin():
                    messages, after = next_batch(conn, pos, self.batch, self.hostname)
                if messages:
                    link.send(b"".join(messages), SEND_TIMEOUT_S)
                    link.drained(SEND_TIMEOUT_S)
                    sent.append((time.monotonic(), after))
                    pos = after
                else:
                    self.stop.wait(IDLE_S)
                self._keep(link, sent)
            if sent:  # stopping: what was acknowledged is kept once the connection outlives confirm_s
                time.sleep(max(0.0, sent[-1][0] + self.confirm_s - time.monotonic()))
                self._keep(link, sent)
        finally:
            link.close()

    def _keep(self, link: CollectorLink, sent: deque[tuple[float, Position]]) -> None:
        """Store the newest position acknowledged at least `confirm_s` ago, if the connection is still open."""
        link.check_open()
        kept = None
        while sent and time.monotonic() - sent[0][0] >= self.confirm_s:
            kept = sent.popleft()[1]
        if kept is not None:
            save_position(self.engine, self.collector.name, kept)
            self.delivered = True


def run(
    engine: Engine,
    collectors: list[SyslogCollector],
    stop: threading.Event,
    *,
    batch: int,
    confirm_s: float,
    hostname: str | None,
) -> None:
    """Feed every collector until `stop` is set (the CLI sets it on SIGTERM or Ctrl-C)."""
    host = syslog_hostname(hostname)
    threads = [Forwarder(engine, c, stop, batch=batch, confirm_s=confirm_s, hostname=host) for c in collectors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
