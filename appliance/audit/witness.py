"""The witness: every checkpoint also kept outside the database, where a database writer cannot reach.

An insider who can write to the database but not to the signing key can still delete the newest records
together with their checkpoints (the chain that is left is valid), or rewrite history and delete the
checkpoints that would contradict it. The witness is an append-only JSONL file of checkpoints in a folder
of its own (`audit_witness_dir`: by default beside the keys, meant for a separate volume, a write-once
mount, or a file a log shipper forwards off the host), and each checkpoint also goes to syslog when the
host has one. `verify` holds the database against it: a witnessed checkpoint the database no longer has,
or whose record it contradicts, is reported. Root on the host can edit this file too; forwarding it off
the host (syslog to a collector, a WORM volume) is what closes that.

A restore (appliance/backup) takes the database back to an archived head and so removes the records after
it, whose checkpoints the witness holds. The witness is never rewritten: the restore appends a signed
checkpoint of kind `restore` at the restored head (also stored in the database's checkpoint chain), and
every earlier entry beyond that head is from then on *superseded*: still in the file, provable against a
copy of the removed records, but no longer held against the database.

Append-only storage stops nobody from appending, so the file's order is itself checked (`order`): lines are
written in the order their checkpoints were committed (the writer holds the file's lock from before its
database transaction until the line is written, so processes sharing the file cannot interleave), hence a
line older than one before it, or a copy of an earlier line, is a replayed or foreign line and fails
verification; such a line cancels nothing. A `restore` line cancels only lines written before it.
"""

from __future__ import annotations

import fcntl
import json
import os
import syslog
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from appliance.audit.chain import Checkpoint
from appliance.audit.errors import AuditError

FILE = "audit-witness.jsonl"
log = structlog.get_logger()


@dataclass
class WitnessOrder:
    """The witness read in file order: what the database must hold, what restores superseded, and the lines
    that break the order (seq, why)."""

    in_force: list[Checkpoint] = field(default_factory=list)
    superseded: list[Checkpoint] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)


def order(lines: Iterable[Checkpoint]) -> WitnessOrder:
    """Check the order of witnessed lines and apply their restores.

    Each line must be new (no copy of an earlier one) and no older than every line before it; a line that
    is not is reported and otherwise ignored, so a replayed `restore` line cancels nothing. A valid `restore`
    line at seq N supersedes the lines before it beyond N: the restore removed those records."""
    out = WitnessOrder()
    seen: dict[str, int] = {}
    newest_ts = ""
    for n, cp in enumerate(lines, 1):
        digest = cp.digest()
        if digest in seen:
            out.problems.append(
                (
                    cp.seq,
                    f"witness line {n} repeats line {seen[digest]} (the {cp.kind} checkpoint "
                    f"at seq {cp.seq}): a replayed line",
                )
            )
            continue
        seen[digest] = n
        if cp.ts < newest_ts:
            out.problems.append(
                (
                    cp.seq,
                    f"witness line {n} (the {cp.kind} checkpoint at seq {cp.seq}, {cp.ts}) is "
                    f"older than a line before it ({newest_ts}): a replayed or foreign line",
                )
            )
            continue
        newest_ts = cp.ts
        if cp.kind == "restore":
            out.superseded += [old for old in out.in_force if old.seq > cp.seq]
            out.in_force = [old for old in out.in_force if old.seq <= cp.seq]
        out.in_force.append(cp)
    return out


class Witness:
    def __init__(self, folder: Path, *, use_syslog: bool = True) -> None:
        self.path = folder / FILE
        self._syslog = use_syslog and Path("/dev/log").exists()
        self._newest: Checkpoint | None = None
        self._read = False
        self._held = threading.RLock()
        self._fd: int | None = None  # the file, open and locked while `ordered` is held
        self._depth = 0

    @contextmanager
    def ordered(self) -> Iterator[None]:
        """Hold the witness file's lock: a writer takes it before the database transaction that may sign a
        checkpoint and keeps it until the line is appended, so lines land in commit order across processes
        (the lock is always taken before the database's, never after). Without the file (unwritable folder)
        it goes on unlocked: the append will log why the line is missing."""
        with self._held:
            if self._depth == 0:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o640)
                    fcntl.flock(self._fd, fcntl.LOCK_EX)
                except OSError as exc:
                    self._close()
                    log.error("audit witness not locked", path=str(self.path), error=str(exc))
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._close()

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # releases the lock

    def append(self, cp: Checkpoint) -> None:
        """Append (and fsync) one checkpoint; a failure is logged, never fatal to the append that made it."""
        line = json.dumps({"checkpoint": cp.to_json()}, separators=(",", ":")) + "\n"
        if self._newest is None or cp.seq >= self._newest.seq or cp.kind == "restore":
            self._newest = cp
        with self.ordered():
            try:
                if self._fd is None:
                    raise OSError("the witness file could not be opened")
                os.write(self._fd, line.encode())
                os.fsync(self._fd)
            except OSError as exc:
                log.error("audit witness not written", path=str(self.path), error=str(exc))
        if self._syslog:
            syslog.openlog("appliance-audit", 0, syslog.LOG_AUTH)
            syslog.syslog(syslog.LOG_NOTICE, f"checkpoint {line.strip()}")

    def entries(self) -> list[Checkpoint]:
        """The witnessed checkpoints the database must hold: all but those a later restore superseded."""
        return self.read().in_force

    def read(self) -> WitnessOrder:
        """The file's lines in order, checked (`order`)."""
        return order(self.lines())

    def lines(self) -> Iterator[Checkpoint]:
        """Every witnessed checkpoint as written; a torn last line (a crash mid-write) is skipped, others
        are errors."""
        if not self.path.exists():
            return
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditError(f"cannot read the audit witness {self.path}: {exc}") from exc
        for n, line in enumerate(lines, 1):
            try:
                yield Checkpoint.from_json(json.loads(line)["checkpoint"])
            except (ValueError, KeyError, TypeError) as exc:
                if n == len(lines):
                    return
                raise AuditError(f"{self.path}:{n}: not a witnessed checkpoint") from exc

    def newest(self) -> Checkpoint | None:
        """The witnessed checkpoint with the highest seq: read from the file once, then kept up to date by
        this process's appends (the file grows by one line a second; it is not re-read per checkpoint)."""
        if not self._read:
            self._read = True
            for cp in self.entries():
                if self._newest is None or cp.seq >= self._newest.seq:
                    self._newest = cp
        return self._newest
