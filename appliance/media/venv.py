"""A release's virtual environment, built offline from the media's wheels with `uv`.

uv is a static binary from its own wheel on the media: no python3-venv or ensurepip needed on the host.
Standard library only (this runs before any venv exists).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from appliance.files import atomic_write
from appliance.media.join import join_parts
from appliance.media.manifest import MediaError, MediaFile
from appliance.media.wheelhouse import serving_requirements


def join_wheels(media: Path, files: tuple[MediaFile, ...], release: Path) -> None:
    """The wheels split into parts on the media, joined whole into the release's own find-links folder."""
    (release / "wheels").mkdir(parents=True, exist_ok=True)  # a find-links folder even when none is split
    for f in files:
        if f.parts and f.path.startswith("wheels/"):
            join_parts(media, f, release / f.path)


def make_venv(media: Path, gpu: bool, release: Path) -> None:
    """Made in place (scripts carry absolute paths); an interrupted attempt has no `.complete` and is redone."""
    venv = release / "venv"
    if (venv / ".complete").exists():
        return
    shutil.rmtree(venv, ignore_errors=True)
    uv = unpack_uv(media, release)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "UV_NO_CONFIG": "1",
        "UV_OFFLINE": "1",
        "UV_CACHE_DIR": str(release / ".uv-cache"),
        "UV_PYTHON_DOWNLOADS": "never",
        "HOME": str(release),
    }
    _exec([str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)], env)
    _exec(
        [
            str(uv),
            "pip",
            "install",
            "--quiet",
            "--offline",
            "--no-index",
            "--python",
            str(venv / "bin/python"),
            "--find-links",
            str(media / "wheels"),
            "--find-links",
            str(release / "wheels"),
            *serving_requirements(release.name, gpu),
        ],
        env,
    )
    shutil.rmtree(release / ".uv-cache", ignore_errors=True)
    (venv / ".complete").write_text("")


def unpack_uv(media: Path, release: Path) -> Path:
    found = [*(release / "wheels").glob("uv-*.whl"), *(media / "wheels").glob("uv-*.whl")]
    wheel = found[0] if found else None  # joined from its parts, or whole on the media
    if wheel is None:
        raise MediaError("the media has no uv wheel")
    dest = release / "tools" / "uv"
    if not dest.exists():
        with zipfile.ZipFile(wheel) as z:
            name = next(n for n in z.namelist() if n.endswith("/scripts/uv"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(name) as src, atomic_write(dest, binary=True, mode=0o755) as out:
                shutil.copyfileobj(src, out)
    return dest


def _exec(argv: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise MediaError(f"{Path(argv[0]).name} {argv[1]}: {lines[-1] if lines else proc.returncode}")
