#!/usr/bin/env bash
# GPU check of the engine, sized for about 8 minutes on one H200.
#
# Needs: this repository with its .venv (or any Python with the project installed and the [build] extra),
# onnxruntime-gpu==1.31.1 INSTEAD of onnxruntime (same module name: `pip uninstall -y onnxruntime &&
# pip install onnxruntime-gpu==1.31.1`), CUDA 12 + cuDNN 9 libraries, ~40 GB of RAM, ~10 GB of disk.
# The transformers column needs a CUDA build of torch; with the CPU build it is reported as skipped.
# No network is used. Output: bench/results/gpu_check-<date>-<gpu>.txt
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' /' '__')
if ! "$PY" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())'; then
  echo "error: onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu==1.31.1)" >&2
  exit 1
fi
mkdir -p bench/results
out="bench/results/gpu_check-$(date +%Y-%m-%d)-${gpu}.txt"
timeout 470 "$PY" bench/engine/gpu_check.py "$out"
echo "written: $out"
