"""`appliance serve`: local Ray (or RAY_ADDRESS), then Serve with the gateway on host:port."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from appliance.config import get_settings


def serve() -> None:
    """Start the appliance: verify and load the active bundles, serve the API until Ctrl-C or SIGTERM."""
    from appliance.serving.ray_env import start_ray

    settings = get_settings()
    start_ray(settings, Path.home())  # first: Ray reads its environment once, when it is imported
    from ray import serve as ray_serve

    from appliance.serving.app import build_app

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        ray_serve.start(http_options={"host": settings.host, "port": settings.port})
        ray_serve.run(build_app(), name="appliance", route_prefix="/")
        typer.echo(f"appliance serving on http://{settings.host}:{settings.port} (Ctrl-C to stop)", err=True)
        stop.wait()
        typer.echo("draining streams and stopping...", err=True)
    finally:
        ray_serve.shutdown()
        import ray

        ray.shutdown()
