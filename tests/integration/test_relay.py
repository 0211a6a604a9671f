"""The private network and its relay without Ray: a process moves into a namespace of its own (as an
unprivileged user where the test runs as root), serves inside it, and a client outside reaches that server
through the socket bound before the move; a hang-up outside reaches the server inside."""

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
    import socket, sys
    from appliance.serving.netns import bind_listener, enter_private_network
    from appliance.serving.relay import Relay

    listener = bind_listener("127.0.0.1", int(sys.argv[1]))
    enter_private_network()
    print("INTERFACES", [name for _, name in socket.if_nameindex()], flush=True)
    inner = socket.create_server(("127.0.0.1", 0))
    Relay(listener, inner.getsockname()).start()
    print("READY", flush=True)
    conn, _ = inner.accept()
    conn.sendall(conn.recv(100).upper())
    print("HUNG UP" if conn.recv(100) == b"" else "STILL OPEN", flush=True)
""")


def unprivileged(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    if not shutil.which("setpriv"):
        pytest.skip("setpriv is needed to drop root")
    return ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", *argv]


def test_a_server_in_the_private_network_answers_through_the_relay():
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(unprivileged([sys.executable, "-c", INSIDE, str(port)]), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        interfaces = proc.stdout.readline()
        if not interfaces.startswith("INTERFACES"):
            error = proc.stderr.read()
            assert "cannot give Ray a private network" in error, error  # only a refused namespace may skip
            pytest.skip(f"no private network here: {error.strip().splitlines()[-1]}")
        assert interfaces.strip() == "INTERFACES ['lo']"
        assert proc.stdout.readline().strip() == "READY"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"hello")
            assert client.recv(100) == b"HELLO"
        assert proc.stdout.readline().strip() == "HUNG UP"
    finally:
        proc.kill()
        proc.wait()
