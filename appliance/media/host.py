"""The installed appliance as a process: start (systemd or a detached `appliance serve`), stop, and the
first audited answer through its API. Standard library only (the installer runs before any venv exists).
"""

from __future__ import annotations

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

from appliance.media.manifest import MediaError

READY_SECONDS = 300


def start_detached(appliance: Path, env: dict[str, str], pid_file: Path, log: Path) -> int:
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
        )
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def stop_detached(pid_file: Path, timeout: float = 60) -> bool:
    """SIGINT to the server's process group (it drains streams), SIGKILL after `timeout`."""
    try:
        pid = int(pid_file.read_text())
        os.killpg(pid, signal.SIGINT)
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except OSError:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    pid_file.unlink(missing_ok=True)
    return True


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
        f"the appliance did not become ready at {base} within {READY_SECONDS} s"
        + (f" (see {log})" if log else "")
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
    seqs = [
        r["seq"] for r in records["data"] if r.get("request_id") == request_id and r["event"] == "completion"
    ]
    if not seqs:
        raise MediaError(f"the answer to request {request_id} has no audit record")
    return reply["choices"][0]["message"]["content"], seqs[0]


def _call(base: str, route: str, token: str, body: dict | None = None,
          context: ssl.SSLContext | None = None) -> tuple[dict, dict]:
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
