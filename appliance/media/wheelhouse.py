"""The wheelhouse: the appliance wheel and every wheel of the serving install, for each target Python.

Built with pip on the connected staging machine (pip's cache makes reruns quick). Only binary wheels for
CPython on manylinux x86_64 are accepted, so nothing needs compiling on the air-gapped host. torch and
transformers belong to the bundle-building workstation and are refused here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from appliance.media.manifest import MediaError

PLATFORMS = (  # NVIDIA tags its cuDNN wheels manylinux_2_27; llguidance (structured outputs) manylinux_2_31
    "manylinux_2_34_x86_64",
    "manylinux_2_31_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)
TOOLS = ("pip", "setuptools", "wheel", "uv", "virtualenv")  # uv: the installer's venv builder; virtualenv: its fallback
GPU_EXTRA = "gpu"
CPU_EXTRA = "cpu"
SOURCE_FILES = ("pyproject.toml", "README.md")  # what pyproject.toml reads besides the package
NEVER = ("torch", "transformers")


def serving_requirements(version: str, gpu: bool) -> list[str]:
    """What the air-gapped host installs; GPU media adds NVIDIA's CUDA and cuDNN runtime wheels."""
    if gpu:
        return [f"appliance[{GPU_EXTRA}]=={version}", "onnxruntime-gpu[cuda,cudnn]"]
    return [f"appliance[{CPU_EXTRA}]=={version}"]


def build_appliance_wheel(repo: Path, dest: Path, *, source_date_epoch: int) -> Path:
    """`pip wheel --no-deps` of a clean copy of the package sources (a checkout's stale `build/` could slip
    deleted modules into the wheel); SOURCE_DATE_EPOCH pins the zip timestamps (reproducible)."""
    with tempfile.TemporaryDirectory(prefix="appliance-wheel-") as tmp:
        src = Path(tmp) / "src"
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(repo / "appliance", src / "appliance", ignore=skip)
        for name in SOURCE_FILES:
            shutil.copyfile(repo / name, src / name)
        _pip(
            ["wheel", "--no-deps", "--no-build-isolation", "-w", tmp, str(src)],
            {"SOURCE_DATE_EPOCH": str(source_date_epoch)},
            "building the appliance wheel",
        )
        made = sorted(Path(tmp).glob("appliance-*.whl"))
        if len(made) != 1:
            raise MediaError(f"expected one appliance wheel, pip made {len(made)}")
        return Path(shutil.copy2(made[0], dest / made[0].name))


def download(dest: Path, requirements: list[str], pythons: list[str]) -> None:
    """`pip download` of `requirements` plus the tools, once per target Python, into one flat folder."""
    for py in pythons:
        tag = "cp" + py.replace(".", "")
        args = [
            "download",
            "-d",
            str(dest),
            "--find-links",
            str(dest),
            "--only-binary=:all:",
            "--python-version",
            py,
            "--implementation",
            "cp",
            "--abi",
            tag,
            "--abi",
            "abi3",
            "--abi",
            "none",
        ]
        for platform in PLATFORMS:
            args += ["--platform", platform]
        _pip(args + requirements + list(TOOLS), {}, f"downloading wheels for Python {py}")
    bad = sorted(p.name for p in dest.glob("*.whl") if p.name.split("-")[0].lower() in NEVER)
    if bad:
        raise MediaError(f"the serving install pulled in {bad[0]}: torch and transformers never go on the media")


def _pip(args: list[str], extra_env: dict[str, str], what: str) -> None:
    """pip with the staging machine's own configuration (index, find-links, cache): the connected side."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        env={**os.environ, **extra_env},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = [
            line
            for line in (proc.stderr or proc.stdout).splitlines()
            if line.strip() and not line.startswith("WARNING")
        ]
        raise MediaError(f"{what} failed: {tail[-1] if tail else 'pip exited with ' + str(proc.returncode)}")
