#!/usr/bin/env bash
# GPU check of the engine: bench/engine_scale at gpt-oss-20b's full depth (24 layers, random weights, cuda-int4)
# on the CUDA EP, end to end in one call (~8 minutes on one H200 + 16 cores): the checkpoint is generated and
# converted here (nothing is copied in), then every bench part runs, each in its own process.
#
# Needs: this repository and a Python with the project's [build] extra and onnxruntime-gpu==1.31.1 instead of
# onnxruntime (same module name); onnxruntime-genai-cuda for the og column and a CUDA build of torch for the
# transformers column (each reported as skipped when missing). No network is used.
# Output: $OUT/engine_scale_gpu.txt (or bench/results/ when OUT is unset) plus the parts' JSON and a log.
#
# Test it on CPU: GPU_CHECK_DEVICE=cpu GPU_CHECK_LAYERS=2 GPU_CHECK_PROFILE=cpu-int4 \
#   GPU_CHECK_PARTS="bandwidth ours report" GPU_CHECK_CONTEXTS=512,4096 bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DEVICE=${GPU_CHECK_DEVICE:-cuda}
LAYERS=${GPU_CHECK_LAYERS:-24}
PROFILE=${GPU_CHECK_PROFILE:-cuda-int4}
CONTEXTS=${GPU_CHECK_CONTEXTS:-512,4096,16384}
OUTDIR=${OUT:-bench/results}
mkdir -p "$OUTDIR/engine_scale"
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv,noheader | tee "$OUTDIR/gpu.txt"
  if ! "$PY" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())'; then
    echo "error: onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu==1.31.1)" >&2
    exit 1
  fi
fi
export PYTHONPATH=$PWD
start=$(date +%s)
# The model first, timed on its own (generated on this machine: 24 layers do not fit the 64 MiB carried).
timeout 300 "$PY" -m bench.engine_scale.model --layers "$LAYERS" --profile "$PROFILE" 2>&1 | tail -3
echo "model ready after $(( $(date +%s) - start )) s" | tee "$OUTDIR/engine_scale/timing.txt"
# shellcheck disable=SC2086  # GPU_CHECK_PARTS is a list of part names
timeout $(( 470 - ($(date +%s) - start) )) "$PY" -m bench.engine_scale.run ${GPU_CHECK_PARTS:-all} --layers "$LAYERS" \
  --profile "$PROFILE" --device "$DEVICE" --contexts "$CONTEXTS" --og-contexts "${GPU_CHECK_OG_CONTEXTS:-512,4096}" \
  --stall-prompt "${GPU_CHECK_STALL_PROMPT:-16384}" --chunk "${GPU_CHECK_CHUNK:-1024}" \
  --out "$OUTDIR/engine_scale" --results "$OUTDIR/engine_scale_gpu.txt" 2>&1 | tee "$OUTDIR/engine_scale/log.txt"
echo "total $(( $(date +%s) - start )) s" | tee -a "$OUTDIR/engine_scale/timing.txt"
