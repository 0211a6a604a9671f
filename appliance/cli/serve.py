"""`appliance serve`: local Ray (or RAY_ADDRESS), then Serve with the gateway on host:port, or behind the
TLS front on host:port (appliance/tls), which then also takes the relay's place into Ray's private network."""

from __future__ import annotations

import dataclasses
import ipaddress
import signal
import socket
import threading
from pathlib import Path

import structlog
import typer

from appliance.config import Settings, get_settings
from appliance.errors import ApplianceError
from appliance.serving.netns import bind_listener, enter_private_network
from appliance.serving.relay import Relay
from appliance.tls.listen import Listen, plan

log = structlog.get_logger()


def serve() -> None:
    """Start the appliance: verify and load the active bundles, serve the API until Ctrl-C or SIGTERM."""
    from appliance.serving.ray_env import start_ray

    settings = get_settings()
    listen = plan(settings)  # first: a refused address or certificate costs nothing
    listener = _private_network(settings, listen)
    if listener is not None and listen.tls is None:
        listen = dataclasses.replace(listen, serve_host="127.0.0.1")  # inside Ray's network
    start_ray(settings, Path.home())  # first: Ray reads its environment once, when it is imported
    from ray import serve as ray_serve

    from appliance.serving.app import build_app

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    front, relay = None, None
    try:
        if listen.tls is not None:  # made first: it makes the secret the gateways verify its header with
            from appliance.tls.front import Front

            front = Front(listen, settings.tls_client_auth, settings.keys_dir, settings.tls_reload_seconds,
                          sock=listener)
        elif listener is not None:
            relay = Relay(listener, (listen.serve_host, listen.serve_port))
        ray_serve.start(http_options={"host": listen.serve_host, "port": listen.serve_port})
        ray_serve.run(build_app(), name="appliance", route_prefix="/")
        if front is not None:
            front.start_in_thread()
        if relay is not None:
            relay.start()
        typer.echo(f"appliance serving on {listen.url} (Ctrl-C to stop)", err=True)
        stop.wait()
        typer.echo("draining streams and stopping...", err=True)
    finally:
        if relay is not None:
            relay.stop()
        ray_serve.shutdown()  # drains streams, through the front too
        if front is not None:
            front.stop()
        import ray

        ray.shutdown()


def _private_network(settings: Settings, listen: Listen) -> socket.socket | None:
    """Bind the API on the host, then move into Ray's private network; the bound socket, or None where Ray
    stays on the host's. Off loopback only with TLS: the front attests each client's address, which a
    plain byte relay would hide behind 127.0.0.1."""
    if settings.ray_address or settings.ray_network == "host":
        if not settings.ray_address:
            log.warning("Ray runs on the host's network: close its ports below Ray (a firewall, systemd's "
                        "IPAddressDeny), or any host that reaches them can run code")
        return None
    if not _loopback(settings.host) and listen.tls is None:
        raise ApplianceError(f"host {settings.host} is not a loopback address: with ray_network=private the API "
                             "relay serves this host only; set APPLIANCE_RAY_NETWORK=host and firewall Ray's ports")
    listener = bind_listener(settings.host, settings.port)
    enter_private_network()
    return listener


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
