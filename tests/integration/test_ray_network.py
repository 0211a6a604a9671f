"""Nothing of Ray is reachable from another host (issue 15): `appliance serve` runs in a network namespace the
test makes, joined by a veth pair to a second namespace that plays the site network, and every port any
of its processes listens on is probed from there. A listener on all interfaces in the same namespace is
the control: it proves the probe would see an open port."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psutil
import pytest

from tests.conftest import clean_env, run_cli
from tests.integration.conftest import free_port
from tests.integration.test_offline import WAIT_READY

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip"), reason="network namespaces and veth pairs need root and iproute2"
)

HOST_SIDE, SITE_SIDE = "10.213.77.1", "10.213.77.2"

READY = WAIT_READY + textwrap.dedent("""
    wait_ready(sys.argv[1])
    print("READY")
""")

PROBE = textwrap.dedent("""
    import socket, sys
    for port in map(int, sys.argv[2:]):
        try:
            socket.create_connection((sys.argv[1], port), timeout=3).close()
            print("OPEN", port)
        except OSError as exc:
            print("CLOSED", port, exc.errno)
""")

NO_TOKEN = textwrap.dedent("""
    import sys, ray
    try:
        ray.init(address=sys.argv[1], log_to_driver=False)
    except Exception as exc:
        print("REFUSED", type(exc).__name__)
    else:
        print("CONNECTED")
""")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespaces():
    """(appliance, site): two namespaces and a veth pair between them."""
    tag = uuid.uuid4().hex[:6]
    appliance, site = f"ap-{tag}", f"site-{tag}"
    ip("netns", "add", appliance)
    ip("netns", "add", site)
    try:
        ip("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vs{tag}")
        for ns, dev, addr in ((appliance, f"va{tag}", HOST_SIDE), (site, f"vs{tag}", SITE_SIDE)):
            ip("link", "set", dev, "netns", ns)
            ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield appliance, site
    finally:
        for ns in (appliance, site):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def in_ns(ns: str, *argv: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, **kw)


def listening_ports(pid: int) -> set[int]:
    """Every TCP port listening in the network namespace of `pid` (psutil reads only its own namespace's)."""
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def test_no_ray_port_is_reachable_from_the_site_network(tmp_path, signed_tiny_bundle, publisher, namespaces):
    appliance_ns, site_ns = namespaces
    data = tmp_path / "var"
    for args in (
        ["bundle", "trust", str(publisher[1])],
        ["bundle", "import", str(signed_tiny_bundle), "--activate"],
        ["db", "upgrade"],
    ):
        run_cli(*args, data_dir=data, check=True)
    port = free_port()
    env = clean_env(data, APPLIANCE_PORT=str(port), HOME=str(tmp_path))
    (tmp_path / "ready.py").write_text(READY)
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "no_token.py").write_text(NO_TOKEN)
    appliance = sys.executable.replace("python", "appliance")
    server = subprocess.Popen(
        ["ip", "netns", "exec", appliance_ns, appliance, "serve"],
        env=env,
        stdout=(tmp_path / "serve.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    control = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            appliance_ns,
            sys.executable,
            "-c",
            "import socket, time; s = socket.create_server(('0.0.0.0', 7999)); time.sleep(600)",
        ]
    )
    try:
        ready = in_ns(
            appliance_ns, sys.executable, str(tmp_path / "ready.py"), f"http://127.0.0.1:{port}", env=env, timeout=300
        )
        assert "READY" in ready.stdout, (ready.stdout, ready.stderr, (tmp_path / "serve.log").read_text()[-3000:])
        raylet = next(p for p in psutil.Process(server.pid).children(recursive=True) if p.name() == "raylet")
        ports = listening_ports(raylet.pid)  # Ray's namespace: everything in it is Ray's
        assert len(ports) >= 5, ports  # the GCS, raylets, workers, Serve's proxy and controller: all still there
        probed = in_ns(
            site_ns,
            sys.executable,
            str(tmp_path / "probe.py"),
            HOST_SIDE,
            "7999",
            str(port),
            *map(str, sorted(ports)),
            timeout=600,
        ).stdout.splitlines()
        assert probed[0] == "OPEN 7999", probed  # the control: an open port is seen as open
        assert [line for line in probed[1:] if line.startswith("OPEN")] == []
        # Inside Ray's own namespace, a client without the token is refused.
        gcs = next(a for a in raylet.cmdline() if a.startswith("--gcs-address=")).split("=", 1)[1]
        refused = subprocess.run(
            ["nsenter", "-t", str(raylet.pid), "-n", sys.executable, str(tmp_path / "no_token.py"), gcs],
            env={**env, "RAY_AUTH_MODE": "disabled"},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert "REFUSED" in refused.stdout, (refused.stdout, refused.stderr[-2000:])
    finally:
        control.kill()
        server.send_signal(2)
        server.wait(timeout=120)
