"""Building media on the connected staging machine: wheelhouse, verified bundles, policy pack, installer,
the Kubernetes chart package and image archives (media/kube.py), SBOM, split files, then MANIFEST.json
signed into MANIFEST.sig.

Everything is assembled in `OUT.partial` and renamed to OUT at the end, so an interrupted build leaves no
folder that looks like media. Inputs that are equal give a byte-identical manifest: no timestamps, sorted
listings, SOURCE_DATE_EPOCH for the appliance wheel and the SBOM.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from appliance.media import kube, wheelhouse
from appliance.media.manifest import MANIFEST, RELEASE_KEY, Manifest, MediaError, MediaFile, Part, write_signature
from appliance.media.sbom import write_sbom
from appliance.signing import keys
from appliance.signing.hashing import Piece, Progress, hash_pieces

DEFAULT_SPLIT = int(3.9 * 2**30)  # under FAT32's 4 GiB file limit
PART_SUFFIX = ".part"


@dataclass(frozen=True)
class BuildInputs:
    repo: Path  # the appliance checkout: pyproject.toml, installer/, policies/
    release_key: keys.PrivateKey
    bundles: tuple[Path, ...] = ()
    bundle_keys: tuple[Path, ...] = ()  # publisher public keys the bundles must verify against
    split_size: int = DEFAULT_SPLIT
    pythons: tuple[str, ...] = ("3.11", "3.12")
    gpu: bool = False
    policy_dir: Path | None = None
    min_upgrade_from: str | None = None
    source_date_epoch: int = 0
    wheelhouse: Path | None = None  # reuse wheels already downloaded (bench, tests); else pip downloads them
    images: tuple[Path, ...] = ()  # OCI image archives (`make image`) for Kubernetes sites
    helm: Path | None = None  # the helm that packages the chart (default: var/tools/helm, else PATH)


def build_media(out: Path, inp: BuildInputs, *, workers: int, progress: Progress | None = None) -> Manifest:
    if out.exists() and any(out.iterdir()):
        raise MediaError(f"{out} already exists and is not empty")
    if inp.split_size < 1:
        raise MediaError("the split size must be at least one byte")
    stage = out.with_name(out.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "wheels").mkdir(parents=True)
    try:
        kubernetes = {  # first: a wrong --image or no helm is refused before minutes of downloads
            "images": kube.add_images(stage, inp.images),
            "chart": kube.package_chart(
                stage, inp.repo / "helm" / "appliance", kube.find_helm(inp.repo, inp.helm), inp.source_date_epoch
            ),
        }
        version = _wheels(stage / "wheels", inp)
        bundle_ids = _bundles(stage, inp, workers)
        _installer(stage, inp)
        keys.write_public_key(inp.release_key.public_key(), stage / RELEASE_KEY)
        listing = _listing(stage)
        digests = _hash(stage, {p: (0, s) for p, s in listing.items()}, workers, progress)
        write_sbom(stage, digests, version=version, bundles=bundle_ids, source_date_epoch=inp.source_date_epoch)
        listing = _listing(stage)
        files = _split(stage, listing, inp.split_size, workers, progress)
        manifest = Manifest(
            version=version,
            min_upgrade_from=inp.min_upgrade_from or f"{version.split('.')[0]}.0.0",
            pythons=tuple(inp.pythons),
            gpu=inp.gpu,
            split_size=inp.split_size,
            files=files,
            bundles=tuple(sorted(bundle_ids)),
            extra={"kubernetes": kubernetes},
        )
        raw = manifest.to_bytes()
        (stage / MANIFEST).write_bytes(raw)
        write_signature(stage, raw, inp.release_key)
        if out.exists():
            out.rmdir()
        os.rename(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return manifest


def _wheels(dest: Path, inp: BuildInputs) -> str:
    """The appliance wheel (its version is the media's) and the serving install's wheels."""
    wheel = wheelhouse.build_appliance_wheel(inp.repo, dest, source_date_epoch=inp.source_date_epoch)
    version = wheel.name.split("-")[1]
    if inp.wheelhouse is not None:
        for src in sorted(inp.wheelhouse.glob("*.whl")):
            if not src.name.startswith("appliance-") and not (dest / src.name).exists():
                shutil.copyfile(src, dest / src.name)
    wheelhouse.download(dest, wheelhouse.serving_requirements(version, inp.gpu), list(inp.pythons))
    return version


def _bundles(stage: Path, inp: BuildInputs, workers: int) -> dict[str, tuple[str, str]]:
    """Each bundle verified against the publisher keys while it is copied; the keys travel with them."""
    from appliance.bundles import SIGNATURE_FILE, verify_bundle

    if inp.bundles and not inp.bundle_keys:
        raise MediaError("--bundle needs --bundle-key: bundles are verified before they go on the media")
    trusted = [keys.load_public_key(p) for p in inp.bundle_keys]
    out: dict[str, tuple[str, str]] = {}
    for src in inp.bundles:
        first = verify_bundle(src, trusted, workers=workers)
        folder = f"bundles/{first.metadata.name}-{first.metadata.version}"
        if folder in out:
            raise MediaError(f"bundle {first.metadata.name} {first.metadata.version} is named twice")
        vb = verify_bundle(src, trusted, workers=workers, copy_to=stage / folder)
        shutil.copyfile(src / SIGNATURE_FILE, stage / folder / SIGNATURE_FILE)
        verify_bundle(stage / folder, trusted, workers=workers)  # the copied signature is the one checked
        out[folder] = (vb.metadata.name, vb.metadata.version)
    for pub in inp.bundle_keys:
        key = keys.load_public_key(pub)
        keys.write_public_key(key, stage / "trust" / "bundles" / f"{keys.key_hint(key)[:16]}.pub")
    return out


def _installer(stage: Path, inp: BuildInputs) -> None:
    src = inp.repo / "installer"
    if not (src / "install.sh").is_file():
        raise MediaError(f"{src} has no install.sh: build media from an appliance checkout")
    shutil.copytree(src, stage / "installer", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copyfile(src / "install.sh", stage / "install.sh")
    os.chmod(stage / "install.sh", 0o755)
    shutil.copytree(
        inp.policy_dir or inp.repo / "policies",
        stage / "policies",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )


def _listing(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def _hash(root: Path, ranges: dict[str, tuple[int, int]], workers: int, progress: Progress | None) -> dict[str, str]:
    digests = hash_pieces(root, [Piece(p, 0, s) for p, (_, s) in ranges.items()], workers=workers, progress=progress)
    return {piece.path: d for piece, d in digests.items()}


def _split(
    stage: Path, listing: dict[str, int], split_size: int, workers: int, progress: Progress | None
) -> tuple[MediaFile, ...]:
    """Whole files and parts hashed in one parallel pass; then each large file is cut into its parts."""
    pieces = [Piece(p, 0, s) for p, s in listing.items()]
    cuts = {
        p: [(i, off, min(off + split_size, s)) for i, off in enumerate(range(0, s, split_size))]
        for p, s in listing.items()
        if s > split_size and not _bootstrap_wheel(p)
    }
    if any(len(c) > 1000 for c in cuts.values()):
        raise MediaError("more than 1000 parts for one file: choose a larger --split-size")
    pieces += [Piece(p, a, b) for p, c in cuts.items() for _, a, b in c]
    digests = hash_pieces(stage, pieces, workers=workers, progress=progress)
    files = []
    for path, size in listing.items():
        parts = []
        for i, a, b in cuts.get(path, []):
            name = f"{path}{PART_SUFFIX}{i:03d}"
            _copy_range(stage / path, stage / name, a, b)
            parts.append(Part(name, b - a, digests[Piece(path, a, b)]))
        if parts:
            (stage / path).unlink()
        files.append(MediaFile(path, size, digests[Piece(path, 0, size)], tuple(parts)))
    return tuple(files)


def _bootstrap_wheel(path: str) -> bool:
    """installer/bootstrap.py uses these few-MB wheels in place, so they are never split."""
    return any(path.startswith(f"wheels/{name}-") for name in ("appliance", "cryptography", "cffi"))


def _copy_range(src: Path, dst: Path, start: int, end: int) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        pos = start
        while pos < end:
            n = os.copy_file_range(fin.fileno(), fout.fileno(), end - pos, offset_src=pos)
            if n == 0:
                raise MediaError(f"{src} shrank while it was being split")
            pos += n
        os.fsync(fout.fileno())
