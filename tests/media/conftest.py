"""Media built once per session from this checkout (demo bundle, the running Python only, pip's cache),
and the air gap the installer runs in: `unshare -n -m`, loopback up, the media bind-mounted read-only."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO, clean_env, run_cli
from tests.helm.conftest import HELM

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
SPLIT = "16MiB"  # small enough to split the demo model's data file and the largest wheels


@pytest.fixture(scope="session")
def release(tmp_path_factory) -> tuple[Path, Path]:
    """The release key pair: (private key file, public key file)."""
    d = tmp_path_factory.mktemp("release")
    run_cli("bundle", "keygen", "--out", str(d / "release.key"), offline=False, check=True)
    return d / "release.key", d / "release.key.pub"


@pytest.fixture(scope="session")
def bundle(demo_bundle, tmp_path_factory) -> Path:
    """A private copy of the demo bundle: the shared cache may be rebuilt by another test session."""
    return Path(shutil.copytree(demo_bundle, tmp_path_factory.mktemp("bundle") / demo_bundle.name))


@pytest.fixture(scope="session")
def demo_pub(demo_key, tmp_path_factory) -> Path:
    from appliance.signing import keys

    path = tmp_path_factory.mktemp("publisher") / "demo.pub"
    keys.write_public_key(demo_key.public_key(), path)
    return path


def build(out: Path, repo: Path, release: Path, bundle: Path, pub: Path, *extra: str) -> Path:
    """`appliance media build` as an operator runs it on the connected machine (pip's cache reused), with the
    pinned helm that packages the chart."""
    if HELM is None:
        pytest.skip("no helm binary to package the chart: run `bash scripts/helm.sh` (CI setup does)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from appliance.cli import main; main()",
            "media",
            "build",
            "--out",
            str(out),
            "--release-key",
            str(release),
            "--python",
            PY,
            "--split-size",
            SPLIT,
            "--bundle",
            str(bundle),
            "--bundle-key",
            str(pub),
            "--helm",
            HELM,
            *extra,
        ],
        env={**env, "PYTHONPATH": str(repo)},
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def oci_archive(path: Path) -> Path:
    """A small OCI image layout archive (one empty config blob, one manifest): enough for the media to list and
    verify; building a real image is `make image`'s (minutes), not these tests'."""

    def blob(data: bytes) -> tuple[str, bytes]:
        import hashlib

        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    config = blob(b"{}")
    manifest = blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config[0], "size": 2},
                "layers": [],
            }
        ).encode()
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest[0], "size": len(manifest[1])}
        ],
    }
    files = {
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": json.dumps(index).encode(),
        **{f"blobs/sha256/{d.split(':')[1]}": data for d, data in (config, manifest)},
    }
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    path.with_name(path.name.removesuffix(".oci.tar") + ".sbom.cdx.json").write_text('{"bomFormat": "CycloneDX"}')
    return path


@pytest.fixture(scope="session")
def oci_image(tmp_path_factory) -> Path:
    return oci_archive(tmp_path_factory.mktemp("image") / "appliance-0.1.0.oci.tar")


@pytest.fixture(scope="session")
def media_v1(tmp_path_factory, release, bundle, demo_pub, oci_image) -> Path:
    out = tmp_path_factory.mktemp("m1") / "media"
    return build(out, REPO, release[0], bundle, demo_pub, "--image", str(oci_image))


@pytest.fixture(scope="session")
def media_v2(tmp_path_factory, release, bundle, demo_pub, media_v1) -> Path:
    """The same checkout as version 0.2.0, split differently: its parts do not fit media v1."""
    repo = tmp_path_factory.mktemp("checkout-v2")
    for name in ("appliance", "installer", "policies", "helm", "README.md"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copyfile)(
            REPO / name,
            repo / name,
            **({"ignore": shutil.ignore_patterns("__pycache__")} if (REPO / name).is_dir() else {}),
        )
    text = (REPO / "pyproject.toml").read_text().replace('version = "0.1.0"', 'version = "0.2.0"', 1)
    (repo / "pyproject.toml").write_text(text)
    out = tmp_path_factory.mktemp("m2") / "media"
    return build(
        out,
        repo,
        release[0],
        bundle,
        demo_pub,
        "--split-size",
        "24MiB",
        "--min-upgrade-from",
        "0.1.0",
        "--wheelhouse",
        str(media_v1 / "wheels"),
    )


AIRGAP = 'ip link set lo up && mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && shift 2 && exec "$@"'


def airgapped(
    media: Path, mnt: Path, *args: str, tmpfs: Path | None = None, timeout: float = 600, background: bool = False
):
    """`install.sh ARGS` from `media` bind-mounted read-only at `mnt`, with no network and no pip config;
    with `tmpfs`, a 100 MiB tmpfs is mounted there first (the too-little-space case)."""
    mnt.mkdir(parents=True, exist_ok=True)
    script = AIRGAP if tmpfs is None else f'mount -t tmpfs -o size=100m tmpfs "{tmpfs}" && {AIRGAP}'
    argv = ["unshare", "-n", "-m", "bash", "-c", script, "airgap", str(media), str(mnt), str(mnt / "install.sh"), *args]
    env = clean_env()
    if background:
        return subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def copy_media(src: Path, dest: Path) -> Path:
    """A hard-linked copy (instant); `detach` a file before changing it so the original stays intact."""
    subprocess.run(["cp", "-al", str(src), str(dest)], check=True)
    return dest


def sign_media(root: Path, key) -> None:
    """Media made by hand: every file under `root` (and the release key's public half, as real media carry
    it) listed in a MANIFEST.json signed with `key`; nothing to install, for checking verification alone."""
    from appliance.media.manifest import MANIFEST, RELEASE_KEY, Manifest, MediaFile, write_signature
    from appliance.signing import keys
    from appliance.signing.hashing import Piece, hash_pieces

    keys.write_public_key(key.public_key(), root / RELEASE_KEY)
    sizes = {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}
    digests = hash_pieces(root, [Piece(p, 0, s) for p, s in sizes.items()], workers=os.cpu_count() or 1)
    files = tuple(MediaFile(p.path, p.end, d) for p, d in sorted(digests.items()))
    manifest = Manifest(
        version="1.0.0", min_upgrade_from="1.0.0", pythons=(PY,), gpu=False, split_size=4 << 30, files=files
    )
    (root / MANIFEST).write_bytes(manifest.to_bytes())
    write_signature(root, manifest.to_bytes(), key)


def detach(path: Path) -> Path:
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    return path


@pytest.fixture
def net():
    """Network namespaces on a bridge (tests/cluster/netns.py), torn down after the test (root only)."""
    from tests.cluster.netns import Net

    net = Net().up()
    try:
        yield net
    finally:
        net.down()
