"""Export files: JSONL that carries the chain and checkpoints (and so verifies on its own), and flat CSV.

Files are written beside their destination and renamed into place, so an interrupted export never leaves
a half-written file under the requested name.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from appliance.audit.chain import ROW_COLUMNS, Checkpoint, VerifyReport, record_row, unflatten, verify_chain
from appliance.audit.errors import AuditError
from appliance.audit.events import AuditRecord
from appliance.audit.formats import FORMATS
from appliance.audit.witness import order
from appliance.files import atomic_write
from appliance.signing import keys


def write(
    fmt: str,
    out_file: Path,
    checkpoints: list[Checkpoint],
    rows: Iterable[Mapping[str, Any]],
    progress: Callable[[int], None] | None = None,
    witness: list[Checkpoint] | None = None,
) -> int:
    """Stream `rows` (ascending seq) to `out_file` in `fmt`; returns how many records were written. A JSONL
    export carries the checkpoints and the witness entries, so it verifies on its own."""
    if fmt not in FORMATS:
        raise AuditError(f"unknown export format {fmt!r} (use {' or '.join(FORMATS)})")
    if not out_file.parent.is_dir():
        raise AuditError(f"folder {out_file.parent} does not exist")
    with atomic_write(out_file, newline="") as out:
        if fmt == "jsonl":
            for cp in witness or []:
                out.write(json.dumps({"witness": cp.to_json()}) + "\n")
            return _write_jsonl(out, checkpoints, rows, progress)
        return _write_csv(out, checkpoints, rows, progress)


def _write_jsonl(
    out: IO[Any],
    checkpoints: list[Checkpoint],
    rows: Iterable[Mapping[str, Any]],
    progress: Callable[[int], None] | None,
) -> int:
    for cp in checkpoints:
        out.write(json.dumps({"checkpoint": cp.to_json()}) + "\n")
    return _each(rows, lambda row: out.write(unflatten(row).model_dump_json() + "\n"), progress)


def _write_csv(
    out: IO[Any],
    _checkpoints: list[Checkpoint],
    rows: Iterable[Mapping[str, Any]],
    progress: Callable[[int], None] | None,
) -> int:
    writer = csv.writer(out)
    writer.writerow(ROW_COLUMNS)
    return _each(rows, lambda row: writer.writerow([spreadsheet_safe(row[c]) for c in ROW_COLUMNS]), progress)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A cell a spreadsheet will not run (OWASP CSV injection): text starting like a formula is prefixed
    with a single quote. The JSONL export keeps the exact values; CSV is for reading."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _each(rows: Iterable[Any], write_one: Callable[[Any], object], progress: Callable[[int], None] | None) -> int:
    count = 0
    for row in rows:
        write_one(row)
        count += 1
        if progress is not None and count % 1000 == 0:
            progress(1000)
    if progress is not None:
        progress(count % 1000)
    return count


def verify_file(
    path: Path,
    trust: list[keys.PublicKey],
    expect_head: tuple[int, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Verify a JSONL export without the database: its chain, and its checkpoints against `trust`.

    An export may be a slice of the log (a filtered export): it then starts right after a signed
    checkpoint, and the report's range says which records it proves."""
    from appliance.audit.signer import trust_map

    checkpoints = [_checkpoint(obj["checkpoint"], path, n) for n, obj in _lines(path) if "checkpoint" in obj]
    witness = order(_checkpoint(obj["witness"], path, n) for n, obj in _lines(path) if "witness" in obj)
    records = (
        record_row(_record(obj, path, n)) for n, obj in _lines(path) if "checkpoint" not in obj and "witness" not in obj
    )
    return verify_chain(
        records,
        checkpoints,
        trust_map(trust),
        expect_head,
        progress,
        witness=witness.in_force,
        witness_problems=witness.problems,
        slice_ok=True,
    )


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise AuditError(f"{path}:{n}: not JSON ({exc.msg})") from exc
                if not isinstance(obj, dict):
                    raise AuditError(f"{path}:{n}: not a JSON object")
                yield n, obj
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def _record(obj: dict[str, Any], path: Path, n: int) -> AuditRecord:
    try:
        return AuditRecord.model_validate(obj)
    except ValidationError as exc:
        raise AuditError(f"{path}:{n}: not an audit record ({exc.errors()[0]['msg']})") from exc


def _checkpoint(obj: Any, path: Path, n: int) -> Checkpoint:
    try:
        return Checkpoint.from_json(obj)
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditError(f"{path}:{n}: not a checkpoint") from exc
