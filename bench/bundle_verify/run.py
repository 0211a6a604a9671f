"""Bundle verification speed: ours vs model-signing vs sha256sum vs the hashing limit, in one run.

A bundle of 4 files of random data (2 GiB by default) signed with an ECDSA P-256 key (the kind both tools
verify). Each contender runs `--repeat` times and keeps its best time (the machine is shared and noisy);
files stay in the page cache, so this measures hashing, not the disk. The limit is the number of cores
times OpenSSL's single-core SHA-256 rate on an in-memory buffer.

    .venv/bin/python bench/bundle_verify/run.py [--gib 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.bundles import BundleMetadata, sign_bundle, verify_bundle
from appliance.signing import keys


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def make_bundle(work: Path, gib: float, key: keys.PrivateKey) -> Path:
    """`work`/bundle: 4 files of random data, `gib` GiB in all, signed with `key`."""
    folder = work / "bundle"
    folder.mkdir()
    per_file = int(gib * 2**30 / 4)
    for i in range(4):
        with open(folder / f"model-{i}.onnx.data", "wb") as f:
            for _ in range(per_file // (64 << 20)):
                f.write(os.urandom(64 << 20))
            f.write(os.urandom(per_file % (64 << 20)))
    BundleMetadata(name="bench", version="1.0.0", variant="bench", precision="fp32", profile="cpu-fp32").write(folder)
    sign_bundle(folder, key, workers=os.cpu_count() or 1)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        key = keys.generate_private_key("ecdsa-p256")
        keys.write_private_key(key, work / "k.pem")
        keys.write_public_key(key.public_key(), work / "k.pub")
        folder = make_bundle(work, args.gib, key)
        total = sum(f.stat().st_size for f in folder.iterdir())
        appliance = str(Path(sys.executable).with_name("appliance"))
        env = {**os.environ, "APPLIANCE_DATA_DIR": str(work / "var")}

        def ours() -> None:
            subprocess.run(
                [appliance, "bundle", "verify", str(folder), "--trust", str(work / "k.pub")],
                check=True,
                env=env,
                capture_output=True,
            )

        def model_signing() -> None:
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import model_signing,sys; model_signing.verifying.Config()"
                    ".use_elliptic_key_verifier(public_key=sys.argv[1]).verify(sys.argv[2], sys.argv[3])",
                    str(work / "k.pub"),
                    str(folder),
                    str(folder / "model.sig"),
                ],
                check=True,
            )

        def sha256sum() -> None:
            subprocess.run(["sha256sum", *sorted(str(p) for p in folder.iterdir())], check=True, capture_output=True)

        buf = os.urandom(256 << 20)
        one_core = best(lambda: hashlib.sha256(buf).digest(), args.repeat)
        limit = total / (len(buf) / one_core * cores)

        def ours_in_process() -> None:
            verify_bundle(folder, [key.public_key()], workers=cores)

        ours()  # warm the page cache
        results = {
            "appliance bundle verify": best(ours, args.repeat),
            "verify_bundle() in-process": best(ours_in_process, args.repeat),
            "model-signing (key verify)": best(model_signing, args.repeat),
            "sha256sum": best(sha256sum, args.repeat),
        }
        lines = [
            f"bundle: {total / 2**30:.2f} GiB in 4 files, {cores} cores, best of {args.repeat}",
            f"hashing limit ({cores} x OpenSSL {len(buf) / one_core / 1e9:.2f} GB/s): {limit:.2f} s",
        ]
        for name, t in results.items():
            lines.append(f"{name:28s} {t:6.2f} s  {total / t / 1e9:5.2f} GB/s")
        o = results["appliance bundle verify"]
        ip = results["verify_bundle() in-process"]
        lines += [
            f"ratio model-signing / ours: {results['model-signing (key verify)'] / o:.2f}x (goal >= 2x)",
            f"in-process vs hashing limit: {limit / ip:.2f}x of the limit (no CLI start-up)",
            f"ratio sha256sum / ours:     {results['sha256sum'] / o:.2f}x",
            f"ours vs hashing limit:      {limit / o:.2f}x of the limit (goal >= 0.9x)",
        ]
        text = "\n".join(lines)
        print(text)
        out = Path(__file__).resolve().parents[1] / "results" / "bundle_verify.txt"
        out.write_text(text + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
