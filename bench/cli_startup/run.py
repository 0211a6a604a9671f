"""CLI start-up: median wall and CPU time (user + sys) of `appliance` commands that do almost nothing, beside
the bare interpreter, over N interleaved runs (hyperfine-like; the machine is shared, so CPU time is the
steadier figure). `bundle verify` runs on a 1 MB bundle: its time is start-up, not hashing.
Writes bench/results/cli_startup.txt.

    .venv/bin/python bench/cli_startup/run.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.bundles import BundleMetadata, sign_bundle
from appliance.signing import keys

RESULTS = Path(__file__).resolve().parents[1] / "results" / "cli_startup.txt"


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of `argv`."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    appliance = str(Path(sys.executable).with_name("appliance"))
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        work = Path(tmp)
        (work / "bundle").mkdir()
        (work / "bundle" / "model.onnx.data").write_bytes(os.urandom(1 << 20))
        BundleMetadata(name="b", version="1.0.0", variant="b", precision="fp32", profile="cpu-fp32").write(
            work / "bundle"
        )
        key = keys.generate_private_key("ed25519")
        keys.write_public_key(key.public_key(), work / "k.pub")
        sign_bundle(work / "bundle", key)
        env = {**os.environ, "APPLIANCE_DATA_DIR": str(work / "var")}
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "appliance --help": [appliance, "--help"],
            "appliance --version": [appliance, "--version"],
            "appliance bundle --help": [appliance, "bundle", "--help"],
            "appliance bundle verify (1 MB)": [
                appliance,
                "bundle",
                "verify",
                str(work / "bundle"),
                "--trust",
                str(work / "k.pub"),
            ],
        }
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        loads = []
        for _ in range(args.repeat):
            for name, argv in commands.items():
                runs[name].append(timed(argv, env))
            loads.append(os.getloadavg()[0])
    lines = [
        f"CLI start-up, median of {args.repeat} interleaved runs, {os.cpu_count()} cores, 1-min load {min(loads):.1f}-{max(loads):.1f}"
    ]
    for name, got in runs.items():
        wall, cpu = statistics.median(w for w, _ in got), statistics.median(c for _, c in got)
        lines.append(f"{name:32s} {wall * 1000:6.0f} ms wall {cpu * 1000:6.0f} ms CPU")
    print("\n".join(lines))
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
