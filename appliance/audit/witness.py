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
"""

from __future__ import annotations

import json
import os
import syslog
from collections.abc import Iterator
from pathlib import Path

import structlog

from appliance.audit.chain import Checkpoint
from appliance.audit.errors import AuditError

FILE = "audit-witness.jsonl"
log = structlog.get_logger()


class Witness:
    def __init__(self, folder: Path, *, use_syslog: bool = True) -> None:
        self.path = folder / FILE
        self._syslog = use_syslog and Path("/dev/log").exists()
        self._newest: Checkpoint | None = None
        self._read = False

    def append(self, cp: Checkpoint) -> None:
        """Append (and fsync) one checkpoint; a failure is logged, never fatal to the append that made it."""
        line = json.dumps({"checkpoint": cp.to_json()}, separators=(",", ":")) + "\n"
        if self._newest is None or cp.seq >= self._newest.seq or cp.kind == "restore":
            self._newest = cp
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("audit witness not written", path=str(self.path), error=str(exc))
        if self._syslog:
            syslog.openlog("appliance-audit", 0, syslog.LOG_AUTH)
            syslog.syslog(syslog.LOG_NOTICE, f"checkpoint {line.strip()}")

    def entries(self) -> list[Checkpoint]:
        """The witnessed checkpoints the database must hold: all but those a later restore superseded."""
        return self.split()[0]

    def split(self) -> tuple[list[Checkpoint], list[Checkpoint]]:
        """(in force, superseded by a restore): a `restore` entry at seq N supersedes every earlier entry
        beyond N, since the restore removed those records from the database."""
        kept: list[Checkpoint] = []
        superseded: list[Checkpoint] = []
        for cp in self.lines():
            if cp.kind == "restore":
                superseded += [old for old in kept if old.seq > cp.seq]
                kept = [old for old in kept if old.seq <= cp.seq]
            kept.append(cp)
        return kept, superseded

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
