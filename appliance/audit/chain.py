"""The hash chain: canonical serialisation of a record, its link hash, and verification of a whole log.

Canonical serialisation (docs/architecture.md has the full definition): the JSON array
`["appliance-audit/1", seq, ts, event, ..., detail]` in `CHAIN_COLUMNS` order, compact, ASCII-only, with
list and map fields carried as their own canonical JSON text. `hash = SHA-256(prev_hash bytes || that)`.
One definition serves the database rows, the Python records and the JSONL export, so each verifies alike.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from appliance.audit.errors import AuditTampered
from appliance.audit.events import AuditEvent, AuditRecord
from appliance.audit.models import COLUMN_LIMITS, AuditRecordRow
from appliance.signing import keys

FORMAT = "appliance-audit/1"
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # UTC, microseconds: the stored form of every time
GENESIS = "0" * 64
CHAIN_COLUMNS = tuple(c.name for c in AuditRecordRow.__table__.columns if c.name not in ("prev_hash", "hash"))
# Columns added after format 1 was fixed: each is in the hashed array only when it (or one after it) is set,
# so every record written before it existed keeps its bytes and its hash.
OPTIONAL_TAIL = ("principal_cert_subject",)
_BASE = len(CHAIN_COLUMNS) - len(OPTIONAL_TAIL)
assert CHAIN_COLUMNS[_BASE:] == OPTIONAL_TAIL
ROW_COLUMNS = (*CHAIN_COLUMNS, "prev_hash", "hash")
_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), sort_keys=True, allow_nan=False).encode


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str | None) -> str | None:
    """`text` in a form every database stores: NUL (PostgreSQL refuses it) and lone surrogates (not UTF-8)
    are written as `\\uXXXX` escapes, so a hostile string is recorded rather than failing its record."""
    if text is None or (text.isascii() and "\x00" not in text):
        return text
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def bounded(column: str, text: str) -> str:
    """`text` cut to `column`'s declared length, ending in a marker that says so and how long it was: a
    caller-chosen path, model or name too long for its column is recorded shortened rather than failing its
    record (PostgreSQL refuses an over-long value; SQLite would keep it). Applied before hashing, so the
    hash covers exactly what is stored; a value that fits is unchanged, so applying it twice changes nothing."""
    limit = COLUMN_LIMITS.get(column)
    if limit is None or len(text) <= limit:
        return text
    marker = f"...[truncated from {len(text)} chars]"
    return (text[: max(limit - len(marker), 0)] + marker)[:limit]


def json_text(value: Any) -> str:
    """Canonical JSON of a list or map field: compact, keys sorted, ASCII with \\u escapes."""
    return _encode(value)


def canonical(values: Sequence[Any]) -> bytes:
    """The bytes hashed for one record, from its values in `CHAIN_COLUMNS` order (trailing unset
    `OPTIONAL_TAIL` values left out)."""
    values = list(values)
    while len(values) > _BASE and values[-1] is None:
        values.pop()
    return _encode([FORMAT, *values]).encode("ascii")


def link(prev_hash: str, canonical_bytes: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_bytes).hexdigest()


def flatten(event: AuditEvent | AuditRecord, seq: int, ts: str, *, bound: bool = True) -> dict[str, Any]:
    """Column values of `event` as record `seq` made at `ts` (without the chain fields), each in a form its
    column stores: escaped (`storable`) and, unless `bound` is False, cut to the column's length (`bounded`)."""
    values = {
        "seq": seq,
        "ts": ts,
        "event": event.event,
        "request_id": event.request_id,
        "principal_key_id": event.principal.key_id,
        "principal_name": event.principal.name,
        "principal_role": event.principal.role,
        "source": event.source,
        "route": event.route,
        "model": event.model,
        "bundle_version": event.bundle_version,
        "policy_revision": event.policy_revision,
        "action": event.decision.action,
        "rule_ids": json_text(list(event.decision.rule_ids)),
        "findings": json_text(event.decision.findings),
        "content_mode": event.content_mode,
        "content": event.content,
        "prompt_tokens": event.usage.prompt_tokens,
        "completion_tokens": event.usage.completion_tokens,
        "reasoning_tokens": event.usage.reasoning_tokens,
        "latency_ms": event.latency_ms,
        "status": event.status,
        "error_code": event.error_code,
        "detail": json_text(event.detail),
        "principal_cert_subject": event.principal.cert_subject,
    }
    return {k: _stored(k, v, bound) if isinstance(v, str) else v for k, v in values.items()}


def _stored(column: str, text: str, bound: bool) -> str:
    escaped = storable(text) or ""
    return bounded(column, escaped) if bound else escaped


def record_row(record: AuditRecord) -> tuple[Any, ...]:
    """A record as the row tuple `verify_chain` takes (values, prev_hash, hash): as it was stored, never cut
    again (a record written before values were bounded may be longer than its column on SQLite)."""
    values = flatten(record, record.seq, record.ts, bound=False)
    return (*(values[c] for c in CHAIN_COLUMNS), record.prev_hash, record.hash)


def unflatten(row: Any) -> AuditRecord:
    """A record from a database row mapping (`ROW_COLUMNS` keys)."""
    return AuditRecord.model_validate(
        {
            "seq": row["seq"],
            "ts": row["ts"],
            "event": row["event"],
            "request_id": row["request_id"],
            "principal": {
                "key_id": row["principal_key_id"],
                "name": row["principal_name"],
                "role": row["principal_role"],
                "cert_subject": row["principal_cert_subject"],
            },
            "source": row["source"],
            "route": row["route"],
            "model": row["model"],
            "bundle_version": row["bundle_version"],
            "policy_revision": row["policy_revision"],
            "decision": {
                "action": row["action"],
                "rule_ids": json.loads(row["rule_ids"]),
                "findings": json.loads(row["findings"]),
            },
            "content_mode": row["content_mode"],
            "content": row["content"],
            "usage": {
                "prompt_tokens": row["prompt_tokens"],
                "completion_tokens": row["completion_tokens"],
                "reasoning_tokens": row["reasoning_tokens"],
            },
            "latency_ms": row["latency_ms"],
            "status": row["status"],
            "error_code": row["error_code"],
            "detail": json.loads(row["detail"]),
            "prev_hash": row["prev_hash"],
            "hash": row["hash"],
        }
    )


@dataclass(frozen=True)
class Checkpoint:
    """A signed claim that record `seq` has hash `head_hash`, naming the checkpoint before it (`prev`: its
    `digest`, or `GENESIS` for the first), so checkpoints form a chain of their own: one deleted from the
    middle breaks it (see models.AuditCheckpointRow). Checkpoints made before the chain existed have no
    `prev` and sign the shorter message."""

    kind: str
    seq: int
    head_hash: str
    ts: str
    key_id: str
    signature: bytes
    prev: str | None = None

    def message(self) -> bytes:
        return checkpoint_message(self.kind, self.seq, self.head_hash, self.ts, self.prev)

    def digest(self) -> str:
        """What the next checkpoint names as its `prev`: SHA-256 of the signed message and the signature."""
        return hashlib.sha256(self.message() + b"\n" + self.signature).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The form exports and the witness file carry."""
        out = {
            "kind": self.kind,
            "seq": self.seq,
            "head_hash": self.head_hash,
            "ts": self.ts,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode(),
        }
        return out if self.prev is None else {**out, "prev": self.prev}

    @classmethod
    def from_json(cls, obj: Any) -> Checkpoint:
        """Raises KeyError, TypeError or ValueError on anything that is not a checkpoint."""
        prev = obj.get("prev")
        return cls(
            str(obj["kind"]),
            int(obj["seq"]),
            str(obj["head_hash"]),
            str(obj["ts"]),
            str(obj["key_id"]),
            base64.b64decode(obj["signature"], validate=True),
            None if prev is None else str(prev),
        )


def checkpoint_message(kind: str, seq: int, head_hash: str, ts: str, prev: str | None = None) -> bytes:
    """What the audit key signs: format tag, kind, sequence, head hash, time and (chained) the previous
    checkpoint's digest, one per line."""
    text = f"{FORMAT}/checkpoint\n{kind}\n{seq}\n{head_hash}\n{ts}"
    return (text if prev is None else f"{text}\n{prev}").encode()


def chain_problems(checkpoints: list[Checkpoint], from_start: bool = True) -> list[tuple[int, str]]:
    """Where the chain of checkpoints (in seq order) is broken: a checkpoint deleted from it, or one not
    made by a writer that saw its predecessor. A prune `anchor` starts the chain again where it cut: it
    carries the digest its first successor names. Without `from_start` (a slice of the log) the first
    checkpoint may name one that is not there."""
    problems = []
    before: Checkpoint | None = None
    for cp in checkpoints:
        if cp.prev is None:  # made before checkpoints were chained
            before = cp
            continue
        if before is None:
            if from_start and cp.kind != "anchor" and cp.prev != GENESIS:
                problems.append((cp.seq, f"the checkpoint chain has lost checkpoints before seq {cp.seq}"))
        elif cp.prev not in {before.digest(), before.prev if before.kind == "anchor" else None}:
            problems.append(
                (
                    cp.seq,
                    f"the checkpoint chain is broken between seq {before.seq} and {cp.seq} "
                    f"(a checkpoint was deleted or forged)",
                )
            )
        before = cp
    return problems


@dataclass
class VerifyReport:
    """The outcome of a verification; `bad_seq` is the first sequence number found wrong."""

    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_hash: str | None = None
    checkpoints: int = 0
    witnessed: int = 0  # witness entries held against the log
    uncovered: int = 0  # records after the newest checkpoint: no signature covers them yet
    uncovered_since: str | None = None  # the time of the oldest of those
    problems: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_seq(self) -> int | None:
        return min(self.problems)[0] if self.problems else None

    @property
    def reason(self) -> str | None:
        return min(self.problems)[1] if self.problems else None

    def raise_if_bad(self) -> None:
        if self.problems:
            raise AuditTampered(f"audit log fails verification at seq {self.bad_seq}: {self.reason}")


Claims = dict[int, list[tuple[str, str]]]  # seq -> (who claims it, the hash claimed)


@dataclass
class Stretch:
    """What `walk` found in a run of consecutive rows, checked on their own: every record's hash, the links
    between them and the claims on them. Only the first row's `prev_hash` waits for the stretch before it
    (`verify_chain` holds it against that one's last hash), so stretches can be walked apart, in parallel."""

    first: tuple[int, str] | None = None  # seq and prev_hash of the first row; None: no rows
    records: int = 0  # rows accepted before the first problem
    last: tuple[int, str] | None = None  # seq and hash of the last accepted row
    uncovered: int = 0
    uncovered_since: str | None = None
    problems: list[tuple[int, str]] = field(default_factory=list)  # where the walk stopped, and why


_UNLINKED = "prev_hash does not link to the record before it"


def _gap(last_seq: int, seq: int) -> tuple[int, str]:
    """The problem when record `seq` comes right after record `last_seq`."""
    if seq > last_seq:
        return last_seq + 1, f"record {last_seq + 1} is missing"
    return last_seq + 1, f"record {seq} is out of order or duplicated"


def walk(rows: Iterable[Sequence[Any]], claims: Claims, covered: int) -> Stretch:
    """Check `rows` (ascending seq) as one stretch; stops at its first problem, since every later record hangs
    on it. `covered`: the newest checkpointed seq (records after it are counted as uncovered)."""
    stretch = Stretch()
    last_seq, last_hash = 0, ""
    for row in rows:
        seq, prev_hash, row_hash = row[0], row[-2], row[-1]
        if stretch.first is None:
            stretch.first = (seq, prev_hash)
        else:
            if seq != last_seq + 1:
                stretch.problems.append(_gap(last_seq, seq))
                break
            if prev_hash != last_hash:
                stretch.problems.append((seq, _UNLINKED))
                break
        if link(prev_hash, canonical(row[:-2])) != row_hash:
            stretch.problems.append((seq, "hash does not match the record's content"))
            break
        wrong = [label for label, claimed in claims.get(seq, ()) if claimed != row_hash]
        stretch.problems.extend((seq, f"record does not match {label}") for label in wrong)
        if wrong:
            break
        if seq > covered:
            stretch.uncovered += 1
            stretch.uncovered_since = stretch.uncovered_since or row[1]
        last_seq, last_hash = seq, row_hash
        stretch.records += 1
    stretch.last = (last_seq, last_hash) if stretch.records else None
    return stretch


def _in_stretches(rows: Iterable[Sequence[Any]], claims: Claims, covered: int) -> Iterator[Stretch]:
    """`rows` walked 10,000 at a time in this process (the progress bar moves; memory stays bounded)."""
    it = iter(rows)
    while batch := list(itertools.islice(it, 10_000)):
        yield walk(batch, claims, covered)


# Walks the rows of a log in stretches (ascending seq), given the claims and `covered`: e.g. in processes.
StretchSource = Callable[[Claims, int], Iterable[Stretch]]


def verify_chain(
    rows: Iterable[Sequence[Any]] | StretchSource,
    checkpoints: Iterable[Checkpoint],
    trust: dict[str, keys.PublicKey],
    expect_head: tuple[int, str] | None = None,
    progress: Callable[[int], None] | None = None,
    slice_ok: bool = False,
    *,
    witness: Iterable[Checkpoint] = (),
    witness_problems: Iterable[tuple[int, str]] = (),
    max_uncovered_s: float | None = None,
    now: datetime | None = None,
) -> VerifyReport:
    """Recompute the chain over `rows` (ascending seq) and hold it against signed checkpoints.

    `rows` is either the rows themselves or a `StretchSource` that walks them in stretches elsewhere (the
    verdict is the same: the stretches are joined here, in order). `trust` maps key ids (`keys.key_hint`) to
    public keys. Stops at the first broken link, since every later record hangs on it. The checkpoints must
    form an unbroken chain; `witness` (checkpoints kept outside the database, those in force: witness.order)
    must each still be in it and match its record, so a deleted tail or a rewritten history with its
    checkpoints deleted shows; `witness_problems` (lines out of order or replayed) are failures too. With
    `max_uncovered_s`, records that no checkpoint covers may be no older than that (a writer signs the head
    within about a second of its last append). `slice_ok`: the rows may start after any signed checkpoint,
    not only after a prune anchor (an export of part of the log; the report's first_seq says where it starts).
    """
    report = VerifyReport()
    report.problems.extend(witness_problems)
    claims: Claims = {}
    anchors: dict[int, str] = {}
    ordered = sorted(checkpoints, key=lambda c: (c.seq, c.kind != "anchor"))
    for cp in ordered:
        report.checkpoints += 1
        if _signed(cp, trust, report, "checkpoint"):
            claims.setdefault(cp.seq, []).append((f"the signed {cp.kind} checkpoint", cp.head_hash))
            if cp.kind == "anchor" or slice_ok:
                anchors[cp.seq] = cp.head_hash
    report.problems.extend(chain_problems(ordered, from_start=not slice_ok))
    stored = {(cp.kind, cp.seq, cp.head_hash) for cp in ordered}
    cut = max((cp.seq for cp in ordered if cp.kind == "anchor"), default=0)
    for cp in witness:
        report.witnessed += 1
        if not _signed(cp, trust, report, "witnessed checkpoint"):
            continue
        claims.setdefault(cp.seq, []).append(("the witnessed checkpoint", cp.head_hash))
        if cp.seq > cut and (cp.kind, cp.seq, cp.head_hash) not in stored:
            report.problems.append(
                (cp.seq, f"the database has lost the witnessed {cp.kind} checkpoint at seq {cp.seq}")
            )
    if expect_head is not None:
        claims.setdefault(expect_head[0], []).append(("the expected head", expect_head[1]))
    covered = max((cp.seq for cp in ordered), default=0)
    stretches = rows(claims, covered) if callable(rows) else _in_stretches(rows, claims, covered)

    last_seq, last_hash = 0, None
    for stretch in stretches:
        if stretch.first is None:
            continue
        seq, prev_hash = stretch.first
        if last_hash is None:
            report.first_seq = seq
            want = GENESIS if seq == 1 else anchors.get(seq - 1)
            if want is None:
                report.problems.append(
                    (
                        seq,
                        f"records before seq {seq} are missing and no signed "
                        f"{'checkpoint' if slice_ok else 'prune anchor'} covers them",
                    )
                )
                break
        else:
            if seq != last_seq + 1:
                report.problems.append(_gap(last_seq, seq))
                break
            want = last_hash
        if prev_hash != want:
            report.problems.append((seq, _UNLINKED))
            break
        report.records += stretch.records
        report.uncovered += stretch.uncovered
        report.uncovered_since = report.uncovered_since or stretch.uncovered_since
        if stretch.last is not None:
            last_seq, last_hash = stretch.last
        if progress is not None:
            progress(stretch.records)
        if stretch.problems:
            report.problems.extend(stretch.problems)
            break
    else:
        for seq in sorted(claims):
            if seq > last_seq:
                label = claims[seq][0][0]
                report.problems.append(
                    (last_seq + 1, f"records after seq {last_seq} are missing ({label} names seq {seq})")
                )
                break
        if max_uncovered_s is not None and report.uncovered_since is not None:
            age = (
                (now or datetime.now(UTC)) - datetime.strptime(report.uncovered_since, TS_FORMAT).replace(tzinfo=UTC)
            ).total_seconds()
            if age > max_uncovered_s:
                report.problems.append(
                    (
                        covered + 1,
                        f"{report.uncovered} records since seq {covered + 1} are "
                        f"covered by no signature for {age:.0f} s (a writer signs "
                        f"within seconds: checkpoints deleted?)",
                    )
                )
    report.last_seq, report.head_hash = (last_seq or None), last_hash
    return report


def _signed(cp: Checkpoint, trust: dict[str, keys.PublicKey], report: VerifyReport, what: str) -> bool:
    key = trust.get(cp.key_id)
    if key is None:
        report.problems.append((cp.seq, f"{cp.kind} {what} is signed by an untrusted key {cp.key_id[:16]}"))
        return False
    if not keys.verify(key, cp.signature, cp.message()):
        report.problems.append((cp.seq, f"{cp.kind} {what} has a bad signature"))
        return False
    return True
