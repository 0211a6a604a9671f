"""The group-commit writer against callers that give up and records that cannot be stored as given."""

from __future__ import annotations

import asyncio
import threading

import pytest

from appliance.audit import AuditEvent, AuditLog, AuditUnavailable
from appliance.audit import writer as writer_module
from tests.audit.conftest import request_event


def _writer_alive(log: AuditLog) -> bool:
    return log._writer is not None and log._writer._thread.is_alive()


@pytest.fixture
def held_writer(monkeypatch):
    """The writer's next batch waits until the test releases it (a slow disk or a held database lock)."""
    release = threading.Event()
    real = writer_module.flatten

    def slow_flatten(event, seq, ts):
        release.wait(30)
        return real(event, seq, ts)

    monkeypatch.setattr(writer_module, "flatten", slow_flatten)
    return release


async def test_a_cancelled_wait_leaves_the_writer_alive(audit_log: AuditLog, held_writer):
    waiting = asyncio.create_task(audit_log.append_async(request_event(1)))
    await asyncio.sleep(0.05)  # submitted, the writer holds it
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    held_writer.set()
    later = await asyncio.wait_for(audit_log.append_async(request_event(2)), 20)
    assert later.seq == 2  # the cancelled caller's record still landed first: nothing lost
    assert _writer_alive(audit_log)
    assert audit_log.verify().ok


async def test_a_timed_out_wait_leaves_the_writer_alive(audit_log: AuditLog, held_writer, monkeypatch):
    from appliance.audit import log as log_module

    monkeypatch.setattr(log_module, "APPEND_TIMEOUT_S", 0.1)
    with pytest.raises(AuditUnavailable):
        await audit_log.append_async(request_event(1))
    held_writer.set()
    monkeypatch.setattr(log_module, "APPEND_TIMEOUT_S", 20)
    assert (await audit_log.append_async(request_event(2))).seq == 2
    assert _writer_alive(audit_log)


async def test_surrogates_and_nul_are_stored_escaped_beside_normal_records(audit_log: AuditLog):
    hostile = [
        AuditEvent(
            event="request",
            request_id=f"bad-{i}",
            content="hi\ud800 and \x00 and \udfff",
            route="POST /v1/chat/\x00",
            principal={"name": "n\ud83d"},
        )
        for i in range(3)
    ]
    normal = [request_event(i) for i in range(5)]
    results = await asyncio.gather(*(audit_log.append_async(e) for e in [*hostile, *normal]))
    assert len(results) == 8
    stored = [audit_log.get(r.seq) for r in results[:3]]
    assert all(s.content == "hi\\ud800 and \\u0000 and \\udfff" and s.principal.name == "n\\ud83d" for s in stored)
    assert audit_log.verify().ok


async def test_one_unstorable_record_fails_only_itself(audit_log: AuditLog, monkeypatch):
    real = writer_module.flatten

    def picky(event, seq, ts):
        if event.request_id == "poison":
            raise ValueError("cannot store this one")
        return real(event, seq, ts)

    monkeypatch.setattr(writer_module, "flatten", picky)
    events = [request_event(i) for i in range(4)]
    events.insert(2, AuditEvent(event="request", request_id="poison"))
    results = await asyncio.gather(*(audit_log.append_async(e) for e in events), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], AuditUnavailable)
    assert isinstance(results[2], AuditUnavailable)
    assert sorted(r.seq for r in results if not isinstance(r, BaseException)) == [1, 2, 3, 4]
    assert _writer_alive(audit_log) and audit_log.verify().ok
