"""The private network and the front without Ray: a process moves into a namespace of its own (as an
unprivileged user where the test runs as root), serves HTTP inside it, and a client outside reaches that
server through the front on the socket bound before the move. The front attests the client, drops the hints
a client could steer Serve's proxy with, and passes a hang-up on to the server inside."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.integration.conftest import free_port

INSIDE = textwrap.dedent("""
    import socket, sys, tempfile
    from pathlib import Path
    from appliance.serving.netns import bind_listener, enter_private_network
    from appliance.config import Settings
    from appliance.tls.front import Front, FrontLimits
    from appliance.tls.listen import Listen

    port = int(sys.argv[1])
    listener = bind_listener("127.0.0.1", port)
    enter_private_network()
    print("INTERFACES", [name for _, name in socket.if_nameindex()], flush=True)
    inner = socket.create_server(("127.0.0.1", 0))
    listen = Listen("127.0.0.1", port, "127.0.0.1", inner.getsockname()[1], None)
    Front(listen, "off", Path(tempfile.mkdtemp()), sock=listener,
          limits=FrontLimits.from_settings(Settings())).start_in_thread()
    print("READY", flush=True)
    conn, _ = inner.accept()
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        head += conn.recv(4096)
    conn.sendall(b"HTTP/1.1 200 OK\\r\\ncontent-length: %d\\r\\n\\r\\n%s" % (len(head), head))
    print("HUNG UP" if conn.recv(100) == b"" else "STILL OPEN", flush=True)
""")


def unprivileged(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    if not shutil.which("setpriv"):
        pytest.skip("setpriv is needed to drop root")
    return ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", *argv]


def test_a_server_in_the_private_network_answers_through_the_front():
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        unprivileged([sys.executable, "-c", INSIDE, str(port)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        interfaces = proc.stdout.readline()
        if not interfaces.startswith("INTERFACES"):
            error = proc.stderr.read()
            assert "cannot give Ray a private network" in error, error  # only a refused namespace may skip
            pytest.skip(f"no private network here: {error.strip().splitlines()[-1]}")
        assert interfaces.strip() == "INTERFACES ['lo']"
        assert proc.stdout.readline().strip() == "READY"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(
                b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-request-disconnect-disabled: ?1\r\n"
                b"x-appliance-peer: forged\r\n\r\n"
            )
            answer = b""
            while b"\r\n\r\n" not in answer.partition(b"\r\n\r\n")[2] and len(answer) < 8192:
                answer += client.recv(8192)
        seen = answer.partition(b"\r\n\r\n")[2].lower()  # the request head as the server inside got it
        assert b"forged" not in seen and seen.count(b"x-appliance-peer:") == 1  # the front's own, MACed
        assert b"x-request-disconnect-disabled" not in seen  # Serve's proxy never hears the client's hint
        assert proc.stdout.readline().strip() == "HUNG UP"
    finally:
        proc.kill()
        proc.wait()
