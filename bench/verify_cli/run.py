"""`appliance bundle verify` and `appliance media verify` through the CLI against the hashing limit, at 2 GiB.

The limit is a bare process that does nothing but hash the same files with the same hasher (`hash_pieces`)
and the same number of threads: the interpreter's own start plus the hashing, which is what a verifying
command cannot go below. The bundle is 4 files of random data signed with an ECDSA P-256 key; the media is
the same files (hard links: one page cache) under a signed manifest, with its own release key. Files stay in
the page cache, so this measures hashing and start-up, not the disk. Each round runs all four commands one
after the other (the machine is shared: interleaving spreads its noise over all of them); the ratios are the
medians of each round's limit / command, for wall and for CPU time (user + system).
Writes bench/results/verify_cli.txt.

    .venv/bin/python bench/verify_cli/run.py [--gib 2] [--rounds 9] [--work DIR]

`--work DIR` keeps the bundle and media in DIR and reuses them on the next run (writing 2 GiB is slow).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from appliance.media.manifest import MANIFEST, RELEASE_KEY
from appliance.signing import keys

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from bench.bundle_verify.run import make_bundle  # noqa: E402
from bench.cli_startup.run import timed  # noqa: E402
from tests.media.conftest import sign_media  # noqa: E402  (the same hand-made media as the tests)

BARE = (
    "import os, sys\n"
    "from pathlib import Path\n"
    "from appliance.signing.hashing import Piece, hash_pieces\n"
    "root = Path(sys.argv[1])\n"
    "files = [(p, (root / p).stat().st_size) for p in sys.argv[2:]]\n"
    "hash_pieces(root, [Piece(p, 0, s) for p, s in files], workers=os.cpu_count() or 1)\n"
)


def make_media(work: Path, bundle: Path) -> Path:
    """Media whose stored files are the bundle's data files, under a manifest signed by a release key."""
    media = work / "media"
    (media / "data").mkdir(parents=True)
    for src in sorted(bundle.glob("*.data")):
        os.link(src, media / "data" / src.name)
    key = keys.generate_private_key("ed25519")
    sign_media(media, key)
    keys.write_public_key(key.public_key(), work / "release.pub")
    return media


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-verify-cli-"))
    try:
        work.mkdir(exist_ok=True)
        if not (work / "bundle" / "model.sig").exists():
            key = keys.generate_private_key("ecdsa-p256")
            keys.write_public_key(key.public_key(), work / "bundle.pub")
            make_bundle(work, args.gib, key)
        bundle = work / "bundle"
        media = work / "media" if (work / "media" / MANIFEST).exists() else make_media(work, bundle)
        appliance = str(Path(sys.executable).with_name("appliance"))
        env = {**os.environ, "APPLIANCE_DATA_DIR": str(work / "var")}
        bundle_files = sorted(p.name for p in bundle.iterdir() if p.name != "model.sig")
        media_files = [RELEASE_KEY, *(f"data/{p.name}" for p in sorted((media / "data").iterdir()))]
        commands = {
            "bundle verify (CLI)": [appliance, "bundle", "verify", str(bundle), "--trust", str(work / "bundle.pub")],
            "bundle: hashing limit": [sys.executable, "-c", BARE, str(bundle), *bundle_files],
            "media verify (CLI)": [
                appliance,
                "media",
                "verify",
                str(media),
                "--trust-release-key",
                str(work / "release.pub"),
            ],
            "media: hashing limit": [sys.executable, "-c", BARE, str(media), *media_files],
        }
        for argv in commands.values():  # warm the page cache, and check that every command succeeds
            subprocess.run(argv, env=env, check=True, capture_output=True)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        loads = []
        for _ in range(args.rounds):
            for name, argv in commands.items():
                runs[name].append(timed(argv, env))
            loads.append(os.getloadavg()[0])
        total = sum(f.stat().st_size for f in bundle.iterdir())
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"{total / 2**30:.2f} GiB, {os.cpu_count()} cores, {args.rounds} interleaved rounds, "
        f"1-min load {min(loads):.1f}-{max(loads):.1f} (median {statistics.median(loads):.1f})"
    ]
    for name, got in runs.items():
        wall, cpu = statistics.median(w for w, _ in got), statistics.median(c for _, c in got)
        lines.append(f"{name:24s} {wall * 1000:6.0f} ms wall {cpu * 1000:6.0f} ms CPU (medians)")
    for what in ("bundle", "media"):
        cli, bare = runs[f"{what} verify (CLI)"], runs[f"{what}: hashing limit"]
        wall = statistics.median(b[0] / c[0] for c, b in zip(cli, bare))
        cpu = statistics.median(b[1] / c[1] for c, b in zip(cli, bare))
        lines.append(f"{what} verify vs hashing limit: {wall:.2f}x wall, {cpu:.2f}x CPU (goal >= 0.9x)")
    text = "\n".join(lines)
    print(text)
    (REPO / "bench" / "results" / "verify_cli.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
