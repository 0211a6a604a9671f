"""`appliance serve`: local Ray (or RAY_ADDRESS), then Serve with the gateway on host:port."""

from __future__ import annotations

import ipaddress
import signal
import threading
from pathlib import Path

import structlog
import typer

from appliance.config import Settings, get_settings
from appliance.errors import ApplianceError
from appliance.serving.netns import bind_listener, enter_private_network
from appliance.serving.relay import Relay

log = structlog.get_logger()


def serve() -> None:
    """Start the appliance: verify and load the active bundles, serve the API until Ctrl-C or SIGTERM."""
    from appliance.serving.ray_env import start_ray

    settings = get_settings()
    relay = _private_network(settings)
    start_ray(settings, Path.home())  # first: Ray reads its environment once, when it is imported
    from ray import serve as ray_serve

    from appliance.serving.app import build_app

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        proxy_host = "127.0.0.1" if relay else settings.host
        ray_serve.start(http_options={"host": proxy_host, "port": settings.port})
        ray_serve.run(build_app(), name="appliance", route_prefix="/")
        if relay:
            relay.start()
        typer.echo(f"appliance serving on http://{settings.host}:{settings.port} (Ctrl-C to stop)", err=True)
        stop.wait()
        typer.echo("draining streams and stopping...", err=True)
    finally:
        if relay:
            relay.stop()
        ray_serve.shutdown()
        import ray

        ray.shutdown()


def _private_network(settings: Settings) -> Relay | None:
    """Bind the API on the host, then move into Ray's private network; None where Ray stays on the host's."""
    if settings.ray_address or settings.ray_network == "host":
        if not settings.ray_address:
            log.warning("Ray runs on the host's network: close its ports below Ray (a firewall, systemd's "
                        "IPAddressDeny), or any host that reaches them can run code")
        return None
    if not _loopback(settings.host):
        raise ApplianceError(f"host {settings.host} is not a loopback address: with ray_network=private the API "
                             "relay serves this host only; set APPLIANCE_RAY_NETWORK=host and firewall Ray's ports")
    listener = bind_listener(settings.host, settings.port)
    enter_private_network()
    return Relay(listener, ("127.0.0.1", settings.port))


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
