"""`appliance serve` over TLS, the product path end to end inside `unshare -n`: a self-signed certificate
made by `appliance tls self-signed`, the front on the pre-bound socket with Ray in its private network, the
openai SDK pinning that certificate, plain HTTP refused on the port, and the audit chain verifying."""

from __future__ import annotations

import textwrap

from tests.conftest import prepare_data, requires_unshare, run_cli, serve_offline
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
    token = prepare_data(
        data, signed_tiny_bundle, publisher[1], ["tls", "self-signed", "--name", "localhost", "--address", "127.0.0.1"]
    )
    port = free_port()
    proc, log = serve_offline(
        tmp_path, data, port, CLIENT, f"https://127.0.0.1:{port}", token, f"{data}/keys/tls/server.crt"
    )
    assert proc.returncode == 0 and "CLIENT OK" in proc.stdout, (proc.stdout, proc.stderr, log[-3000:])
    assert f"appliance serving on https://127.0.0.1:{port}" in log
    listing = run_cli("audit", "list", data_dir=data, check=True).stdout
    assert "completion" in listing and "admin.tls_installed" in listing
    assert run_cli("audit", "verify", data_dir=data).returncode == 0
