"""Offline media: build time and size, `media verify` against the hashing limit, install to first answer.

In one run, on this machine:
- `appliance media build` of this checkout with the demo bundle for the running Python (pip's cache warm:
  the first run downloads); with `--gpu` also the GPU media (onnxruntime-gpu and NVIDIA's CUDA/cuDNN wheels,
  several GB to download);
- `appliance media verify` beside the peer that bounds it: every stored file hashed in process by
  `hash_pieces` with the same number of threads (no signature, no listing, no CLI start-up), best of N;
- `install.sh` inside `unshare -n -m` from the media mounted read-only, to the first audited answer (this
  includes starting Ray and Serve, and copying the demo bundle into the model store).
Writes bench/results/media.txt.

    .venv/bin/python bench/media/run.py [--gpu] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.media.manifest import MANIFEST, Manifest
from appliance.signing.hashing import Piece, hash_pieces

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from bench.bundle_verify.run import best  # noqa: E402
from tests.conftest import DEMO_CACHE, DEMO_KEY, clean_env  # noqa: E402  (the demo bundle the tests use)
from tests.media.conftest import airgapped  # noqa: E402  (the same air gap as the tests)


def appliance(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-c", "from appliance.cli import main; main()", *args],
        cwd=REPO,
        env=env or {**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"appliance {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return proc


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from appliance.demo.model import ensure_demo_bundle
    from appliance.signing import keys

    work = Path(tempfile.mkdtemp(prefix="bench-media-"))
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    lines = []
    try:
        demo_key = keys.load_private_key(DEMO_KEY)
        # a private copy: another session may rebuild the shared cache meanwhile
        bundle = Path(shutil.copytree(ensure_demo_bundle(DEMO_CACHE, demo_key), work / "bundle"))
        keys.write_public_key(demo_key.public_key(), work / "demo.pub")
        appliance("bundle", "keygen", "--out", str(work / "release.key"))
        common = [
            "--release-key",
            str(work / "release.key"),
            "--python",
            py,
            "--bundle",
            str(bundle),
            "--bundle-key",
            str(work / "demo.pub"),
        ]
        t = time.perf_counter()
        appliance("media", "build", "--out", str(work / "cpu"), *common)
        lines.append(
            f"media build (CPU, Python {py}, demo bundle): {time.perf_counter() - t:6.1f} s, "
            f"{size(work / 'cpu') / 2**20:7.1f} MiB"
        )
        if args.gpu:
            t = time.perf_counter()
            appliance("media", "build", "--out", str(work / "gpu"), "--gpu", *common)
            lines.append(
                f"media build (GPU, Python {py}, demo bundle): {time.perf_counter() - t:6.1f} s, "
                f"{size(work / 'gpu') / 2**20:7.1f} MiB"
            )
        media = work / "cpu"
        manifest = Manifest.parse((media / MANIFEST).read_bytes())
        stored = [Piece(path, 0, s) for f in manifest.files for path, s, _ in f.stored()]
        total = sum(p.end for p in stored)
        cores = os.cpu_count() or 1
        verify = best(
            lambda: appliance("media", "verify", str(media), "--trust-release-key", str(work / "release.key.pub")),
            args.repeat,
        )
        limit = best(lambda: hash_pieces(media, stored, workers=cores), args.repeat)
        lines += [
            f"media verify: {verify:.2f} s for {total / 2**20:.1f} MiB; hashing limit (hash_pieces, "
            f"{cores} threads, in process): {limit:.2f} s",
            f"verify vs hashing limit: {limit / verify:.2f}x of the limit (goal >= 0.9x)",
        ]
        mnt, prefix = work / "usb", work / "opt"
        mnt.mkdir()
        t = time.perf_counter()
        proc = airgapped(
            media,
            mnt,
            "--prefix",
            str(prefix),
            "--no-systemd",
            "--yes",
            "--port",
            "8977",
            "--trust-release-key",
            str(work / "release.key.pub"),
        )
        assert proc.returncode == 0, proc.stderr
        install = time.perf_counter() - t
        subprocess.run(
            [str(media / "install.sh"), "--prefix", str(prefix), "--stop"], env=clean_env(), capture_output=True
        )
        lines.append(
            f"install from media to the first audited answer (no network): {install:.1f} s "
            f"(goal <= 300 s; includes Ray start and the bundle copy)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    (REPO / "bench" / "results" / "media.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
