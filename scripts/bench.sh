#!/usr/bin/env bash
# Every benchmark, one after another (each prints ratios against its peer and writes bench/results/).
# The peers (presidio, spaCy) come from the bench extra, installed here and nowhere else.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pip install -q -e '.[cpu,build,dev,bench]'
for b in bench/*/run.py; do
  [ "$b" = bench/engine_scale/run.py ] && continue  # its own command: make bench-engine-scale
  echo "== $b"
  .venv/bin/python "$b"
done
