"""Shared fixtures: settings rooted in a temporary folder, the CLI as a subprocess, and the air gap."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import Settings

REPO = Path(__file__).resolve().parents[1]
APPLIANCE = str(Path(sys.executable).with_name("appliance"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose every path lies under a fresh temporary data folder."""
    return Settings(data_dir=tmp_path / "var")


def clean_env(data_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment for a subprocess: no pip indexes or find-links, no proxies, our data folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "APPLIANCE_", "TIKTOKEN_")) and "proxy" not in k.lower()
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_NO_INDEX"] = "1"
    if data_dir is not None:
        env["APPLIANCE_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def offline_argv(argv: list[str]) -> list[str]:
    """`argv` run in a new network namespace with only loopback up: any outbound attempt fails."""
    script = 'ip link set lo up && exec "$@"'
    return ["unshare", "-n", "bash", "-c", script, "offline", *argv]


def have_unshare() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(offline_argv(["true"]), capture_output=True).returncode == 0


requires_unshare = pytest.mark.skipif(not have_unshare(), reason="unshare -n is not permitted here")


def run_cli(
    *args: str,
    data_dir: Path | None = None,
    offline: bool = True,
    check: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    program: tuple[str, ...] = (APPLIANCE,),
) -> subprocess.CompletedProcess[str]:
    """Run the real `appliance` console script (or `program`, a wrapper around it), by default inside
    `unshare -n` (the air gap)."""
    argv = [*program, *args]
    if offline and have_unshare():
        argv = offline_argv(argv)
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=clean_env(data_dir, **(env or {})), cwd=REPO, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"appliance {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def prepare_data(data: Path, bundle: Path, publisher_pub: Path, *more: list[str]) -> str:
    """A data folder as an operator leaves it before `appliance serve`: the publisher trusted, `bundle` imported
    and active, the database upgraded, then `more` commands; returns a new user key."""
    for args in (
        ["bundle", "trust", str(publisher_pub)],
        ["bundle", "import", str(bundle), "--activate"],
        ["db", "upgrade"],
        *more,
    ):
        run_cli(*args, data_dir=data, check=True)
    return run_cli("keys", "create", "--name", "client", "--role", "user", data_dir=data, check=True).stdout.strip()


def serve_offline(
    workdir: Path, data: Path, port: int, client: str, *client_args: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """`appliance serve` in the background inside `unshare -n`, the Python source `client` run against it with
    `client_args`, then Ctrl-C for a clean stop. Returns the client's process and the server's log."""
    (workdir / "client.py").write_text(client)
    script = f"""
        {APPLIANCE} serve > {workdir}/serve.log 2>&1 &
        server=$!
        {sys.executable} {workdir}/client.py {" ".join(client_args)}; rc=$?
        kill -INT $server; wait $server
        exit $rc
    """
    env = clean_env(data, APPLIANCE_PORT=str(port), APPLIANCE_RAY_AUTH_MODE="token", HOME=str(workdir))
    proc = subprocess.run(offline_argv(["bash", "-c", script]), env=env, capture_output=True, text=True, timeout=400)
    return proc, (workdir / "serve.log").read_text()


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """Assert the CLI failed the way an operator should see it: non-zero, one line, no traceback."""
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory, request) -> Iterator[Path]:
    """A folder for one module's fixtures, removed when the module ends. Each appliance holds a copy of its
    bundle (147 MiB for the tiny one): a run that kept them all until its end filled CI's disk."""
    folder = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The tiny published-layout gpt-oss checkpoint (seconds to write), shared by every test package."""
    from appliance.demo.checkpoint import gpt_oss_config, write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("hf") / "tiny", gpt_oss_config("tiny"), seed=0)


@pytest.fixture(scope="session")
def publisher(tmp_path_factory):
    """A bundle publisher's key pair: (private key, public key file)."""
    from appliance.signing import keys

    d = tmp_path_factory.mktemp("publisher")
    key = keys.generate_private_key()
    keys.write_public_key(key.public_key(), d / "publisher.pub")
    return key, d / "publisher.pub"


@pytest.fixture(scope="session")
def signed_tiny_bundle(tiny_checkpoint, tmp_path_factory, publisher) -> Path:
    """The tiny checkpoint as a signed cpu-fp32 bundle named `tiny`, version 1.0.0."""
    from appliance.bundles.build import build_bundle

    return build_bundle(
        tiny_checkpoint,
        tmp_path_factory.mktemp("api-bundle") / "tiny",
        profile="cpu-fp32",
        name="tiny",
        version="1.0.0",
        key=publisher[0],
    )


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray and Serve proxy for the session (~10 s to start), shared by every package's tests."""
    ray = pytest.importorskip("ray")
    from ray import serve

    from appliance.config import Settings
    from appliance.serving.ray_env import start_ray

    home = tmp_path_factory.mktemp("home")
    # Ray reads RAY_AUTH_MODE once per process, and other tests may have imported it already: token auth
    # is exercised by the `appliance serve` subprocess test instead.
    settings = Settings(data_dir=tmp_path_factory.mktemp("ray") / "var", ray_auth_mode="disabled")
    start_ray(settings, home)
    from tests.integration.conftest import free_port

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
    ray.shutdown()


# The trained demo bundle, built once per machine: the cache under var/cache/demo survives test sessions.
# The first session trains (about a minute on 2 cores) and converts; later ones, and the serving tests,
# find the signed bundle in the cache. The signing key beside the cache is a test key.
# where the trained demo models are kept between runs; a worktree may point elsewhere (one cache per key)
DEMO_CACHE = Path(os.environ.get("APPLIANCE_TEST_DEMO_CACHE") or REPO / "var" / "cache" / "demo")
DEMO_KEY = REPO / "var" / "cache" / "demo-test-signing.key"


@pytest.fixture(scope="session")
def demo_key():
    from appliance.signing.keys import KeyFileError, generate_private_key, load_private_key, write_private_key

    if not DEMO_KEY.exists():
        DEMO_KEY.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_private_key(generate_private_key(), DEMO_KEY)
        except KeyFileError:  # another session wrote it first
            pass
    return load_private_key(DEMO_KEY)


@pytest.fixture(scope="session")
def demo_bundle(demo_key) -> Path:
    from appliance.demo.model import ensure_demo_bundle

    return ensure_demo_bundle(DEMO_CACHE, demo_key, log=print)


@pytest.fixture(scope="session")
def demo_classifier_bundle(demo_key) -> Path:
    """The demo classifier (appliance/demo/safeguard.py), trained and signed like the demo model."""
    from appliance.demo.model import CLASSIFIER, ensure_demo_bundle

    return ensure_demo_bundle(DEMO_CACHE, demo_key, model=CLASSIFIER, log=print)
