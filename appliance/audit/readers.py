"""The log's readers on the log: who viewed and who searched the audit records, without a record per page.

A search's first page (or the first record a principal opens) is recorded at once, before the records are
shown (fail closed, like every other audited act). Further pages of the same search, or further records
opened, by the same principal within `window_s` are counted, and written as one aggregated record
(`aggregated`, `pages`, `count`, `first`, `last`) when the window ends: at the principal's next read after
it, or when the gateway stops. Exports and verifications are never aggregated: each is recorded (an export
first, so that it carries its own record).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime

from appliance.audit.chain import VerifyReport, json_text
from appliance.audit.events import AuditEvent
from appliance.audit.log import AuditFilter
from appliance.audit.store import now_ts
from appliance.principal import Principal

MAX_LISTED = 100  # record numbers an aggregated `audit.viewed` names; beyond, only the count


def filter_text(filters: AuditFilter | None) -> str:
    """A filter as recorded: canonical JSON of the fields that are set (values as text; `{}`: everything)."""
    set_fields = {} if filters is None else {k: v for k, v in asdict(filters).items() if v is not None}
    return json_text({k: v.isoformat() if isinstance(v, datetime) else str(v) for k, v in set_fields.items()})


def verified_detail(report: VerifyReport) -> dict[str, str]:
    """What an `audit.verified` record says about the verification it records."""
    detail = {
        "result": "ok" if report.ok else "failed",
        "count": str(report.records),
        "head": f"{report.last_seq}:{report.head_hash}" if report.records else "empty",
    }
    if not report.ok:
        detail["bad_seq"], detail["reason"] = str(report.bad_seq), (report.reason or "")[:500]
    return detail


@dataclass
class _Window:
    first_event: AuditEvent
    started: float
    pages: int = 0
    count: int = 0
    seqs: list[int] = field(default_factory=list)
    first: str = ""
    last: str = ""


class ReadWindows:
    """Aggregates repeated reads per (principal, event, filter) over `window_s`; thread-safe."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._open: dict[tuple[str, str, str], _Window] = {}
        self._lock = threading.Lock()

    def counted(self, event: AuditEvent, count: int, seq: int | None = None) -> bool:
        """True when a window of `event`'s principal, event and filter is open: the read is counted there.
        Otherwise the caller records `event` and then `opens` its window."""
        with self._lock:
            window = self._open.get(_key(event))
            if window is None or time.monotonic() - window.started >= self.window_s:
                return False
            window.pages += 1
            window.count += count
            window.last = now_ts()
            window.first = window.first or window.last
            if seq is not None and len(window.seqs) < MAX_LISTED:
                window.seqs.append(seq)
            return True

    def opens(self, event: AuditEvent) -> list[AuditEvent]:
        """Open a window for `event` (just recorded); returns the aggregate of the window it replaces, if any."""
        with self._lock:
            old = self._open.pop(_key(event), None)
            self._open[_key(event)] = _Window(event, time.monotonic())
        return [_aggregate(old, self.window_s)] if old is not None and old.pages else []

    def due(self, force: bool = False) -> list[AuditEvent]:
        """Aggregated records of the windows that ended (all of them with `force`) holding further reads."""
        now = time.monotonic()
        out = []
        with self._lock:
            for key, w in list(self._open.items()):
                if force or now - w.started >= self.window_s:
                    del self._open[key]
                    if w.pages:
                        out.append(_aggregate(w, self.window_s))
        return out


def _key(event: AuditEvent) -> tuple[str, str, str]:
    p: Principal = event.principal
    return f"{p.key_id or ''}/{p.name or ''}/{p.cert_subject or ''}", event.event, event.detail.get("filter", "")


def _aggregate(w: _Window, window_s: float) -> AuditEvent:
    detail = {
        **w.first_event.detail,
        "aggregated": "true",
        "pages": str(w.pages),
        "count": str(w.count),
        "first": w.first,
        "last": w.last,
        "window_s": f"{window_s:g}",
    }
    if w.seqs:
        detail["records"] = ",".join(map(str, w.seqs))
    return w.first_event.model_copy(update={"detail": detail, "request_id": None})
