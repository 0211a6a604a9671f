"""`appliance serve`: local Ray (or RAY_ADDRESS), then Serve with the gateway on host:port, or behind the
TLS front on host:port with Serve on 127.0.0.1 (appliance/tls)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from appliance.config import get_settings


def serve() -> None:
    """Start the appliance: verify and load the active bundles, serve the API until Ctrl-C or SIGTERM."""
    from appliance.serving.ray_env import start_ray
    from appliance.tls.listen import plan

    settings = get_settings()
    listen = plan(settings)  # before Ray: a refused address costs nothing
    start_ray(settings, Path.home())  # first: Ray reads its environment once, when it is imported
    from ray import serve as ray_serve

    from appliance.serving.app import build_app

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    front = None
    try:
        if listen.tls is not None:  # first: it makes the secret the gateways verify its header with
            from appliance.tls.front import Front

            front = Front(listen, settings.tls_client_auth, settings.keys_dir, settings.tls_reload_seconds)
        ray_serve.start(http_options={"host": listen.serve_host, "port": listen.serve_port})
        ray_serve.run(build_app(), name="appliance", route_prefix="/")
        if front is not None:
            front.start_in_thread()
        typer.echo(f"appliance serving on {listen.url} (Ctrl-C to stop)", err=True)
        stop.wait()
        typer.echo("draining streams and stopping...", err=True)
    finally:
        ray_serve.shutdown()  # drains streams, through the front too
        if front is not None:
            front.stop()
        import ray

        ray.shutdown()
