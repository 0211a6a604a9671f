"""`AuditLog`: the one Python face of the audit store, for the gateway, the admin routes and the CLI.

Appends go through the process's group-commit writer (writer.py) and return only once durable; reads are
plain queries. Nothing here needs the private key except appending and pruning, so a read-only command never
creates a key or writes a checkpoint.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import ColumnElement, Connection, and_, case, delete, false, func, inspect, or_, select, true
from sqlalchemy.exc import SQLAlchemyError

from appliance.audit import checkpoints, forward, signer, store
from appliance.audit.chain import GENESIS, ROW_COLUMNS, Checkpoint, VerifyReport, unflatten, verify_chain
from appliance.audit.errors import AuditError, AuditTampered, AuditUnavailable, first_line
from appliance.audit.events import AuditEvent, AuditRecord
from appliance.audit.models import AuditCheckpointRow, AuditRecordRow
from appliance.audit.witness import Witness
from appliance.audit.writer import ChainWriter
from appliance.db import make_engine
from appliance.files import fsync_dir
from appliance.principal import Principal
from appliance.signing import keys

if TYPE_CHECKING:
    from appliance.config import Settings

APPEND_TIMEOUT_S = 60.0
MAX_SEQ = 2**63 - 1  # sequence numbers are BIGINT
_ROW = [getattr(AuditRecordRow, c) for c in ROW_COLUMNS]


@dataclass(frozen=True)
class AuditFilter:
    """What `query` keeps; `principal` matches a key id or a name; `event` ending in `.*` is a prefix
    (`admin.*`: every admin change); `text` is a substring of the stored content. Times are compared in UTC."""

    since: datetime | None = None
    until: datetime | None = None
    principal: str | None = None
    event: str | None = None
    action: str | None = None
    model: str | None = None
    policy_revision: str | None = None
    status: int | None = None
    text: str | None = None
    after_seq: int | None = None  # only records after this one: bounds an unindexed (text) scan


@dataclass(frozen=True)
class AuditPage:
    """Newest first; pass `next_cursor` back to get the records before these (None: no more)."""

    records: list[AuditRecord]
    next_cursor: int | None


@dataclass(frozen=True)
class PruneResult:
    removed: int
    anchor_seq: int | None
    export: Path | None  # where what was removed was exported first (None: not exported)


class AuditLog:
    """The tamper-evident audit log in the database at `database_url`, signed with the key at `key_path`."""

    def __init__(
        self,
        database_url: str,
        key_path: Path,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 1.0,
        witness_dir: Path | None = None,
        uncovered_grace_s: float = 60.0,
    ) -> None:
        self.engine = make_engine(database_url)
        self.key_path = key_path
        self.witness = Witness(witness_dir or key_path.parent)
        self._every, self._seconds = checkpoint_every, checkpoint_seconds
        self._grace = uncovered_grace_s
        self._writer: ChainWriter | None = None
        self._lock = threading.Lock()
        with self._reading():
            if not inspect(self.engine).has_table(AuditRecordRow.__tablename__):
                raise AuditUnavailable("the audit tables do not exist; run `appliance db upgrade`")

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditLog:
        return cls(
            settings.database_url,
            settings.audit_key_path,
            settings.audit_checkpoint_every,
            settings.audit_checkpoint_seconds,
            settings.audit_witness_dir,
            settings.audit_uncovered_grace_s,
        )

    def start_writer(self) -> None:
        """Start the writer now (a server does, at start): it signs a tail left uncovered by a crash within
        a second, instead of at the first append."""
        self._ensure_writer()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, event: AuditEvent) -> AuditRecord:
        """Chain and commit `event`; returns once durable or raises `AuditUnavailable` (fail closed).

        Thread-safe; from asyncio use `append_async`. Concurrent callers share one commit. After a timeout
        the record may still land; the caller has already failed closed.
        """
        future = self._ensure_writer().submit(event)
        try:
            values = future.result(timeout=APPEND_TIMEOUT_S)
        except TimeoutError as exc:
            raise AuditUnavailable(f"audit record not confirmed within {APPEND_TIMEOUT_S:.0f} s") from exc
        return _record(event, values)

    async def append_async(self, event: AuditEvent) -> AuditRecord:
        """`append` for asyncio code: waits on the writer's commit without occupying a worker thread.

        The wait is shielded: a caller cancelled or timed out here gives up its own wait only, never the
        writer's future (whose record may still land, and which the writer settles regardless)."""
        future = self._ensure_writer().submit(event)
        try:
            values = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), APPEND_TIMEOUT_S)
        except TimeoutError as exc:
            raise AuditUnavailable(f"audit record not confirmed within {APPEND_TIMEOUT_S:.0f} s") from exc
        return _record(event, values)

    def get(self, seq: int) -> AuditRecord | None:
        with self._reading() as conn:
            row = conn.execute(select(*_ROW).where(AuditRecordRow.seq == seq)).mappings().first()
        return unflatten(row) if row else None

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest record: what an operator writes down for `verify --expect-head`."""
        with self._reading() as conn:
            return store.read_head(conn)

    def query(self, filters: AuditFilter | None = None, cursor: int | None = None, limit: int = 50) -> AuditPage:
        if not 1 <= limit <= 10_000:
            raise AuditError("limit must be between 1 and 10000")
        stmt = select(*_ROW).order_by(AuditRecordRow.seq.desc()).limit(limit)
        for clause in _where(filters or AuditFilter()):
            stmt = stmt.where(clause)
        if cursor is not None:
            stmt = stmt.where(AuditRecordRow.seq < cursor)
        with self._reading() as conn:
            records = [unflatten(row) for row in conn.execute(stmt).mappings()]
        return AuditPage(records, records[-1].seq if len(records) == limit else None)

    def matching(self, event: str, **detail: str) -> Iterator[AuditRecord]:
        """Every `event` record whose detail holds `detail`, newest first, read a page at a time."""
        cursor = None
        while True:
            page = self.query(AuditFilter(event=event), cursor=cursor, limit=200)
            yield from (r for r in page.records if all(r.detail.get(k) == v for k, v in detail.items()))
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def latest(self, event: str, **detail: str) -> AuditRecord | None:
        """What the log says is in force (the newest policy reload, a bundle's newest activation), which the
        files must then agree with."""
        return next(self.matching(event, **detail), None)

    def request_records(self, request_id: str, key_id: str | None = None, limit: int = 100) -> list[AuditRecord]:
        """Every record of one request (request, outcome, denials), oldest first. A request id may be the
        caller's own choice, so one request is the id *and* the key that made it (`key_id`): another caller
        who sends the same id never joins it. Without `key_id`, every record carrying the id."""
        stmt = select(*_ROW).where(AuditRecordRow.request_id == request_id)
        if key_id is not None:
            stmt = stmt.where(AuditRecordRow.principal_key_id == key_id)
        stmt = stmt.order_by(AuditRecordRow.seq).limit(limit)
        with self._reading() as conn:
            return [unflatten(row) for row in conn.execute(stmt).mappings()]

    def covering_checkpoint(self, seq: int) -> Checkpoint | None:
        """The first signed checkpoint at or after `seq`: the signature that vouches for record `seq`."""
        with self._reading() as conn:
            return store.covering_checkpoint(conn, seq)

    def coverage(self) -> tuple[Checkpoint | None, int]:
        """The newest signed checkpoint and how many records after it no signature covers yet."""
        with self._reading() as conn:
            newest = store.newest_checkpoint(conn)
            head_seq, _ = store.read_head(conn)
        return newest, head_seq - (newest.seq if newest else 0)

    def activity(
        self, filters: AuditFilter, since: datetime, until: datetime, hourly: bool
    ) -> list[tuple[str, int, int, int]]:
        """(hour or day, records, denials, errors) per period of [since, until) under `filters`: one
        grouped query, for the chart."""
        period = func.substr(AuditRecordRow.ts, 1, 13 if hourly else 10)
        denied = func.sum(case((AuditRecordRow.action == "deny", 1), else_=0))
        failed = func.sum(case((or_(AuditRecordRow.status >= 500, AuditRecordRow.event == "error"), 1), else_=0))
        stmt = select(period, func.count(), denied, failed).group_by(period).order_by(period)
        for clause in _where(replace(filters, since=since, until=until)):
            stmt = stmt.where(clause)
        with self._reading() as conn:
            return [tuple(row) for row in conn.execute(stmt)]

    def usage(
        self, since: datetime, until: datetime, by: str, events: Iterable[str]
    ) -> list[tuple[str | None, int, int, int, int]]:
        """(key id or model, records, prompt, completion, reasoning tokens) of the `events` records (the
        outcome records, which hold each request's usage) in [since, until): one grouped query."""
        column = AuditRecordRow.principal_key_id if by == "key" else AuditRecordRow.model
        sums = (
            func.coalesce(func.sum(c), 0)
            for c in (AuditRecordRow.prompt_tokens, AuditRecordRow.completion_tokens, AuditRecordRow.reasoning_tokens)
        )
        stmt = (
            select(column, func.count(), *sums)
            .where(
                AuditRecordRow.event.in_(list(events)),
                AuditRecordRow.ts >= store.format_ts(since),
                AuditRecordRow.ts < store.format_ts(until),
            )
            .group_by(column)
            .order_by(column)
        )
        with self._reading() as conn:
            return [(row[0], *(int(v or 0) for v in row[1:])) for row in conn.execute(stmt)]  # type: ignore[misc]

    def count(self, filters: AuditFilter | None = None) -> int:
        stmt = select(func.count()).select_from(AuditRecordRow).where(*_where(filters or AuditFilter()))
        with self._reading() as conn:
            return conn.execute(stmt).scalar_one()

    def verify(
        self,
        trust: list[keys.PublicKey] | None = None,
        expect_head: tuple[int, str] | None = None,
        progress: Callable[[int], None] | None = None,
        workers: int = 1,
    ) -> VerifyReport:
        """Recompute the chain and check every checkpoint against `trust` (default: this appliance's key).

        With `workers` > 1, a log of more than one task's records is hashed in that many processes
        (parallel.py); the verdict is the same. A prune that ran meanwhile (the oldest record or the anchors
        changed) makes the workers' view differ from this snapshot's: it is then verified again in one."""
        from appliance.audit import parallel

        trusted = signer.trust_map(trust if trust is not None else self._own_public_keys())
        witnessed = self.witness.read()
        with self._reading(snapshot=True) as conn:
            rows = parallel.rows_for(self.engine, conn, raw_rows, workers)
            split, before = callable(rows), _prune_marks(conn)
            report = verify_chain(
                rows,
                store.load_checkpoints(conn),
                trusted,
                expect_head,
                progress,
                witness=witnessed.in_force,
                witness_problems=witnessed.problems,
                max_uncovered_s=self._seconds + self._grace,
            )
        if split and not report.ok:
            with self._reading() as conn:
                if _prune_marks(conn) != before:
                    return self.verify(trust, expect_head, None, workers=1)
        return report

    def export(
        self,
        fmt: str,
        out_file: Path,
        progress: Callable[[int], None] | None = None,
        filters: AuditFilter | None = None,
        also: int | None = None,
    ) -> int:
        """Write the log to `out_file` as `jsonl` (verifiable alone) or `csv`; returns the record count.

        With `filters`, CSV holds the matching records; JSONL holds the signed slice of the chain around
        them (from the checkpoint before the first match to the one after the last), since a chain with
        holes could not be verified: it then verifies alone as records `first..last`. Record `also` (the
        export's own `audit.exported` record) is held as if it matched."""
        from appliance.audit import export

        witnessed = list(self.witness.entries()) if fmt == "jsonl" else []  # read first: all in the snapshot
        with self._reading(snapshot=True) as conn:
            checkpoints = store.load_checkpoints(conn)
            stmt = select(*_ROW).order_by(AuditRecordRow.seq)
            matched = None if filters is None else and_(true(), *_where(filters))
            if matched is not None and also is not None:
                matched = or_(matched, AuditRecordRow.seq == also)
            if matched is not None and fmt == "csv":
                stmt = stmt.where(matched)
            elif matched is not None and (bounds := _slice(conn, matched, checkpoints)) is not None:
                start, end = bounds
                stmt = stmt.where(AuditRecordRow.seq > start, AuditRecordRow.seq <= end)
                checkpoints = [cp for cp in checkpoints if start <= cp.seq <= end]
                witnessed = [cp for cp in witnessed if start <= cp.seq <= end]
            elif filters is not None:
                stmt, checkpoints, witnessed = stmt.where(false()), [], []
            rows = conn.execution_options(yield_per=20_000).execute(stmt)
            return export.write(
                fmt, out_file, checkpoints, cast(Iterable[Mapping[str, Any]], rows.mappings()), progress, witnessed
            )

    def prune(
        self,
        before: datetime,
        actor: Principal | None = None,
        *,
        min_retention_days: int,
        export_dir: Path | None,
        forwarded_to: list[str] | None = None,
    ) -> PruneResult:
        """Delete records older than `before`, leaving a signed anchor so what remains still verifies.

        `before` may be no later than `min_retention_days` ago (`audit_min_retention_days`): no single
        command may empty the log. With `export_dir`, what is to be removed is first written there as a
        JSONL export (the signed slice holding it), verified against this appliance's key and made durable;
        only then is anything deleted. The prune is itself recorded first (`admin.audit_pruned`, with the
        cut-off, the floor and the export's path), and that record is never removed. A collector named in
        `forwarded_to` (`audit_forward`) that has not been delivered every record to remove refuses the prune:
        it would never receive them (a gap in the SIEM's copy).
        """
        floor = datetime.now(UTC) - timedelta(days=min_retention_days)
        cutoff = store.format_ts(before)
        if cutoff > store.format_ts(floor):
            raise AuditError(
                f"prune refused: {cutoff} is within the minimum retention of {min_retention_days} "
                f"days (audit_min_retention_days); the latest cut-off allowed is "
                f"{store.format_ts(floor)}"
            )
        with self._reading() as conn:
            due = conn.execute(select(AuditRecordRow.seq).where(AuditRecordRow.ts < cutoff).limit(1)).first()
        export_to = None
        if export_dir is not None and due is not None:
            export_to = export_dir / f"audit-pruned-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}.jsonl"
        marker = self.append(
            AuditEvent(
                event="admin.audit_pruned",
                principal=actor or Principal(),
                detail={
                    "before": cutoff,
                    "min_retention_days": str(min_retention_days),
                    "export": str(export_to or "none"),
                },
            )
        )
        key = signer.load_or_create(self.key_path)
        exported = self._export_pruned(export_to, before, key.public_key()) if export_to is not None else None
        with self.witness.ordered():  # held from before the cut until its anchor's line is written
            removed, anchor = self._cut(cutoff, marker.seq, key, exported, export_to, forwarded_to or [])
            if anchor is not None:
                self.witness.append(anchor)
        return PruneResult(removed, anchor.seq if anchor is not None else None, export_to)

    def _cut(
        self,
        cutoff: str,
        marker_seq: int,
        key: keys.PrivateKey,
        exported: tuple[int, int] | None,
        export_to: Path | None,
        forwarded_to: list[str],
    ) -> tuple[int, Checkpoint | None]:
        """Delete the records before `cutoff` (never the prune's own record) and sign the anchor at the cut;
        refused unless `exported` (the seq range of the export at `export_to`) covers what goes."""
        try:
            with store.write_transaction(self.engine) as conn:
                problem = checkpoints.stretch_problem(conn, store.last_checkpoint(conn), key.public_key(), self.witness)
                if problem is not None:
                    raise AuditTampered(f"prune refused, the log does not verify: {problem}")
                cut = conn.execute(
                    select(func.max(AuditRecordRow.seq)).where(
                        AuditRecordRow.ts < cutoff, AuditRecordRow.seq < marker_seq
                    )
                ).scalar_one()
                if cut is None:
                    return 0, None
                behind = forward.undelivered(conn, forwarded_to, cut) if forwarded_to else []
                if behind:
                    name, seq = behind[0]
                    raise AuditError(
                        f"prune refused: collector {name} has been delivered records up to seq {seq} "
                        f"only, and the cut at seq {cut} would remove records it never received (see "
                        f"`appliance audit forward status`)"
                    )
                oldest = conn.execute(select(func.min(AuditRecordRow.seq))).scalar_one()
                if exported is not None and not (exported[0] <= oldest and cut <= exported[1]):
                    raise AuditError(
                        f"prune refused: {export_to} holds seq {exported[0]}..{exported[1]}, not every "
                        f"record to remove ({oldest}..{cut})"
                    )
                head = conn.execute(select(AuditRecordRow.hash).where(AuditRecordRow.seq == cut)).scalar_one()
                # The anchor restarts the checkpoint chain at the cut: it carries the digest that the first
                # checkpoint after the cut names (that of the newest one removed).
                removed_checkpoints = [cp for cp in store.load_checkpoints(conn) if cp.seq <= cut]
                prev = max(removed_checkpoints, key=lambda cp: cp.seq).digest() if removed_checkpoints else GENESIS
                removed = conn.execute(delete(AuditRecordRow).where(AuditRecordRow.seq <= cut)).rowcount
                conn.execute(delete(AuditCheckpointRow).where(AuditCheckpointRow.seq <= cut))
                anchor = signer.sign_checkpoint(key, "anchor", cut, head, store.now_ts(), prev)
                store.insert_checkpoint(conn, anchor)
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"prune failed: {first_line(exc)}") from exc
        return removed, anchor

    def _export_pruned(self, out_file: Path, before: datetime, public_key: keys.PublicKey) -> tuple[int, int]:
        """Export the records before `before` (the signed slice around them) to `out_file`, durably, and
        verify the file; returns the (first, last) seq it proves."""
        from appliance.audit import export

        try:
            out_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.export("jsonl", out_file, filters=AuditFilter(until=before))
            fsync_dir(out_file.parent)
        except OSError as exc:
            raise AuditError(f"prune refused: cannot export to {out_file}: {exc.strerror or exc}") from exc
        report = export.verify_file(out_file, [public_key])
        report.raise_if_bad()
        if report.first_seq is None or report.last_seq is None:
            raise AuditError(f"prune refused: the export {out_file} holds no records")
        return report.first_seq, report.last_seq

    def close(self) -> None:
        """Flush pending appends, leave a closing checkpoint, release connections."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        self.engine.dispose()

    def _ensure_writer(self) -> ChainWriter:
        with self._lock:
            if self._writer is None:
                key = signer.load_or_create(self.key_path)
                self._writer = ChainWriter(self.engine, key, self._every, self._seconds, self.witness)
            return self._writer

    def _own_public_keys(self) -> list[keys.PublicKey]:
        path = signer.public_key_path(self.key_path)
        for candidate in (path, self.key_path):
            if candidate.exists():
                return [keys.load_public_key(candidate)]
        return []

    @contextmanager
    def _reading(self, snapshot: bool = False) -> Iterator[Connection]:
        """A read transaction whose database errors surface as `AuditUnavailable`.

        `snapshot`: one consistent view across statements (PostgreSQL; SQLite WAL readers have it anyway)."""
        try:
            with self.engine.connect() as conn:
                if snapshot and conn.dialect.name == "postgresql":
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"audit database unavailable: {first_line(exc)}") from exc


def _prune_marks(conn: Connection) -> tuple[Any, ...]:
    """What a prune changes: the oldest record and the anchors."""
    anchors = (
        select(func.count()).select_from(AuditCheckpointRow).where(AuditCheckpointRow.kind == "anchor")
    ).scalar_subquery()
    return tuple(conn.execute(select(func.min(AuditRecordRow.seq), anchors)).one())


def raw_rows(conn: Connection, seqs: tuple[int, int] | None = None) -> Iterator[tuple[Any, ...]]:
    """Every record (or those with seq in `seqs`, both ends included) in seq order as plain driver tuples:
    verification's hot loop skips SQLAlchemy's rows (a third of the time on 1M records). PostgreSQL streams
    through a server-side cursor."""
    raw = conn.connection.driver_connection
    assert raw is not None
    cursor = raw.cursor(name="audit_rows") if conn.dialect.name == "postgresql" else raw.cursor()
    where = "" if seqs is None else f" WHERE seq BETWEEN {int(seqs[0])} AND {int(seqs[1])}"
    try:
        cursor.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM {AuditRecordRow.__tablename__}{where} ORDER BY seq")
        while batch := cursor.fetchmany(20_000):
            yield from batch
    finally:
        cursor.close()


def _record(event: AuditEvent, values: dict[str, Any]) -> AuditRecord:
    return AuditRecord.model_construct(
        **dict(event), seq=values["seq"], ts=values["ts"], prev_hash=values["prev_hash"], hash=values["hash"]
    )


def _slice(conn: Connection, matched: ColumnElement[bool], checkpoints: list[Checkpoint]) -> tuple[int, int] | None:
    """(start, end]: the records between the signed checkpoints around the matches (None: no match)."""
    first, last = conn.execute(select(func.min(AuditRecordRow.seq), func.max(AuditRecordRow.seq)).where(matched)).one()
    if first is None:
        return None
    start = max((cp.seq for cp in checkpoints if cp.seq < first), default=0)
    end = min((cp.seq for cp in checkpoints if cp.seq >= last), default=store.read_head(conn)[0])
    return start, end


_KEY_ID = re.compile(r"[0-9a-f]{16}")  # what apikeys issues; anything else is a name
CLOCK_SLACK = timedelta(hours=1)


def _seq_before(moment: datetime) -> ColumnElement[int]:
    """A seq below every record at or after `moment`: the last one stamped before `moment - CLOCK_SLACK`.

    Records are stamped in seq order, so this turns a time range into a seq range the page can walk newest
    first by primary key (one index seek, no sort of the whole range). It stays exact as long as no
    record's clock ran more than CLOCK_SLACK behind an earlier record's; the ts clause still filters."""
    return func.coalesce(
        select(AuditRecordRow.seq)
        .where(AuditRecordRow.ts < store.format_ts(moment - CLOCK_SLACK))
        .order_by(AuditRecordRow.ts.desc())
        .limit(1)
        .scalar_subquery(),
        0,
    )


def _seq_after(moment: datetime) -> ColumnElement[int]:
    """A seq above every record before `moment` (see `_seq_before`)."""
    return func.coalesce(
        select(AuditRecordRow.seq)
        .where(AuditRecordRow.ts >= store.format_ts(moment + CLOCK_SLACK))
        .order_by(AuditRecordRow.ts)
        .limit(1)
        .scalar_subquery(),
        MAX_SEQ,
    )


def _where(f: AuditFilter) -> list[ColumnElement[bool]]:
    clauses = []
    if f.since is not None:
        clauses += [AuditRecordRow.ts >= store.format_ts(f.since), AuditRecordRow.seq > _seq_before(f.since)]
    if f.until is not None:
        clauses += [AuditRecordRow.ts < store.format_ts(f.until), AuditRecordRow.seq < _seq_after(f.until)]
    if f.principal is not None:  # one indexed column, so the page reads newest-first off (column, seq)
        column = AuditRecordRow.principal_key_id if _KEY_ID.fullmatch(f.principal) else AuditRecordRow.principal_name
        clauses.append(column == f.principal)
    if f.event is not None and f.event.endswith(".*"):
        clauses.append(AuditRecordRow.event.startswith(f.event[:-1], autoescape=True))
    elif f.event is not None:
        clauses.append(AuditRecordRow.event == f.event)
    matches: tuple[tuple[Any, Any], ...] = (
        (AuditRecordRow.action, f.action),
        (AuditRecordRow.model, f.model),
        (AuditRecordRow.policy_revision, f.policy_revision),
        (AuditRecordRow.status, f.status),
    )
    for column, value in matches:
        if value is not None:
            clauses.append(column == value)
    if f.text:
        clauses.append(AuditRecordRow.content.contains(f.text, autoescape=True))
    if f.after_seq is not None:
        clauses.append(AuditRecordRow.seq > f.after_seq)
    return clauses
