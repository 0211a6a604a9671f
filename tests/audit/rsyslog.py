"""A real rsyslogd (Debian's `rsyslog`, TLS through `rsyslog-openssl`) run unprivileged by a test: imtcp on a
loopback port, plain or TLS with the test's certificate, writing each message's MSGID and MSG to a file."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest


def require_rsyslog(tls: bool) -> None:
    if shutil.which("rsyslogd") is None:
        pytest.skip("rsyslogd is not installed (Debian package rsyslog)")
    if tls and not list(Path("/usr/lib").glob("*/rsyslog/lmnsd_ossl.so")):
        pytest.skip("rsyslog's TLS driver is not installed (Debian package rsyslog-openssl)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rsyslog:
    """rsyslogd in the foreground with a config of its own under `workdir`; `start`/`stop` at will."""

    def __init__(self, workdir: Path, port: int, tls: tuple[Path, Path, Path] | None = None) -> None:
        self.workdir, self.port, self.out = workdir, port, workdir / "received.log"
        workdir.mkdir(parents=True, exist_ok=True)
        driver = ""
        if tls is not None:
            ca, cert, key = tls
            driver = (
                f' DefaultNetstreamDriver="ossl" DefaultNetstreamDriverCAFile="{ca}"'
                f' DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}"'
            )
        module = ' StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon"' if tls else ""
        (workdir / "rsyslog.conf").write_text(f"""
global(workDirectory="{workdir}" maxMessageSize="1m"{driver})
main_queue(queue.timeoutShutdown="10000")
module(load="imtcp"{module})
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="msgonly" type="string" string="%timegenerated:::date-rfc3339% %msgid% %msg%\\n")
action(type="omfile" file="{self.out}" template="msgonly")
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / "rsyslogd.log").open("ab")
        self.proc = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(self.workdir / "rsyslog.conf"), "-i", str(self.workdir / "rsyslogd.pid")],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.workdir / "rsyslogd.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("rsyslogd did not listen within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None

    def received(self) -> list[tuple[datetime, str, dict]]:
        """(when rsyslogd received it, MSGID, parsed MSG) of every message written so far, in arrival order."""
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_text().splitlines():
            when, msgid, body = line.split(" ", 2)
            out.append((datetime.fromisoformat(when), msgid, json.loads(body)))
        return out

    def messages(self) -> list[tuple[str, dict]]:
        """(MSGID, parsed MSG) of every message written so far, in arrival order."""
        return [(msgid, body) for _, msgid, body in self.received()]

    def seqs(self) -> list[int]:
        return [body["seq"] for msgid, body in self.messages() if msgid == "audit"]
