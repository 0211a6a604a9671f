"""`appliance serve`: local Ray (or RAY_ADDRESS), then Serve with the gateway behind the front on host:port
(appliance/tls/front.py: TLS, or plain HTTP without a certificate). With Ray in its private network the
front is always there: it is the only way in."""

from __future__ import annotations

import dataclasses
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    import socket

    from appliance.config import Settings


def serve() -> None:
    """Start the appliance: verify and load the active bundles, serve the API until Ctrl-C or SIGTERM."""
    from appliance.config import get_settings
    from appliance.serving.ray_env import start_ray
    from appliance.tls.front import Front, FrontLimits
    from appliance.tls.listen import plan

    settings = get_settings()
    listen = plan(settings)  # first: a refused address or certificate costs nothing
    listener = _private_network(settings)
    if listener is not None and listen.tls is None:  # the front takes the address; Serve listens inside
        listen = dataclasses.replace(listen, serve_host="127.0.0.1")
    start_ray(settings, Path.home())  # first: Ray reads its environment once, when it is imported
    from ray import serve as ray_serve

    from appliance.serving.app import build_app

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    front = None
    try:
        if listen.tls is not None or listener is not None:  # first: it makes the secret gateways check it with
            front = Front(
                listen,
                settings.tls_client_auth,
                settings.keys_dir,
                settings.tls_reload_seconds,
                sock=listener,
                limits=FrontLimits.from_settings(settings),
            )
        # the proxy on the head only: on a cluster's workers it would put the API on their site address,
        # past the front (TLS, client addresses); the gateway and the front stay on the head
        ray_serve.start(proxy_location="HeadOnly", http_options={"host": listen.serve_host, "port": listen.serve_port})
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


def _private_network(settings: Settings) -> socket.socket | None:
    """Bind the API on the host, then move into Ray's private network; the bound socket (the front accepts
    on it and attests each client's address), or None where Ray stays on the host's network."""
    import structlog

    from appliance.serving.netns import bind_listener, enter_private_network
    from appliance.serving.ray_env import cluster_of

    cluster = cluster_of(settings)  # a cluster head: Ray on the site address, its peers need TLS and the token
    if settings.ray_address or settings.ray_network == "host" or cluster is not None:
        if not settings.ray_address and cluster is None:
            structlog.get_logger().warning(
                "Ray runs on the host's network: close its ports below Ray (a firewall, systemd's "
                "IPAddressDeny), or any host that reaches them can run code"
            )
        return None
    listener = bind_listener(settings.host, settings.port)
    enter_private_network()
    return listener
