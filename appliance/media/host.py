"""The installed appliance as a process: start (systemd or a detached `appliance serve`), stop, and the
first audited answer through its API. Standard library only (the installer runs before any venv exists).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from appliance.media.account import Account
from appliance.media.manifest import MediaError

READY_SECONDS = 300


def start_detached(
    appliance: Path, env: dict[str, str], pid_file: Path, log: Path, account: Account | None = None
) -> int:
    """`appliance serve` in a session of its own, as `account` when given (the root installer never runs
    Ray and the server as root); its pid and start time go to `pid_file`, for `stop_detached` to check."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(appliance), "serve"],
            env=env,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=env.get("HOME", "/"),
            umask=0o077,
            **(account.popen_args() if account is not None else {}),
        )
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{proc.pid} {_started(proc.pid)}\n")
    return proc.pid


def stop_detached(pid_file: Path, uid: int, timeout: float = 60) -> bool:
    """SIGINT to the server's process group (it drains streams), SIGKILL after `timeout`; only when the pid
    file names a process that is ours: the session leader `start_detached` made (its start time when the
    file has one), owned by `uid`, running `appliance serve`. A stale or forged file is removed unsignalled."""
    try:
        fields = pid_file.read_text().split()
        pid, started = int(fields[0]), (int(fields[1]) if len(fields) > 1 else None)
    except (OSError, ValueError, IndexError):
        pid_file.unlink(missing_ok=True)
        return False
    if not is_ours(pid, started, uid):
        pid_file.unlink(missing_ok=True)
        return False
    try:
        os.killpg(pid, signal.SIGINT)
    except OSError:
        pid_file.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # when it is this process's child: no zombie left
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pid, 0)
        except OSError:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    pid_file.unlink(missing_ok=True)
    return True


def is_ours(pid: int, started: int | None, uid: int) -> bool:
    """Whether `pid` is a detached `appliance serve` of `uid`: it leads its process group, its start time
    (clock ticks after boot) is `started` when known, and its command line is `... appliance serve`."""
    proc = Path(f"/proc/{pid}")
    try:
        stat = _stat_fields(pid)
        owner = proc.stat().st_uid
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return False
    return (
        int(stat[2]) == pid
        and (started is None or int(stat[19]) == started)
        and owner == uid
        and b"serve" in argv
        and any(Path(a.decode(errors="replace")).name == "appliance" for a in argv)
    )


def _started(pid: int) -> int:
    return int(_stat_fields(pid)[19])


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces): state is [0], pgrp [2], start [19]."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def wait_ready(base: str, log: Path | None = None, context: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        try:
            with _open(base + "/readyz", 2, context) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise MediaError(
        f"the appliance did not become ready at {base} within {READY_SECONDS} s" + (f" (see {log})" if log else "")
    )


def first_answer(base: str, token: str, model: str, context: ssl.SSLContext | None = None) -> tuple[str, int]:
    """Ask one question with `token`; the answer and the sequence number of its audit record."""
    body = {
        "model": model,
        "temperature": 0,
        "max_tokens": 32,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    reply, headers = _call(base, "/v1/chat/completions", token, body, context)
    request_id = headers.get("x-request-id")
    records, _ = _call(base, "/admin/audit?limit=50", token, context=context)
    seqs = [r["seq"] for r in records["data"] if r.get("request_id") == request_id and r["event"] == "completion"]
    if not seqs:
        raise MediaError(f"the answer to request {request_id} has no audit record")
    return reply["choices"][0]["message"]["content"], seqs[0]


def _call(
    base: str, route: str, token: str, body: dict | None = None, context: ssl.SSLContext | None = None
) -> tuple[dict, dict]:
    req = urllib.request.Request(
        base + route,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with _open(req, 120, context) as r:
            return json.loads(r.read()), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as exc:
        raise MediaError(f"the appliance answered {route} with {exc.code}: {exc.read()[:200]!r}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise MediaError(f"cannot reach the appliance at {base}: {exc}") from None


def _open(req: str | urllib.request.Request, timeout: float, context: ssl.SSLContext | None) -> Any:
    """urlopen without proxies: the installer talks to this host's appliance only, and an `http_proxy` in the
    operator's environment must not carry the request (and the API key in it) off the host."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers).open(req, timeout=timeout)


def pinned_context(cert: Path) -> ssl.SSLContext:
    """Trust exactly the certificate the appliance serves (its own file), whoever issued it: the installer
    checks its own host, where the listen address need not be one of the certificate's names."""
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the trust anchor
    ctx.check_hostname = False
    return ctx
