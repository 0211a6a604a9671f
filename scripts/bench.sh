#!/usr/bin/env bash
# Every benchmark, one after another (each prints ratios against its peer and writes bench/results/).
set -euo pipefail
cd "$(dirname "$0")/.."
for b in bench/*/run.py; do
  echo "== $b"
  .venv/bin/python "$b"
done
