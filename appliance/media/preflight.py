"""Checks made before the install changes anything: platform, Python, GPU driver, versions, free space.

Each failure is one line that says what is wrong and, for space, how much is needed and how much is free
on which filesystem (the prefix, the data folder and the temporary folder are summed per filesystem).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from appliance.media.manifest import Manifest, MediaError, version_key

VENV_FACTOR = 3  # an installed wheel takes about three times its compressed size
MARGIN = 64 << 20


def check_platform(manifest: Manifest) -> None:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise MediaError(f"this media is for Linux x86_64, not {sys.platform} {platform.machine()}")
    if here not in manifest.pythons:
        raise MediaError(
            f"this media holds wheels for Python {', '.join(manifest.pythons)}, not {here} "
            f"({sys.executable}); set APPLIANCE_PYTHON to a matching interpreter"
        )


def check_gpu(manifest: Manifest) -> str | None:
    """GPU media needs the NVIDIA driver (only the driver: CUDA and cuDNN come as wheels on the media)."""
    if not manifest.gpu:
        return None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise MediaError("this is GPU media but the NVIDIA driver is not installed (nvidia-smi not found)")
    proc = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise MediaError(f"nvidia-smi found no working GPU: {(proc.stderr or proc.stdout).strip()[:200]}")
    return proc.stdout.split()[0]


def check_versions(manifest: Manifest, installed: str | None, *, allow_downgrade: bool) -> None:
    if installed is None:
        return
    if version_key(manifest.version) < version_key(installed) and not allow_downgrade:
        raise MediaError(
            f"media {manifest.version} is older than the installed {installed} "
            "(use --allow-downgrade to install it anyway)"
        )
    if version_key(installed) < version_key(manifest.min_upgrade_from):
        raise MediaError(
            f"media {manifest.version} upgrades from {manifest.min_upgrade_from} or newer; "
            f"{installed} is installed: install the versions in between first"
        )


def check_space(needs: dict[Path, int]) -> None:
    """`needs`: folder -> bytes this install will write there; summed per filesystem."""
    per_fs: dict[int, tuple[Path, int]] = {}
    for folder, need in needs.items():
        existing = _existing(folder)
        dev = os.stat(existing).st_dev
        where, total = per_fs.get(dev, (existing, 0))
        per_fs[dev] = (where, total + need)
    for where, need in per_fs.values():
        st = os.statvfs(where)
        free = st.f_bavail * st.f_frsize
        if free < need + MARGIN:
            raise MediaError(
                f"not enough free space on {where}: this install needs {_size(need + MARGIN)} "
                f"there, {_size(free)} is free"
            )


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
