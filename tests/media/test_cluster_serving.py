"""Serving across hosts from the media (issue 26, points 3 and 7): the head (`appliance serve`, a cluster head) and
a worker installed from the read-only media into a prefix of its own, in separate network namespaces.

- Chat requests are answered by the worker's replica, which loads the worker's own verified copy of the bundle
  the head activated (their completion records name the worker).
- The worker's host is lost while long streams run on both nodes, twice: every process of it killed (SIGKILL),
  then its cable pulled (a power cut as the head sees it). Each stream the worker served ends in a retryable
  error (`engine_unavailable`), every request has exactly one outcome record, and the requests that follow are
  served by the head.
- The worker's Ray starts again and its replica serves again; `appliance audit verify` passes.

Root only; marked `cluster` and run by `make test-cluster`. Helpers from tests/media/test_cluster_join.py.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from appliance.audit import AuditLog, AuditRecord
from appliance.config import Settings
from appliance.signing import keys
from tests.cluster.netns import Net
from tests.conftest import APPLIANCE, REPO, clean_env, run_cli
from tests.media.test_cluster_join import PASS, _install, _start_worker

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and a bridge need root"),
]

OUTCOMES = ("completion", "error", "cancelled")
ROUNDS = 5  # Serve's router split the 8 streams 7:1, 7:1 and 1:7 in three runs here: with none on the worker, again
BACK_WITHIN_S = 300  # a generous bound for a loaded machine: Ray restarts, the replica loads and verifies


class Head:
    """The head's API as the clients in its namespace see it (tests/cluster/clients.py), and its audit log."""

    def __init__(self, net: Net, data: Path, token: str, model: str) -> None:
        self.net, self.data, self.token, self.model = net, data, token, model

    def argv(self, kind: str, count: int) -> list[str]:
        client = [sys.executable, "-m", "tests.cluster.clients", "http://127.0.0.1:8000", self.token, self.model]
        return self.net.argv("head", [*client, kind, str(count)])

    def start(self, kind: str, count: int) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(kind, count), env=clean_env(PYTHONPATH=str(REPO)), cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    @staticmethod
    def results(client: subprocess.Popen[str]) -> list[dict]:
        out, err = client.communicate(timeout=600)
        assert client.returncode == 0, err[-3000:]
        return json.loads(out.splitlines()[-1])

    def plain(self, count: int) -> list[dict]:
        return self.results(self.start("plain", count))

    def outcomes(self, results: list[dict]) -> dict[str, list[AuditRecord]]:
        """Each request's outcome records (there must be exactly one)."""
        audit = AuditLog.from_settings(Settings(data_dir=self.data))
        try:
            return {r["id"]: [x for x in audit.request_records(r["id"]) if x.event in OUTCOMES] for r in results}
        finally:
            audit.close()


def nodes(outcomes: dict[str, list[AuditRecord]]) -> Counter[str]:
    return Counter(r.detail.get("node", "?") for records in outcomes.values() for r in records)


def _until_the_worker_serves(head: Head, log: Path) -> Counter[str]:
    """Requests until one is served by the worker's replica (it loads and verifies its bundle first)."""
    began, served = time.monotonic(), Counter[str]()
    while served["w1"] == 0:
        assert time.monotonic() - began < BACK_WITHIN_S, (served, log.read_text()[-3000:])
        served += nodes(head.outcomes(head.plain(4)))
    return served


def _lose_the_worker_mid_stream(net: Net, head: Head, how: str) -> int:
    """Lose the worker's host while 8 long streams run (`kill`: every process of it, SIGKILL; `cut`: its cable
    pulled, its processes left running); check what each client got, the one outcome record of each request,
    and that the requests after it go to the head. How many streams failed."""
    streams = head.start("streams", 8)
    assert streams.stdout is not None
    assert streams.stdout.readline().strip() == "STREAMING", streams.communicate(timeout=600)
    lost = time.time()
    if how == "kill":  # nothing of it says goodbye, but its kernel resets its connections
        net.kill_all("worker", signals=(signal.SIGKILL,))
    else:  # a power cut as the head sees it: packets vanish, nobody resets anything
        net.link("worker", up=False)
    later = head.start("plain", 6)  # while the streams run on
    results, after = head.results(streams), head.results(later)
    first_s = min(r["at"] for r in after) - lost

    outcomes = head.outcomes(results + after)
    assert all(len(records) == 1 for records in outcomes.values()), outcomes  # one outcome record each
    for r in results:
        (record,) = outcomes[r["id"]]
        assert r["chunks"] > 0, r  # every stream had begun when the worker was killed
        if r["outcome"] == "error":  # one the worker was serving: retryable, recorded, naming the node
            assert r["code"] == "engine_unavailable", r
            assert (record.event, record.status, record.detail.get("node")) == ("error", 503, "w1"), record
        else:
            assert (record.event, record.detail.get("node")) == ("completion", "head"), record
    assert nodes(head.outcomes(after)) == {"head": len(after)}, "later requests go to the head's replica"
    failed = [r for r in results if r["outcome"] == "error"]
    ended = f", the last {max(r['at'] for r in failed) - lost:.1f} s after the loss" if failed else ""
    print(f"worker lost mid-stream ({how}): {len(failed)} of {len(results)} streams ended in engine_unavailable "
          f"(one error record each, naming w1){ended}; {len(after)} requests sent after it served by the head, "
          f"the first {first_s:.1f} s after the loss (a client process started meanwhile)")  # fmt: skip
    return len(failed)


def test_a_worker_serves_is_lost_mid_stream_and_serves_again(net, tmp_path, media_v1, release, bundle, demo_key):
    head_ip, worker_ip = net.add("head"), net.add("worker")
    data = tmp_path / "head"
    (tmp_path / "pass").write_text(PASS)
    pub = tmp_path / "publisher.pub"
    keys.write_public_key(demo_key.public_key(), pub)
    for argv in (("db", "upgrade"), ("bundle", "trust", str(pub)), ("bundle", "import", str(bundle), "--activate")):
        run_cli(*argv, data_dir=data, check=True)
    token = run_cli("keys", "create", "--name", "c", "--role", "user", data_dir=data, check=True).stdout.strip()
    run_cli("cluster", "init", "--address", head_ip, "--name", "head", data_dir=data, check=True)
    run_cli("cluster", "invite", "--name", "w1", "--address", worker_ip, "--passphrase-file", str(tmp_path / "pass"),
            "--out", str(tmp_path / "w1.join"), data_dir=data, check=True)  # fmt: skip

    prefix = tmp_path / "worker"
    installed = _install(
        net, media_v1, tmp_path / "usb", "--role", "worker", "--join", str(tmp_path / "w1.join"),
        "--join-passphrase-file", str(tmp_path / "pass"), "--prefix", str(prefix), "--no-systemd",
        "--trust-release-key", str(release[1]), "--yes", "--user", pwd.getpwuid(os.geteuid()).pw_name,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    unit = prefix / "etc" / "appliance-ray-worker.service"

    env = clean_env(APPLIANCE_DATA_DIR=str(data), APPLIANCE_SERVE_CPU_REPLICAS_PER_NODE="1")
    head = Head(net, data, token, json.loads((bundle / "bundle.json").read_text())["name"])
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen(net.argv("head", [APPLIANCE, "serve"]), env=env, stdout=log, stderr=log)
    try:
        _start_worker(net, unit, tmp_path / "whome")
        served = _until_the_worker_serves(head, tmp_path / "serve.log")
        print(f"completions by node until the worker's replica served: {dict(served)}")

        for how in ("kill", "cut"):
            for _ in range(ROUNDS):  # Serve's router may send every stream to the head: go again
                failed = _lose_the_worker_mid_stream(net, head, how)
                net.kill_all("worker")  # after a cut: the host comes back from a restart
                net.link("worker", up=True)
                _start_worker(net, unit, tmp_path / "whome")
                returned = time.monotonic()
                _until_the_worker_serves(head, tmp_path / "serve.log")
                print(f"the worker's Ray started again; its replica served {time.monotonic() - returned:.1f} s later")
                if failed:
                    break
            assert failed, f"{how}: in {ROUNDS} rounds no stream was the worker's"
    finally:
        server.send_signal(2)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
        net.kill_all("worker")
    assert run_cli("audit", "verify", data_dir=data).returncode == 0
