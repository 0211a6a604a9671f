"""The whole serving path inside `unshare -n` (loopback only): admin steps, `appliance serve` on Ray with
token auth, the openai SDK against it, and a clean stop. Any outbound attempt would fail here."""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from tests.cluster.clients import wait_ready
from tests.conftest import clean_env, offline_argv, prepare_data, requires_unshare, run_cli, serve_offline
from tests.integration.conftest import free_port

# the scripts below run as files of their own: the readiness wait travels as source
WAIT_READY = "import sys, time, httpx\n\n" + inspect.getsource(wait_ready)

CLIENT = WAIT_READY + textwrap.dedent("""
    import openai
    base, token = sys.argv[1], sys.argv[2]
    wait_ready(base)
    client = openai.OpenAI(base_url=base + "/v1", api_key=token, max_retries=0)
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert reply.usage.completion_tokens == 3, reply
    print("CLIENT OK")
""")


@requires_unshare
def test_serve_inside_unshare(tmp_path, signed_tiny_bundle, publisher, monkeypatch):
    data = tmp_path / "var"
    token = prepare_data(data, signed_tiny_bundle, publisher[1])
    port = free_port()
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    try:
        proc, log = serve_offline(tmp_path, data, port, CLIENT, f"http://127.0.0.1:{port}", token)
        assert proc.returncode == 0 and "CLIENT OK" in proc.stdout, (proc.stdout, proc.stderr, log[-3000:])
        # No Ray process tried to learn its address from the outside (ray_env): the log of every one is clean.
        probes = [p for p in ray_tmp.rglob("*") if p.is_file() and not p.is_symlink() and b"8.8.8.8" in p.read_bytes()]
        assert not probes and "8.8.8.8" not in log, probes
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    listing = run_cli("audit", "list", data_dir=data, check=True).stdout
    assert "completion" in listing and "admin.key_created" in listing
    assert run_cli("audit", "verify", data_dir=data).returncode == 0


DEMO_CLIENT = WAIT_READY + textwrap.dedent("""
    import json, re, subprocess
    log_path = sys.argv[1]
    wait_ready("http://127.0.0.1:8000")
    printed = open(log_path).read()
    curl = re.search(r"(curl -s .*?\\}\\]\\}')", printed, re.S).group(1).replace("\\\\\\n", " ")
    answer = json.loads(subprocess.run(["bash", "-c", curl], capture_output=True, text=True, check=True).stdout)
    print("CURL", answer["choices"][0]["message"]["content"])
    sdk = re.search(r"<<'PY'\\n(.*?)\\nPY\\n", printed, re.S).group(1)
    print("SDK", subprocess.run([".venv/bin/python", "-"], input=sdk, capture_output=True, text=True,
                                check=True).stdout)
""")


@requires_unshare
def test_readme_run_command_inside_unshare(tmp_path, demo_bundle):
    """`appliance demo` (what `make run` runs) with no network: its printed curl and SDK examples work."""
    import shutil

    from tests.conftest import DEMO_CACHE, REPO

    digest = demo_bundle.parent.name  # reuse the trained checkpoint; the bundle is rebuilt for the new key
    shutil.copytree(DEMO_CACHE / digest / "checkpoint", tmp_path / "var" / "cache" / "demo" / digest / "checkpoint")
    (tmp_path / "client.py").write_text(DEMO_CLIENT)
    script = f"""
        .venv/bin/appliance demo > {tmp_path}/demo.log 2>&1 &
        server=$!
        {sys.executable} {tmp_path}/client.py {tmp_path}/demo.log; rc=$?
        kill -INT $server; wait $server
        exit $rc
    """
    env = clean_env(tmp_path / "var", HOME=str(tmp_path))
    proc = subprocess.run(
        offline_argv(["bash", "-c", script]), env=env, capture_output=True, text=True, timeout=600, cwd=REPO
    )
    log = (tmp_path / "demo.log").read_text()
    assert proc.returncode == 0, (proc.stdout, proc.stderr, log[-3000:])
    assert "8.8.8.8" not in log
    assert "CURL The capital of France is Paris." in proc.stdout
    assert "I am a tiny demo model with the gpt-oss architecture" in proc.stdout
    assert 'get_weather {"city": "Paris"}' in proc.stdout
