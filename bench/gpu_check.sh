#!/usr/bin/env bash
# GPU check of the engine: bench/engine_scale at gpt-oss-20b's full depth (24 layers, random weights, cuda-int4)
# on the CUDA EP. The checkpoint is generated and converted on the GPU host (nothing is copied in: 24 layers do not
# fit the 64 MiB a device call carries), then every bench part runs, each in its own process.
#
#   bash bench/gpu_check.sh [all|model|bench]
#
# `all` (the default) does both in one call. The build may not fit one call. Measured here (2 cores): the
# builder takes 104 s at 2 layers plus ~22 s per further layer, peaking at ~13 GB + 1 GB per layer; the checkpoint
# takes ~50 s per layer per worker (8 workers on 16 cores). So 24 layers may take ~10 minutes on the 16-core
# host. In that case run `model` and then `bench` as two calls back to back: the device keeps var/ (ignored)
# between calls while it stays warm.
#
# Needs: this repository and a Python with the project's [build] extra and onnxruntime-gpu==1.31.1 instead of
# onnxruntime (same module name); onnxruntime-genai-cuda for the og column and a CUDA build of torch for the
# transformers column (each reported as skipped when missing). No network is used. The lent H200's image (as
# read 2026-11) has torch 2.11+cu130 and transformers, but only the CPU onnxruntime 1.30.0 and no
# onnxruntime-genai, and the onnxruntime-gpu wheel is larger than one call's 64 MiB carry. So it has to be
# carried in pieces over warm back-to-back calls, or the site's GPU host used. The script stops with one
# line if the CUDA EP is missing.
# Output: $OUT/engine_scale_gpu.txt (or bench/results/ when OUT is unset) plus the parts' JSON and a log.
#
# Test it on CPU: GPU_CHECK_DEVICE=cpu GPU_CHECK_LAYERS=2 GPU_CHECK_PROFILE=cpu-int4 \
#   GPU_CHECK_PARTS="bandwidth ours report" GPU_CHECK_CONTEXTS=512,4096 bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PHASE=${1:-all}
case "$PHASE" in
  all) build_limit=300 bench_limit=470 ;;
  model) build_limit=570 bench_limit=0 ;;
  bench) build_limit=0 bench_limit=570 ;;
  *) echo "error: unknown phase '$PHASE' (all, model or bench)" >&2; exit 2 ;;
esac
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
if [ "$build_limit" -gt 0 ]; then  # the model first, timed on its own
  timeout "$build_limit" "$PY" -m bench.engine_scale.model --layers "$LAYERS" --profile "$PROFILE" 2>&1 | tail -3
  echo "model ready after $(( $(date +%s) - start )) s" | tee -a "$OUTDIR/engine_scale/timing.txt"
fi
if [ "$bench_limit" -gt 0 ]; then
  # shellcheck disable=SC2086  # GPU_CHECK_PARTS is a list of part names
  timeout $(( bench_limit - ($(date +%s) - start) )) "$PY" -m bench.engine_scale.run ${GPU_CHECK_PARTS:-all} \
    --layers "$LAYERS" --profile "$PROFILE" --device "$DEVICE" --contexts "$CONTEXTS" \
    --og-contexts "${GPU_CHECK_OG_CONTEXTS:-512,4096}" --stall-prompt "${GPU_CHECK_STALL_PROMPT:-16384}" \
    --chunk "${GPU_CHECK_CHUNK:-1024}" --out "$OUTDIR/engine_scale" --results "$OUTDIR/engine_scale_gpu.txt" 2>&1 \
    | tee "$OUTDIR/engine_scale/log.txt"
fi
echo "total $(( $(date +%s) - start )) s" | tee -a "$OUTDIR/engine_scale/timing.txt"
