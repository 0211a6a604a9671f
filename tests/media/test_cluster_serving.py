"""Serving across hosts from the media (issue 26, point 3): the head (`appliance serve`, a cluster head) and a
worker installed from the read-only media into a prefix of its own, in separate network namespaces. A chat
request is answered by the worker's replica, which loads the worker's own verified copy of the bundle the
head activated (its completion record names the worker); `appliance audit verify` passes.

Root only; marked `cluster` and run by `make test-cluster`. Helpers from tests/media/test_cluster_join.py.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import textwrap

import pytest

from appliance.audit import AuditFilter, AuditLog
from appliance.config import Settings
from appliance.signing import keys
from tests.conftest import APPLIANCE, REPO, clean_env, run_cli
from tests.integration.test_offline import WAIT_READY
from tests.media.test_cluster_join import PASS, _install, _start_worker

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and a bridge need root"),
]

CLIENT = WAIT_READY + textwrap.dedent("""
    import openai
    base, token, model = sys.argv[1], sys.argv[2], sys.argv[3]
    wait_ready(base)
    client = openai.OpenAI(base_url=base + "/v1", api_key=token, max_retries=0)
    for _ in range(12):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    print("DONE")
""")


def test_a_request_is_served_by_the_workers_own_bundle(net, tmp_path, media_v1, release, bundle, demo_key):
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

    env = clean_env(APPLIANCE_DATA_DIR=str(data), APPLIANCE_SERVE_CPU_REPLICAS_PER_NODE="1")
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen(net.argv("head", [APPLIANCE, "serve"]), env=env, stdout=log, stderr=log)
    try:
        _start_worker(net, prefix / "etc" / "appliance-ray-worker.service", tmp_path / "whome")
        (tmp_path / "client.py").write_text(CLIENT)
        model = json.loads((bundle / "bundle.json").read_text())["name"]
        client = net.run(
            "head",
            [sys.executable, str(tmp_path / "client.py"), "http://127.0.0.1:8000", token, model],
            clean_env(PYTHONPATH=str(REPO)),
            timeout=600,
        )
        assert "DONE" in client.stdout, (client.stderr[-2000:], (tmp_path / "serve.log").read_text()[-3000:])
    finally:
        server.send_signal(2)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
        net.kill_all("worker")
    audit = AuditLog.from_settings(Settings(data_dir=data))
    try:
        nodes = [r.detail.get("node") for r in audit.query(AuditFilter(event="completion"), limit=100).records]
    finally:
        audit.close()
    assert "w1" in nodes, nodes
    print(f"completions by node: { {n: nodes.count(n) for n in set(nodes)} }")
    assert run_cli("audit", "verify", data_dir=data).returncode == 0
