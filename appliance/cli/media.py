"""`appliance media build|verify`: offline installation media (see appliance/media)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
}
REPO = Path(__file__).resolve().parents[2]


def parse_size(text: str) -> int:
    """`3.9GiB`, `500MB`, `1048576`: binary units are powers of 1024, decimal ones of 1000."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        from appliance.media.manifest import MediaError

        raise MediaError(f"cannot read size {text!r} (examples: 3.9GiB, 500MB, 1048576)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@app.command()
def build(
    out: Annotated[Path, typer.Option("--out", help="Folder to create (the USB stick's root, or a staging folder).")],
    release_key: Annotated[Path, typer.Option("--release-key", help="Ed25519 private key that signs the media.")],
    bundle: Annotated[list[Path] | None, typer.Option("--bundle", help="Signed bundle folder (repeatable).")] = None,
    bundle_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--bundle-key",
            help="Publisher public key the bundles must verify against (repeatable); it travels on the media.",
        ),
    ] = None,
    split_size: Annotated[
        str, typer.Option(help="Files larger than this travel as parts (FAT32: < 4 GiB).")
    ] = "3.9GiB",
    python: Annotated[str, typer.Option(help="Target CPython versions, comma-separated.")] = "3.11,3.12",
    gpu: Annotated[bool, typer.Option("--gpu", help="onnxruntime-gpu plus NVIDIA's CUDA/cuDNN wheels.")] = False,
    policy_dir: Annotated[Path | None, typer.Option(help="Policy pack (default: the checkout's policies/).")] = None,
    min_upgrade_from: Annotated[
        str | None,
        typer.Option(help="Oldest installed version this media upgrades (default: MAJOR.0.0 of its own version)."),
    ] = None,
    wheelhouse: Annotated[Path | None, typer.Option(help="Reuse wheels already downloaded here.")] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option(
            "--image", help="OCI image archive for Kubernetes (`make image`: var/image/*.oci.tar; repeatable)."
        ),
    ] = None,
    helm: Annotated[
        Path | None, typer.Option(help="The helm that packages the chart (default: var/tools/helm, else PATH).")
    ] = None,
    source_date_epoch: Annotated[
        int,
        typer.Option(
            envvar="SOURCE_DATE_EPOCH", help="Timestamp recorded in the wheel and SBOM (reproducible builds)."
        ),
    ] = 0,
) -> None:
    """Build signed offline media on a connected machine."""
    from appliance.config import get_settings
    from appliance.media.build import BuildInputs, build_media
    from appliance.signing import keys

    inputs = BuildInputs(
        repo=REPO,
        release_key=keys.load_private_key(release_key),
        bundles=tuple(bundle or ()),
        bundle_keys=tuple(bundle_key or ()),
        split_size=parse_size(split_size),
        pythons=tuple(p.strip() for p in python.split(",") if p.strip()),
        gpu=gpu,
        policy_dir=policy_dir,
        min_upgrade_from=min_upgrade_from,
        source_date_epoch=source_date_epoch,
        wheelhouse=wheelhouse,
        images=tuple(image or ()),
        helm=helm,
    )
    manifest = build_media(out, inputs, workers=get_settings().hash_workers)
    total = sum(f.size for f in manifest.files)
    parts = sum(len(f.parts) for f in manifest.files)
    typer.echo(
        f"built media {manifest.version} in {out}: {len(manifest.files)} files, {parts} parts, "
        f"{total / 2**20:.1f} MiB, release key {keys.key_hint(inputs.release_key.public_key())}"
    )


@app.command()
def verify(
    media: Annotated[Path, typer.Argument(help="Media folder (the USB stick's mount point).")],
    trust_release_key: Annotated[
        Path | None,
        typer.Option(
            "--trust-release-key",
            help="Release public key to check against (default: the one the media carries, fingerprint shown).",
        ),
    ] = None,
) -> None:
    """Check the signature, then every file and part by size and SHA-256. Writes nothing."""
    from appliance.cli.progress import byte_progress
    from appliance.config_core import core_settings
    from appliance.media.verify import files_on, media_key, stored_bytes, verify_media
    from appliance.signing.hashing import Ahead

    workers, present = core_settings().hash_workers, files_on(media)
    with (  # hashing starts first; the key library loads and the signature is checked while it runs
        byte_progress("verifying", sum(present.values())) as advance,
        Ahead(media, present, workers=workers, progress=advance) as ahead,
    ):
        from appliance.signing import keys

        pinned = trust_release_key is not None
        key = keys.load_public_key(trust_release_key) if trust_release_key is not None else media_key(media)
        result = verify_media(media, [key], workers=workers, progress=advance, ahead=ahead)
    total = stored_bytes(result.manifest)
    typer.echo(
        f"OK media {result.manifest.version}: {len(result.manifest.files)} files, "
        f"{total / 2**20:.1f} MiB, manifest {result.manifest_sha256[:16]}"
    )
    typer.echo(
        f"release key fingerprint {result.key_hint}"
        + ("" if pinned else " (the media's own key: compare it with the one your release team published)")
    )
