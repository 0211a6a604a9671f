"""The Python half of `make image` (scripts/image.sh): the wheelhouse the image installs from, and its SBOM.

The image installs offline (`pip --no-index`) from the same wheels the offline media carries: a media folder
is reused when one is named (split wheels joined and checked through its signed manifest), else a wheelhouse
is built here with the media's own code, for the image's one Python (Debian bookworm's 3.11). The SBOM lists
the wheels pip actually installed (its `--report`), so its digest, labelled on the image, names them exactly.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from appliance.media import wheelhouse
from appliance.media.join import join_parts, sha256_file
from appliance.media.manifest import MediaError
from appliance.media.sbom import write_sbom

IMAGE_PYTHON = "3.11"  # Debian bookworm's python3
POSTGRES_EXTRA = "postgres"  # the chart's database.urlSecret: pods of several workers share PostgreSQL


def image_requirements(version: str, gpu: bool, wheels: Path | None = None) -> list[str]:
    """The media's serving install plus the PostgreSQL driver; media without psycopg gives a SQLite-only
    image (said on stderr) rather than no image."""
    reqs = wheelhouse.serving_requirements(version, gpu)
    if wheels is not None and not any(wheels.glob("psycopg_binary-*.whl")):
        print(f"warning: {wheels} holds no psycopg wheels: this image uses SQLite only", file=sys.stderr)
        return reqs
    return [*reqs, f"appliance[{POSTGRES_EXTRA}]=={version}"]


def media_wheels(media: Path, dest: Path, *, gpu: bool) -> Path:
    """The wheels of signed media; wheels are joined into `dest` only when the media split them."""
    from appliance.media.verify import media_key, read_manifest

    manifest = read_manifest(media, [media_key(media)]).manifest
    if manifest.gpu != gpu:
        raise MediaError(f"{media} is {'GPU' if manifest.gpu else 'CPU'} media; the image asked for the other")
    if IMAGE_PYTHON not in manifest.pythons:
        raise MediaError(f"{media} carries no wheels for Python {IMAGE_PYTHON} (the image's Debian python3)")
    split = [f for f in manifest.files if f.path.startswith("wheels/") and f.parts]
    if not split:
        return media / "wheels"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in manifest.files:
        if f.path.startswith("wheels/") and f.path.endswith(".whl"):
            target = dest / Path(f.path).name
            if f.parts:
                join_parts(media, f, target)
            else:
                shutil.copyfile(media / f.path, target)
    return dest


def build_wheels(repo: Path, dest: Path, *, gpu: bool, source_date_epoch: int) -> Path:
    """A wheelhouse kept in `dest` between runs (pip's cache and the wheels already there make reruns
    quick); the appliance wheel is rebuilt every time so the image holds this checkout."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("appliance-*.whl"):
        old.unlink()
    wheel = wheelhouse.build_appliance_wheel(repo, dest, source_date_epoch=source_date_epoch)
    version = wheel.name.split("-")[1]
    wheelhouse.download(dest, image_requirements(version, gpu), [IMAGE_PYTHON])
    return dest


def installed_wheels(report: Path, wheels: Path) -> dict[str, str]:
    """`wheels/NAME.whl` -> SHA-256 of every wheel in pip's install report, hashed from the wheelhouse."""
    items = json.loads(report.read_text())["install"]
    out = {}
    for item in items:
        name = Path(unquote(urlparse(item["download_info"]["url"]).path)).name
        if not name.endswith(".whl"):
            raise MediaError(f"pip installed {name}, which is not a wheel")
        out[f"wheels/{name}"] = sha256_file(wheels / name)
    bad = sorted(p for p in out if Path(p).name.split("-")[0].lower() in wheelhouse.NEVER)
    if bad:
        raise MediaError(f"the image's install pulled in {bad[0]}: torch and transformers never go in it")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m appliance.media.image")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wheels", help="print the wheelhouse folder the image installs from")
    w.add_argument("--repo", type=Path, required=True)
    w.add_argument("--cache", type=Path, required=True)
    w.add_argument("--media", type=Path)
    w.add_argument("--gpu", action="store_true")
    w.add_argument("--source-date-epoch", type=int, default=0)
    r = sub.add_parser("requirements", help="print what pip installs into the image, one per line")
    r.add_argument("--version", required=True)
    r.add_argument("--wheels", type=Path, required=True)
    r.add_argument("--gpu", action="store_true")
    s = sub.add_parser("sbom", help="write the SBOM of the installed wheels, print its SHA-256")
    s.add_argument("--report", type=Path, required=True)
    s.add_argument("--wheels", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--version", required=True)
    s.add_argument("--source-date-epoch", type=int, default=0)
    a = p.parse_args(argv)
    try:
        if a.cmd == "wheels":
            flavour = "gpu" if a.gpu else "cpu"
            if a.media is not None:
                found = media_wheels(a.media, a.cache / f"media-wheels-{flavour}", gpu=a.gpu)
            else:
                found = build_wheels(
                    a.repo, a.cache / f"wheels-{flavour}", gpu=a.gpu, source_date_epoch=a.source_date_epoch
                )
            print(found.resolve())
        elif a.cmd == "requirements":
            print("\n".join(image_requirements(a.version, a.gpu, a.wheels)))
        else:
            digests = installed_wheels(a.report, a.wheels)
            a.out.parent.mkdir(parents=True, exist_ok=True)
            made = write_sbom(
                a.out.parent,
                digests,
                version=a.version,
                bundles={},
                source_date_epoch=a.source_date_epoch,
                name="appliance-image",
            )
            made.replace(a.out)
            print(sha256_file(a.out))
    except (MediaError, OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
