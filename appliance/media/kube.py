"""The Kubernetes half of the media, in `kubernetes/`: the Helm chart package and the OCI image archives.

Both are ordinary media files, so the signed manifest lists each with its size and SHA-256 (an image
archive over the split size travels as parts like any file) and `install.sh --verify-only` checks them;
the manifest's `extra.kubernetes` names them for the operator. The chart is packaged by the real `helm
package` (the values schema travels inside it) of a copy whose files all carry SOURCE_DATE_EPOCH: helm writes
the files' own times, which a fresh checkout changes, so equal contents give the same archive. An image
archive is taken only when it is an OCI image layout archive (`make image` writes `var/image/*.oci.tar`),
with its SBOM beside it when there is one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from appliance.media.manifest import MediaError

FOLDER = "kubernetes"
IMAGES = f"{FOLDER}/images"
OCI_SUFFIX = ".oci.tar"
SBOM_SUFFIX = ".sbom.cdx.json"


def find_helm(repo: Path, given: Path | None) -> Path:
    """`--helm`, else the pinned copy scripts/helm.sh puts in var/tools, else a helm on PATH."""
    if given is not None and not given.is_file():
        raise MediaError(f"--helm {given}: no such file")
    for candidate in (given, repo / "var" / "tools" / "helm", shutil.which("helm")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise MediaError("the media carry the Helm chart: no helm found (run `bash scripts/helm.sh`, or --helm PATH)")


def package_chart(stage: Path, chart: Path, helm: Path, source_date_epoch: int) -> str:
    """`helm package` of the chart into kubernetes/; the package's media path."""
    if not (chart / "Chart.yaml").is_file():
        raise MediaError(f"{chart} has no Chart.yaml: build media from an appliance checkout")
    dest, work = stage / FOLDER, stage / ".chart"
    dest.mkdir(parents=True, exist_ok=True)
    copy = Path(shutil.copytree(chart, work / chart.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")))
    for path in [copy, *copy.rglob("*")]:
        os.utime(path, (source_date_epoch, source_date_epoch))
    try:
        proc = subprocess.run(
            [str(helm), "package", str(copy), "-d", str(dest)], capture_output=True, text=True, timeout=300
        )
    except OSError as exc:
        raise MediaError(f"cannot run {helm}: {exc.strerror}") from None
    finally:
        shutil.rmtree(work)
    packages = sorted(dest.glob("*.tgz"))
    if proc.returncode != 0 or len(packages) != 1:
        last = (proc.stderr.strip().splitlines() or ["no package written"])[-1]
        raise MediaError(f"helm package {chart} failed: {last}")
    with tarfile.open(packages[0]) as tar:
        if f"{chart.name}/values.schema.json" not in tar.getnames():
            raise MediaError(f"the chart package {packages[0].name} holds no values.schema.json")
    return f"{FOLDER}/{packages[0].name}"


def add_images(stage: Path, archives: tuple[Path, ...]) -> list[str]:
    """Each OCI image archive (and its SBOM beside it) into kubernetes/images/; their media paths."""
    dest = stage / IMAGES
    out = []
    for src in archives:
        if not src.name.endswith(OCI_SUFFIX) or not src.is_file():
            raise MediaError(f"--image {src}: not an OCI archive file (`make image` writes var/image/*{OCI_SUFFIX})")
        if (dest / src.name).exists():
            raise MediaError(f"--image {src.name} is named twice")
        _check_oci(src)
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest / src.name)
        sbom = src.with_name(src.name[: -len(OCI_SUFFIX)] + SBOM_SUFFIX)
        if sbom.is_file():
            shutil.copyfile(sbom, dest / sbom.name)
        out.append(f"{IMAGES}/{src.name}")
    return out


def _check_oci(path: Path) -> None:
    """An OCI image layout archive has `oci-layout` and `index.json` at its top (OCI image-spec)."""
    try:
        with tarfile.open(path) as tar:
            names = {n.removeprefix("./") for n in tar.getnames()}
    except (tarfile.TarError, OSError) as exc:
        raise MediaError(f"--image {path}: not a readable tar archive ({exc})") from None
    if not {"oci-layout", "index.json"} <= names:
        raise MediaError(f"--image {path}: not an OCI image layout (no oci-layout and index.json at its top)")
