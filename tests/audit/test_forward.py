"""Forwarding to a real rsyslog: every record and checkpoint arrives, in seq order, through a collector
outage and a forwarder restart (duplicates allowed, gaps never); plain TCP; a refused certificate."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from appliance import db
from appliance.audit import AuditError, AuditLog, forward, store
from appliance.audit.export import verify_file
from appliance.audit.signer import public_key_path
from appliance.config import Settings
from appliance.db import make_engine
from appliance.signing import keys
from tests.audit.conftest import request_event
from tests.audit.rsyslog import Rsyslog, free_port, require_rsyslog
from tests.conftest import APPLIANCE, clean_env, one_line_error, run_cli
from tests.tls.conftest import make_ca

OUTAGE_S = 5.0


def wait_for(check: Callable[[], bool], timeout: float = 90, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class Appliance:
    """A data folder with a migrated database, its audit log, and `appliance audit forward run` as a process."""

    def __init__(self, data: Path, collectors: list[dict]) -> None:
        self.data = data
        self.env = {"APPLIANCE_AUDIT_FORWARD": json.dumps(collectors), "APPLIANCE_AUDIT_FORWARD_CONFIRM_S": "0.3"}
        self.settings = Settings(data_dir=data, audit_checkpoint_every=50, audit_checkpoint_seconds=0.5)
        db.upgrade(self.settings.database_url)
        self.log = AuditLog.from_settings(self.settings)
        self.forwarder: subprocess.Popen[str] | None = None
        self.appended = 0

    def append(self, n: int) -> None:
        for _ in range(n):
            self.appended += 1
            self.log.append(request_event(self.appended))

    def start_forwarder(self) -> None:
        out = (self.data / "forward.log").open("a")
        self.forwarder = subprocess.Popen(
            [APPLIANCE, "audit", "forward", "run"],
            stdout=out,
            stderr=out,
            text=True,
            env=clean_env(self.data, **self.env),
        )

    def stop_forwarder(self, sig: int = signal.SIGTERM) -> None:
        if self.forwarder is not None and self.forwarder.poll() is None:
            self.forwarder.send_signal(sig)
            self.forwarder.wait(timeout=60)
        self.forwarder = None

    def states(self, name: str) -> forward.CollectorState:
        engine = make_engine(self.settings.database_url)
        try:
            return forward.states(engine, [name])[0]
        finally:
            engine.dispose()

    def status(self) -> subprocess.CompletedProcess[str]:
        return run_cli("audit", "forward", "status", data_dir=self.data, env=self.env, offline=False)

    def close(self) -> None:
        self.stop_forwarder()
        self.log.close()


@pytest.fixture
def make_appliance(tmp_path: Path) -> Iterator[Callable[[list[dict]], Appliance]]:
    made: list[Appliance] = []

    def make(collectors: list[dict]) -> Appliance:
        made.append(Appliance(tmp_path / "var", collectors))
        return made[-1]

    yield make
    for a in made:
        a.close()


@pytest.fixture
def collector_tls(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The site CA's file and the collector's certificate and key (for localhost and 127.0.0.1)."""
    ca = make_ca(tmp_path / "site-ca")
    cert, key = ca.issue(tmp_path / "collector", "collector", server=True)
    return ca.pem_path, cert, key


def assert_in_order_without_gaps(seqs: list[int], head: int) -> None:
    """Each seq arrives at most one past the highest seen before it (a resend repeats, never skips), and
    every seq up to `head` arrived."""
    highest = 0
    for seq in seqs:
        assert seq <= highest + 1, f"seq {seq} arrived after {highest}: records {highest + 1}..{seq - 1} skipped"
        highest = max(highest, seq)
    assert set(seqs) == set(range(1, head + 1))


def collected_export(messages: list[tuple[str, dict]], out: Path) -> Path:
    """What the SIEM kept, as a JSONL export (each record and checkpoint once), for `verify --file`."""
    records = {body["seq"]: body for msgid, body in messages if msgid == "audit"}
    checkpoints = {json.dumps(body, sort_keys=True) for msgid, body in messages if msgid == "checkpoint"}
    out.write_text(
        "".join(c + "\n" for c in checkpoints) + "".join(json.dumps(records[s]) + "\n" for s in sorted(records))
    )
    return out


def test_tls_collector_outage_and_forwarder_restart(make_appliance, collector_tls, tmp_path: Path):
    require_rsyslog(tls=True)
    ca, cert, key = collector_tls
    port = free_port()
    rsyslog = Rsyslog(tmp_path / "rsyslog", port, (ca, cert, key))
    rsyslog.start()
    name = "siem"
    app = make_appliance([{"name": name, "host": "localhost", "port": port, "transport": "tls", "ca_file": str(ca)}])
    try:
        app.append(100)
        app.start_forwarder()
        wait_for(lambda: 100 in rsyslog.seqs(), what="the first records at the collector")

        rsyslog.stop()  # the collector is down for OUTAGE_S while the gateway goes on writing
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:
            app.append(10)
        wait_for(lambda: app.states(name).error is not None, what="the forwarder to see the outage")
        down = app.states(name)
        assert down.lag >= app.appended - 100 > 0
        status = app.status()
        assert status.returncode == 1 and name in status.stdout and "lag" in status.stderr

        rsyslog.start()
        wait_for(lambda: app.states(name).lag == 0, what="catching up after the outage")
        assert app.states(name).error is None

        app.stop_forwarder(signal.SIGKILL)  # the forwarder dies; what it had in flight is sent again
        app.append(100)
        app.start_forwarder()
        wait_for(lambda: app.states(name).lag == 0, what="catching up after the restart")
        head = app.log.head()[0]
        wait_for(lambda: head in rsyslog.seqs(), what="the last record at the collector")
        assert_in_order_without_gaps(rsyslog.seqs(), head)
        assert app.status().returncode == 0
    finally:
        rsyslog.stop()
    # What the SIEM holds verifies against the appliance's key on its own, checkpoints included.
    report = verify_file(
        collected_export(rsyslog.messages(), tmp_path / "siem.jsonl"),
        [keys.load_public_key(public_key_path(app.settings.audit_key_path))],
    )
    report.raise_if_bad()
    assert report.records == head and report.checkpoints > 0


def test_plain_tcp_collector(make_appliance, tmp_path: Path):
    require_rsyslog(tls=False)
    port = free_port()
    rsyslog = Rsyslog(tmp_path / "rsyslog", port)
    rsyslog.start()
    app = make_appliance([{"host": "127.0.0.1", "port": port, "transport": "tcp"}])
    try:
        app.append(49)
        text = "naïve 東京 \U0001f600 \x00"  # any text a prompt may hold travels, and comes back the same
        app.log.append(request_event(50).model_copy(update={"content_mode": "full", "content": text}))
        app.start_forwarder()
        wait_for(lambda: 50 in rsyslog.seqs(), what="the records at the collector")
        assert_in_order_without_gaps(rsyslog.seqs(), 50)
        assert [b["content"] for m, b in rsyslog.messages() if m == "audit" and b["seq"] == 50] == [
            app.log.get(50).content
        ]
        wait_for(lambda: app.states(f"127.0.0.1:{port}").lag == 0, what="the cursor")
    finally:
        rsyslog.stop()


def test_refused_certificate_delivers_nothing(make_appliance, collector_tls, tmp_path: Path):
    """A collector whose certificate the configured CA did not issue gets nothing: lag grows, status says why."""
    require_rsyslog(tls=True)
    ca, cert, key = collector_tls
    other_ca = make_ca(tmp_path / "other-ca", "Another CA")
    port = free_port()
    rsyslog = Rsyslog(tmp_path / "rsyslog", port, (ca, cert, key))
    rsyslog.start()
    app = make_appliance([{"name": "siem", "host": "localhost", "port": port, "ca_file": str(other_ca.pem_path)}])
    try:
        app.append(20)
        app.start_forwarder()
        wait_for(lambda: app.states("siem").error is not None, what="the refused handshake")
        assert "certificate verify failed" in (app.states("siem").error or "")
        app.append(20)
        assert app.states("siem").lag == 40 and app.states("siem").delivered_seq == 0
        status = app.status()
        assert status.returncode == 1 and "certificate verify failed" in status.stderr + status.stdout
        assert rsyslog.seqs() == []
    finally:
        rsyslog.stop()


def test_collector_settings_refused_by_name():
    with pytest.raises(ValidationError, match="needs ca_file"):
        Settings(audit_forward=[{"host": "siem.example", "transport": "tls"}])
    with pytest.raises(ValidationError, match="tls only"):
        Settings(audit_forward=[{"host": "siem.example", "transport": "tcp", "ca_file": "/etc/ca.pem"}])
    with pytest.raises(ValidationError, match="go together"):
        Settings(audit_forward=[{"host": "s", "ca_file": "/ca.pem", "client_cert": "/c.pem"}])
    with pytest.raises(ValidationError, match="sni"):
        Settings(audit_forward=[{"host": "s", "ca_file": "/ca.pem", "sni": "x"}])
    assert Settings(audit_forward=[{"host": "s", "ca_file": "/ca.pem"}]).audit_forward[0].name == "s:6514"


def test_forward_status_without_collectors(tmp_path: Path):
    proc = run_cli("audit", "forward", "status", data_dir=tmp_path / "var")
    assert proc.returncode == 0 and "no collectors" in proc.stdout


def drain(engine, pos: forward.Position, limit: int) -> tuple[list[tuple[str, dict]], forward.Position]:
    """Every message `next_batch` yields from `pos` on, `limit` records at a time."""
    out = []
    while True:
        with engine.connect() as conn, conn.begin():
            messages, pos = forward.next_batch(conn, pos, limit, "host")
        if not messages:
            return out, pos
        for m in messages:
            parts = m.split(b" ", 7)  # LEN <PRI>1 TS HOST APP PROCID MSGID SD MSG: the MSG is the rest
            assert int(parts[0]) == len(m) - len(parts[0]) - 1
            out.append((parts[6].decode(), json.loads(m.split(b" - ", 2)[2])))


def test_cursor_order_and_late_checkpoints(database_url: str, key_path: Path):
    """Records in seq order, each checkpoint after its record; a checkpoint signed later for an old seq (a
    prune's anchor) still goes out; the stored position survives a new connection (SQLite and PostgreSQL)."""
    with AuditLog(database_url, key_path, checkpoint_every=7, checkpoint_seconds=3600) as log:
        for i in range(30):
            log.append(request_event(i))
        engine = make_engine(database_url)
        with engine.connect() as conn, conn.begin():
            assert forward.load_position(conn, "siem") == forward.Position()
        messages, pos = drain(engine, forward.Position(), 4)
        seqs = [b["seq"] for m, b in messages if m == "audit"]
        assert seqs == list(range(1, 31))
        sent: set[int] = set()
        for m, body in messages:  # a checkpoint only ever follows the record it signs
            if m == "audit":
                sent.add(body["seq"])
            else:
                assert body["checkpoint"]["seq"] in sent
        with engine.connect() as conn:
            signed = [cp.seq for cp in store.load_checkpoints(conn)]
        assert len(signed) > 3 and sorted(b["checkpoint"]["seq"] for m, b in messages if m == "checkpoint") == signed
        forward.save_position(engine, "siem", pos)
        assert forward.states(engine, ["siem", "other"])[0].lag == 0
        assert forward.states(engine, ["siem", "other"])[1].lag == 30
        with pytest.raises(AuditError, match="collector other has been delivered records up to seq 0 only"):
            log.prune(datetime.now(UTC), min_retention_days=0, export_dir=None, forwarded_to=["siem", "other"])
        assert log.count() == 31  # nothing removed (the refused prune's own record stays)
        _, pos = drain(engine, pos, 4)
        forward.save_position(engine, "siem", pos)
        log.prune(datetime.now(UTC), min_retention_days=0, export_dir=None, forwarded_to=["siem"])
        with engine.connect() as conn, conn.begin():
            assert forward.load_position(conn, "siem") == pos
        late, _ = drain(engine, pos, 4)
        assert ("checkpoint", "anchor") in {(m, b.get("checkpoint", {}).get("kind")) for m, b in late}
        engine.dispose()


def test_unknown_collector_key_refused_by_name(tmp_path: Path):
    env = {"APPLIANCE_AUDIT_FORWARD": json.dumps([{"host": "siem", "transport": "tcp", "sni": "siem"}])}
    proc = run_cli("audit", "forward", "run", data_dir=tmp_path / "var", env=env)
    assert proc.returncode == 2
    assert one_line_error(proc) == "error: setting APPLIANCE_AUDIT_FORWARD[0].sni: Extra inputs are not permitted"
