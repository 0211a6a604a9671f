"""systemd units for the Ray head, a Ray worker, the audit forwarder and the Serve application, rendered from
the media's templates (installer/systemd/*.service) with the prefix, the data folder and the site's allowed
addresses.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from appliance.media.account import run
from appliance.media.manifest import MediaError

UNIT_DIR = Path("/etc/systemd/system")
# the audit forwarder runs once per appliance, on the head (it exits at once while no collector is set)
HEAD_UNITS = ("appliance-ray-head.service", "appliance-audit-forward.service", "appliance-serve.service")


def render(
    template: str,
    *,
    prefix: Path,
    data: Path,
    allow: str = "",
    head: str = "127.0.0.1:6379",
    head_ip: str = "127.0.0.1",
    node_ip: str = "127.0.0.1",
    ray_env: str = "",
) -> str:
    for key, value in {
        "@NODE_IP@": node_ip,
        "@RAY_ENV@": ray_env,
        "@PREFIX@": str(prefix),
        "@DATA@": str(data),
        "@ALLOW@": allow,
        "@HEAD@": head,
        "@HEAD_IP@": head_ip,
    }.items():
        template = template.replace(key, value)
    return template


def install_units(templates: Path, prefix: Path, data: Path, unit_dir: Path = UNIT_DIR) -> None:
    if shutil.which("systemctl") is None:
        raise MediaError("systemctl not found: this host has no systemd (use --no-systemd)")
    for name in HEAD_UNITS:
        (unit_dir / name).write_text(render((templates / name).read_text(), prefix=prefix, data=data))
    run(["systemctl", "daemon-reload"])


def start_units() -> None:
    run(["systemctl", "enable", "--now", *HEAD_UNITS])
    run(["systemctl", "restart", HEAD_UNITS[-1]])
