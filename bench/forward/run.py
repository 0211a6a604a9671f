"""Forwarding benchmark: records/s to one TLS syslog collector (a real rsyslogd) against the audit writer's
append rate, and the catch-up rate after a collector outage.

- append rate: `AuditLog.append` from 64 concurrent callers in one process (group commit, SQLite WAL
  synchronous=FULL), the rate the gateway can produce records at;
- throughput: a log of N records built in bulk (bench/audit), then `appliance audit forward run` (its own
  process, as the systemd unit runs it) from an empty cursor to the head, over TLS to rsyslogd (imtcp, ossl
  driver) writing every message to a file; timed from the stored cursor's first move to the head;
- latency: the writer appending at full speed for `--steady` seconds with the forwarder following; each
  record's timestamp to rsyslogd's receive time (the cursor itself trails by `audit_forward_confirm_s`);
- catch-up: the collector is stopped for `--outage` seconds while records are appended at full speed, then
  started again; the rate at which the backlog drains (appends stopped).
Goal (issue 27): throughput >= 2x the append rate, so the SIEM never falls behind steady load. Writes
bench/results/forward.txt.

Usage: .venv/bin/python bench/forward/run.py [--records 100000] [--appends 20000] [--steady 20] [--outage 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance import db  # noqa: E402
from appliance.audit import AuditLog, forward, store  # noqa: E402
from appliance.config import Settings  # noqa: E402
from appliance.db import make_engine  # noqa: E402
from bench.audit.run import CALLERS, build_log, event  # noqa: E402  (the same ~500-byte records)
from tests.audit.rsyslog import Rsyslog, free_port, require_rsyslog  # noqa: E402  (the tests' collector)
from tests.conftest import APPLIANCE, clean_env  # noqa: E402
from tests.tls.conftest import make_ca  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results" / "forward.txt"
NAME = "siem"


def append_rate(log: AuditLog, count: int, first: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(CALLERS) as pool:
        list(pool.map(lambda i: log.append(event(i)), range(first, first + count)))
    return count / (time.perf_counter() - start)


def lag(settings: Settings) -> forward.CollectorState:
    engine = make_engine(settings.database_url)
    try:
        return forward.states(engine, [NAME])[0]
    finally:
        engine.dispose()


def drain_rate(settings: Settings, before: forward.CollectorState) -> tuple[float, float]:
    """(seconds until the cursor first moves past `before`, records/s from then until the lag is 0): the
    first figure is start-up or reconnection, the second the steady rate."""
    start = time.perf_counter()
    while (moved := lag(settings)).delivered_seq == before.delivered_seq:
        time.sleep(0.02)
    first = time.perf_counter() - start
    return first, (moved.head_seq - moved.delivered_seq) / wait_caught_up(settings)


def wait_caught_up(settings: Settings, timeout: float = 3600) -> float:
    start = time.perf_counter()
    while (state := lag(settings)).lag > 0:
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"forwarder stuck at seq {state.delivered_seq}: {state.error}")
        time.sleep(0.05)
    return time.perf_counter() - start


def delivery_latencies(rsyslog: Rsyslog, seqs: range) -> list[float]:
    """Seconds from each record's timestamp to its first arrival at the collector, sorted."""
    first: dict[int, float] = {}
    for when, msgid, body in rsyslog.received():
        if msgid == "audit" and body["seq"] in seqs and body["seq"] not in first:
            first[body["seq"]] = (when - store.parse_ts(body["ts"])).total_seconds()
    return sorted(first.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--steady", type=float, default=20.0)
    args = parser.parse_args()
    require_rsyslog(tls=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ca = make_ca(folder / "ca")
        cert, key = ca.issue(folder / "collector", "collector", server=True)
        port = free_port()
        rsyslog = Rsyslog(folder / "rsyslog", port, (ca.pem_path, cert, key))
        collectors = [{"name": NAME, "host": "localhost", "port": port, "ca_file": str(ca.pem_path)}]
        settings = Settings(data_dir=folder / "var")
        db.upgrade(settings.database_url)
        build_log(settings.database_url, settings.data_dir / "appliance.db", settings.keys_dir, args.records)
        rsyslog.start()
        env = clean_env(settings.data_dir, APPLIANCE_AUDIT_FORWARD=json.dumps(collectors))
        forwarder = subprocess.Popen(
            [APPLIANCE, "audit", "forward", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(folder / "forward.log").open("w"),
        )
        try:
            startup_s, throughput = drain_rate(settings, lag(settings))
            with AuditLog.from_settings(settings) as log:
                appends = append_rate(log, args.appends, args.records + 1)
                wait_caught_up(settings)
                steady_from = lag(settings).head_seq + 1
                deadline, first = time.monotonic() + args.steady, steady_from
                while time.monotonic() < deadline:  # the writer at full speed, the forwarder following
                    append_rate(log, 1000, first)
                    first += 1000
                steady = range(steady_from, first)
                wait_caught_up(settings)
                rsyslog.stop()
                deadline, first = time.monotonic() + args.outage, lag(settings).head_seq + 1
                while time.monotonic() < deadline:
                    append_rate(log, 1000, first)
                    first += 1000
            down = lag(settings)
            rsyslog.start()
            reconnect_s, catch_up = drain_rate(settings, down)
        finally:
            forwarder.terminate()
            forwarder.wait(timeout=60)
            rsyslog.stop()
        seqs = rsyslog.seqs()
        head = lag(settings).head_seq
        assert set(seqs) == set(range(1, head + 1)), "a record did not arrive"
        latencies = delivery_latencies(rsyslog, steady)
    lines = [
        "forward bench: one TLS collector (rsyslogd 8.2302, imtcp + ossl, omfile), SQLite WAL, this machine "
        "(2 cores shared with the collector and the writer)",
        f"append rate (64 callers, group commit): {appends:,.0f} records/s",
        f"forwarding throughput ({args.records:,} records from an empty cursor): {throughput:,.0f} records/s "
        f"(first delivery {startup_s:.1f} s after the process started)",
        f"ratio throughput / append rate: {throughput / appends:.1f}x (goal >= 2x)",
        f"delivery latency under full-speed appends for {args.steady:g} s ({len(steady):,} records, record ts to "
        f"rsyslogd's receive time): p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, p99 "
        f"{latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms",
        f"outage {args.outage:g} s under full-speed appends: backlog {down.lag:,} records; first delivery "
        f"{reconnect_s:.1f} s after the collector came back (reconnect backoff + confirm), then caught up at "
        f"{catch_up:,.0f} records/s",
        f"messages received {len(seqs):,} for {head:,} records: {len(seqs) - head:,} duplicates, 0 missing",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
