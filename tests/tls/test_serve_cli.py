"""`appliance serve` over TLS, the product path end to end inside `unshare -n`: a self-signed certificate
made by `appliance tls self-signed`, the front on the pre-bound socket with Ray in its private network, the
openai SDK pinning that certificate, plain HTTP refused on the port, and the audit chain verifying."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import clean_env, offline_argv, requires_unshare, run_cli
from tests.integration.conftest import free_port

CLIENT = textwrap.dedent("""
    import ssl, sys, time, httpx, openai
    base, token, pem = sys.argv[1], sys.argv[2], sys.argv[3]
    pinned = ssl.create_default_context(cafile=pem)
    for _ in range(480):
        try:
            if httpx.get(base + "/readyz", verify=pinned, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        sys.exit("never ready")
    client = openai.OpenAI(base_url=base + "/v1", api_key=token, max_retries=0,
                           http_client=httpx.Client(verify=pinned, timeout=60))
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert reply.usage.completion_tokens == 3, reply
    try:
        httpx.get(base.replace("https:", "http:") + "/healthz", timeout=5)
        sys.exit("plain HTTP was answered on the TLS port")
    except httpx.TransportError:
        pass
    print("CLIENT OK")
""")


@requires_unshare
def test_appliance_serve_over_tls_with_a_pinned_certificate(tmp_path, signed_tiny_bundle, publisher):
    data = tmp_path / "var"
    for args in (["bundle", "trust", str(publisher[1])], ["bundle", "import", str(signed_tiny_bundle), "--activate"],
                 ["db", "upgrade"], ["tls", "self-signed", "--name", "localhost", "--address", "127.0.0.1"]):
        run_cli(*args, data_dir=data, check=True)
    token = run_cli("keys", "create", "--name", "tls", "--role", "user", data_dir=data, check=True).stdout.strip()
    port = free_port()
    (tmp_path / "client.py").write_text(CLIENT)
    script = f"""
        {sys.executable.replace('python', 'appliance')} serve > {tmp_path}/serve.log 2>&1 &
        server=$!
        {sys.executable} {tmp_path}/client.py https://127.0.0.1:{port} {token} {data}/keys/tls/server.crt; rc=$?
        kill -INT $server; wait $server
        exit $rc
    """
    env = clean_env(data, APPLIANCE_PORT=str(port), APPLIANCE_RAY_AUTH_MODE="token", HOME=str(tmp_path))
    proc = subprocess.run(offline_argv(["bash", "-c", script]), env=env, capture_output=True, text=True, timeout=400)
    log = (tmp_path / "serve.log").read_text()
    assert proc.returncode == 0 and "CLIENT OK" in proc.stdout, (proc.stdout, proc.stderr, log[-3000:])
    assert f"appliance serving on https://127.0.0.1:{port}" in log
    listing = run_cli("audit", "list", data_dir=data, check=True).stdout
    assert "completion" in listing and "admin.tls_installed" in listing
    assert run_cli("audit", "verify", data_dir=data).returncode == 0
